// ssmx/io/pickle.h — a pickle reader that only ever builds data.
//
// Python's pickle format is a small stack-machine program; a normal unpickler runs it and calls whatever global
// functions it names, which is why loading an untrusted .pth with Python can execute code. This virtual machine
// reads protocols 0 to 5 but never calls anything: it builds plain values (None, bool, int, float, str, bytes,
// tuple, list, dict, set) and, for a short allowlist of globals that torch checkpoints use, interprets the call
// itself (OrderedDict → dict, torch._utils._rebuild_tensor_v2 → a tensor reference, _rebuild_parameter → its
// tensor, argparse.Namespace / numpy scalars and arrays → opaque objects that keep their arguments and state).
// A pickle that names any other global is rejected with an error that names it. Persistent ids (how torch refers
// to storages) are kept as values for the caller to resolve.
//
// Robustness: every length is checked against the remaining input, the value count, stack, mark depth and memo
// size are capped, the machine runs each opcode once (no loops, no recursion), and values live in an arena owned
// by the result, so self-referencing pickles neither leak nor recurse. Out-of-band buffers (protocol 5
// NEXT_BUFFER), the extension registry (EXT1/2/4) and integers wider than 64 bits (kept as an opaque BigInt) are
// not supported as numbers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ssmx::pickle {

enum class Kind : uint8_t {
  None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Set, FrozenSet,
  Global,        // a reference to module.name (allowlisted)
  Object,        // an opaque object: items = {class (a Global), args (a Tuple), state or nullptr}
  PersistentId,  // items = {pid}
  Tensor         // integer = index into Unpickled::tensors
};

struct Value;

struct DictItem {
  Value* key;
  Value* value;
};

struct Value {
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;      // Int; Tensor: index into Unpickled::tensors; Global: internal action code
  double number = 0.0;      // Float
  std::string text;         // Str (UTF-8), Bytes, BigInt (decimal or little-endian bytes), Global: module
  std::string name;         // Global: name
  std::vector<Value*> items;     // Tuple, List, Set, FrozenSet, Object, PersistentId
  std::vector<DictItem> dict;    // Dict, in insertion order

  // Dict lookup by string key; the last matching item wins (as a Python dict built in that order would).
  const Value* get(std::string_view key) const;
  // "module.name" for a Global, the class's for an Object, "" otherwise.
  std::string qualified_name() const;
};

// A call of torch._utils._rebuild_tensor_v2 (storage, storage_offset, size, stride, ...), unresolved.
struct TensorRef {
  const Value* storage = nullptr;  // the first argument, as pickled (normally a PersistentId)
  int64_t offset = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
};

class Unpickled {
 public:
  const Value* root = nullptr;
  std::vector<TensorRef> tensors;
  // Owns every Value (addresses are stable).
  std::unique_ptr<std::deque<Value>> arena = std::make_unique<std::deque<Value>>();
};

struct Limits {
  size_t max_values = size_t(1) << 22;  // objects created + elements copied into new containers
  size_t max_stack = size_t(1) << 20;   // stack entries
  size_t max_marks = 10000;             // open MARKs (nesting of tuples/lists/dicts being built)
  size_t max_memo = size_t(1) << 22;    // memo entries
  size_t max_rank = 64;                 // tensor dimensions
};

// Runs the pickle program in `data` (up to its STOP opcode). Errors are ssmx::Error(where, "<label> at byte N: reason").
Unpickled unpickle(const uint8_t* data, size_t size, const std::string& where, const std::string& label = "pickle",
                   const Limits& limits = Limits());

// Short type description: "int", "str", "dict", "list(3)", "argparse.Namespace", "tensor", ...
std::string describe(const Value& v);

// "a list(3)", "an int", "None": a description with its article, for messages.
std::string with_article(const std::string& desc);

// A string safe to embed in a one-line message: control bytes escaped, shortened beyond 200 bytes.
std::string printable(std::string_view s);

}  // namespace ssmx::pickle

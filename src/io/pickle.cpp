#include "io/pickle.h"

#include <charconv>
#include <cstring>
#include <unordered_map>

#include "core/error.h"

namespace ssmx::pickle {

namespace {

// What our own code does when an allowlisted global is called (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST).
enum class Action : int64_t {
  Opaque,         // keep an Object{class, args, state}
  Dict,           // collections.OrderedDict → dict
  DefaultDict,    // collections.defaultdict → dict (the factory is ignored)
  RebuildTensor,  // torch._utils._rebuild_tensor_v2 → Tensor
  RebuildParam,   // torch._utils._rebuild_parameter[_with_state] → its first argument
  Set,            // builtins.set
  FrozenSet,      // builtins.frozenset
  Bytes,          // builtins.bytes / bytearray
  CodecsEncode,   // _codecs.encode(str, 'latin1') — how protocol 2 writes bytes
  Size,           // torch.Size → tuple
};

struct Allowed {
  const char* module;
  const char* name;
  Action action;
};

// The complete list of globals a pickle may name. Nothing here is ever imported or called.
constexpr Allowed kAllowed[] = {
    {"collections", "OrderedDict", Action::Dict},
    {"collections", "defaultdict", Action::DefaultDict},
    {"torch._utils", "_rebuild_tensor_v2", Action::RebuildTensor},
    {"torch._utils", "_rebuild_parameter", Action::RebuildParam},
    {"torch._utils", "_rebuild_parameter_with_state", Action::RebuildParam},
    {"torch", "DoubleStorage", Action::Opaque},
    {"torch", "FloatStorage", Action::Opaque},
    {"torch", "HalfStorage", Action::Opaque},
    {"torch", "BFloat16Storage", Action::Opaque},
    {"torch", "LongStorage", Action::Opaque},
    {"torch", "IntStorage", Action::Opaque},
    {"torch", "ShortStorage", Action::Opaque},
    {"torch", "CharStorage", Action::Opaque},
    {"torch", "ByteStorage", Action::Opaque},
    {"torch", "BoolStorage", Action::Opaque},
    {"torch", "ComplexFloatStorage", Action::Opaque},
    {"torch", "ComplexDoubleStorage", Action::Opaque},
    {"torch", "UntypedStorage", Action::Opaque},
    {"torch", "Size", Action::Size},
    {"torch", "device", Action::Opaque},
    {"torch", "float32", Action::Opaque},
    {"torch", "float16", Action::Opaque},
    {"torch", "bfloat16", Action::Opaque},
    {"torch", "float64", Action::Opaque},
    {"torch", "int64", Action::Opaque},
    {"torch", "int32", Action::Opaque},
    {"torch", "int16", Action::Opaque},
    {"torch", "int8", Action::Opaque},
    {"torch", "uint8", Action::Opaque},
    {"torch", "bool", Action::Opaque},
    {"argparse", "Namespace", Action::Opaque},
    {"numpy.core.multiarray", "scalar", Action::Opaque},
    {"numpy.core.multiarray", "_reconstruct", Action::Opaque},
    {"numpy._core.multiarray", "scalar", Action::Opaque},
    {"numpy._core.multiarray", "_reconstruct", Action::Opaque},
    {"numpy", "dtype", Action::Opaque},
    {"numpy", "ndarray", Action::Opaque},
    {"_codecs", "encode", Action::CodecsEncode},
    {"builtins", "set", Action::Set},
    {"builtins", "frozenset", Action::FrozenSet},
    {"builtins", "bytes", Action::Bytes},
    {"builtins", "bytearray", Action::Bytes},
    {"builtins", "slice", Action::Opaque},
    {"builtins", "list", Action::Opaque},  // only as a defaultdict factory
    {"builtins", "dict", Action::Opaque},
    {"builtins", "int", Action::Opaque},
    {"builtins", "float", Action::Opaque},
};

bool find_allowed(const std::string& module, const std::string& name, Action* action) {
  for (const Allowed& a : kAllowed)
    if (module == a.module && name == a.name) {
      *action = a.action;
      return true;
    }
  return false;
}

// Strict UTF-8 check; encoded surrogates are accepted because Python writes strings with 'surrogatepass'.
bool valid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07;
    else return false;
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) return false;
    i += len;
  }
  return true;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xc0 | cp >> 6);
    out += char(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += char(0xe0 | cp >> 12);
    out += char(0x80 | (cp >> 6 & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  } else {
    out += char(0xf0 | cp >> 18);
    out += char(0x80 | (cp >> 12 & 0x3f));
    out += char(0x80 | (cp >> 6 & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  }
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string a_desc(const Value& v) { return with_article(describe(v)); }

class Machine {
 public:
  Machine(const uint8_t* data, size_t size, const std::string& where, const std::string& label, const Limits& limits)
      : d_(data), n_(size), where_(where), label_(label), lim_(limits) {}

  Unpickled run();

 private:
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;  // where the current opcode started (for messages)
  const std::string& where_;
  const std::string& label_;
  const Limits& lim_;
  Unpickled out_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
  size_t work_ = 0;
  size_t bytes_copied_ = 0;

  [[noreturn]] void fail(const std::string& reason) const {
    throw Error(where_, label_ + " at byte " + std::to_string(op_pos_) + ": " + reason);
  }

  // ---- input ----
  void need(size_t k) {
    if (n_ - pos_ < k) fail("pickle is truncated (an opcode needs " + std::to_string(k) + " more bytes, " +
                            std::to_string(n_ - pos_) + " left)");
  }
  uint8_t u8() {
    need(1);
    return d_[pos_++];
  }
  uint64_t le(size_t bytes) {
    need(bytes);
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) v |= uint64_t(d_[pos_ + i]) << (8 * i);
    pos_ += bytes;
    return v;
  }
  std::string_view take(uint64_t len) {
    if (len > n_ - pos_)
      fail("pickle is truncated (a length of " + std::to_string(len) + " exceeds the " + std::to_string(n_ - pos_) + " bytes left)");
    std::string_view s(reinterpret_cast<const char*>(d_ + pos_), size_t(len));
    pos_ += size_t(len);
    return s;
  }
  // A '\n'-terminated line (protocol 0 arguments), without the newline.
  std::string_view line() {
    const void* nl = n_ > pos_ ? std::memchr(d_ + pos_, '\n', n_ - pos_) : nullptr;
    if (!nl) fail("pickle is truncated (missing end of line)");
    size_t len = size_t(static_cast<const uint8_t*>(nl) - (d_ + pos_));
    std::string_view s(reinterpret_cast<const char*>(d_ + pos_), len);
    pos_ += len + 1;
    return s;
  }

  // ---- values ----
  // Every object made and every element copied into a new container counts against one budget, so that a small
  // pickle cannot make us copy a large list over and over.
  void charge(size_t k) {
    if (k > lim_.max_values || work_ > lim_.max_values - k)
      fail("pickle builds more than " + std::to_string(lim_.max_values) + " objects; refusing to build more");
    work_ += k;
  }
  // The same for bytes copied out of existing strings (bytes(), _codecs.encode): at most the pickle's own size.
  void charge_bytes(size_t k) {
    const size_t limit = n_ + 4096;
    if (k > limit || bytes_copied_ > limit - k) fail("pickle copies more string data than it contains; refusing");
    bytes_copied_ += k;
  }
  Value* make(Kind k) {
    charge(1);
    Value& v = out_.arena->emplace_back();
    v.kind = k;
    return &v;
  }
  Value* make_int(int64_t i) {
    Value* v = make(Kind::Int);
    v->integer = i;
    return v;
  }
  Value* make_str(std::string_view s) {
    if (!valid_utf8(reinterpret_cast<const uint8_t*>(s.data()), s.size())) fail("string is not valid UTF-8");
    Value* v = make(Kind::Str);
    v->text.assign(s);
    return v;
  }
  Value* make_bytes(std::string_view s) {
    Value* v = make(Kind::Bytes);
    v->text.assign(s);
    return v;
  }

  // ---- stack ----
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Value* v) {
    if (stack_.size() >= lim_.max_stack) fail("stack deeper than " + std::to_string(lim_.max_stack) + " entries");
    stack_.push_back(v);
  }
  Value* pop() {
    if (stack_.size() <= base()) fail("stack underflow");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() {
    if (stack_.size() <= base()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return items;
  }
  void memo_put(uint64_t key) {
    Value* v = top();
    auto it = memo_.find(key);
    if (it != memo_.end()) {
      it->second = v;
      return;
    }
    if (memo_.size() >= lim_.max_memo) fail("memo larger than " + std::to_string(lim_.max_memo) + " entries");
    memo_.emplace(key, v);
  }
  void memo_get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail("memo key " + std::to_string(key) + " is not defined");
    push(it->second);
  }

  // ---- numbers and text from protocol 0 lines ----
  // Decimal integer; sets *big when it does not fit in 64 bits.
  int64_t parse_int(std::string_view s, bool* big) {
    *big = false;
    if (!s.empty() && s.back() == 'L') s.remove_suffix(1);  // LONG's trailing L
    if (!s.empty() && s.front() == '+') s.remove_prefix(1);
    size_t digits_from = (!s.empty() && s.front() == '-') ? 1 : 0;
    if (s.size() == digits_from) fail("malformed integer '" + printable(s) + "'");
    for (size_t i = digits_from; i < s.size(); ++i)
      if (s[i] < '0' || s[i] > '9') fail("malformed integer '" + printable(s) + "'");
    int64_t v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc::result_out_of_range) *big = true;
    return v;
  }
  Value* int_or_big(std::string_view s) {
    bool big = false;
    int64_t v = parse_int(s, &big);
    if (!big) return make_int(v);
    Value* b = make(Kind::BigInt);
    b->text.assign(s);
    return b;
  }
  uint64_t parse_index(std::string_view s) {
    bool big = false;
    int64_t v = parse_int(s, &big);
    if (big || v < 0) fail("bad memo index '" + printable(s) + "'");
    return uint64_t(v);
  }
  // LONG1/LONG4 payload: little-endian two's complement.
  Value* long_bytes(std::string_view b) {
    if (b.size() > 8) {
      Value* v = make(Kind::BigInt);
      v->text.assign(b);
      return v;
    }
    uint64_t u = 0;
    for (size_t i = 0; i < b.size(); ++i) u |= uint64_t(uint8_t(b[i])) << (8 * i);
    if (!b.empty() && b.size() < 8 && (uint8_t(b.back()) & 0x80)) u |= ~uint64_t(0) << (8 * b.size());
    return make_int(static_cast<int64_t>(u));
  }
  // STRING's argument: a Python 2 repr, quoted with ' or ", with backslash escapes.
  Value* quoted_string(std::string_view s) {
    if (s.size() < 2 || (s.front() != '\'' && s.front() != '"') || s.back() != s.front())
      fail("STRING argument is not a quoted string");
    s = s.substr(1, s.size() - 2);
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\\' || i + 1 == s.size()) {
        out += s[i];
        continue;
      }
      const char c = s[++i];
      switch (c) {
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case '\n': break;
        case 'x': {
          int h1 = i + 1 < s.size() ? hex_digit(s[i + 1]) : -1, h2 = i + 2 < s.size() ? hex_digit(s[i + 2]) : -1;
          if (h1 < 0 || h2 < 0) fail("bad \\x escape in STRING");
          out += char(h1 * 16 + h2);
          i += 2;
          break;
        }
        default:
          if (c >= '0' && c <= '7') {
            int v = c - '0';
            for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k) v = v * 8 + (s[++i] - '0');
            out += char(v & 0xff);
          } else {
            out += '\\';
            out += c;
          }
      }
    }
    return make_str(out);
  }
  // UNICODE's argument: raw-unicode-escape (bytes are Latin-1 code points; \uXXXX and \UXXXXXXXX escapes are
  // recognised after an odd run of backslashes).
  Value* raw_unicode(std::string_view s) {
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
      if (s[i] != '\\') {
        append_utf8(out, uint8_t(s[i++]));
        continue;
      }
      size_t run = 0;
      while (i < s.size() && s[i] == '\\') {
        ++run;
        ++i;
      }
      if (run % 2 == 0 || i >= s.size() || (s[i] != 'u' && s[i] != 'U')) {
        out.append(run, '\\');
        continue;
      }
      out.append(run - 1, '\\');
      const size_t digits = s[i] == 'u' ? 4 : 8;
      ++i;
      if (s.size() - i < digits) fail("truncated \\u escape in UNICODE");
      uint32_t cp = 0;
      for (size_t k = 0; k < digits; ++k) {
        int h = hex_digit(s[i + k]);
        if (h < 0) fail("bad \\u escape in UNICODE");
        cp = cp << 4 | uint32_t(h);
      }
      if (cp > 0x10ffff) fail("code point beyond U+10FFFF in UNICODE");
      i += digits;
      append_utf8(out, cp);
    }
    return make_str(out);
  }
  double parse_float(std::string_view s) {
    while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.remove_suffix(1);
    if (!s.empty() && s.front() == '+') s.remove_prefix(1);
    double v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc::invalid_argument || r.ptr != s.data() + s.size()) fail("malformed float '" + printable(s) + "'");
    return v;  // out-of-range values saturate like Python's float()
  }

  // ---- globals and calls ----
  Value* global(std::string module, std::string name) {
    if (module == "__builtin__") module = "builtins";  // protocol 0-2 spelling (Python's fix_imports)
    Action a;
    if (!find_allowed(module, name, &a))
      fail("pickle refers to global '" + printable(module) + "." + printable(name) + "', which is not allowed");
    Value* g = make(Kind::Global);
    g->text = std::move(module);
    g->name = std::move(name);
    g->integer = static_cast<int64_t>(a);
    return g;
  }

  static bool is_int(const Value* v) { return v->kind == Kind::Int || v->kind == Kind::Bool; }
  static int64_t int_of(const Value* v) { return v->kind == Kind::Bool ? int64_t(v->boolean) : v->integer; }

  std::vector<int64_t> int_tuple(const Value* v, const char* what) {
    if (v->kind != Kind::Tuple && v->kind != Kind::List) fail(std::string("_rebuild_tensor_v2: ") + what + " is " + a_desc(*v) + ", not a tuple");
    if (v->items.size() > lim_.max_rank)
      fail(std::string("_rebuild_tensor_v2: ") + what + " has " + std::to_string(v->items.size()) + " dimensions, more than " +
           std::to_string(lim_.max_rank));
    charge(v->items.size());
    std::vector<int64_t> r;
    r.reserve(v->items.size());
    for (const Value* x : v->items) {
      if (!is_int(x)) fail(std::string("_rebuild_tensor_v2: ") + what + " holds " + a_desc(*x) + ", not an int");
      r.push_back(int_of(x));
    }
    return r;
  }

  Value* encode(const Value* s, std::string enc) {
    std::string norm;
    for (char c : enc)
      if (c != '-' && c != '_') norm += char(c >= 'A' && c <= 'Z' ? c + 32 : c);
    charge_bytes(s->text.size());
    if (norm == "utf8") return make_bytes(s->text);
    const bool latin1 = norm == "latin1" || norm == "iso88591" || norm == "l1";
    if (!latin1 && norm != "ascii") fail("_codecs.encode with encoding '" + printable(enc) + "' is not supported");
    const uint32_t max_cp = latin1 ? 0xff : 0x7f;
    std::string out;
    const std::string& t = s->text;  // valid UTF-8 (checked when the string was made)
    for (size_t i = 0; i < t.size();) {
      const uint8_t c = uint8_t(t[i]);
      uint32_t cp;
      size_t len;
      if (c < 0x80) cp = c, len = 1;
      else if (c < 0xe0) cp = c & 0x1f, len = 2;
      else if (c < 0xf0) cp = c & 0x0f, len = 3;
      else cp = c & 0x07, len = 4;
      if (t.size() - i < len) fail("_codecs.encode: truncated UTF-8");
      for (size_t k = 1; k < len; ++k) cp = cp << 6 | (uint8_t(t[i + k]) & 0x3f);
      if (cp > max_cp) fail("_codecs.encode: character U+" + std::to_string(cp) + " does not fit encoding '" + printable(enc) + "'");
      out += char(cp);
      i += len;
    }
    return make_bytes(out);
  }

  Value* call(Value* callable, Value* args, const char* op) {
    if (callable->kind != Kind::Global)
      fail(std::string(op) + " calls " + a_desc(*callable) + "; only allowlisted globals can be called");
    if (args->kind != Kind::Tuple) fail(std::string(op) + " arguments are " + a_desc(*args) + ", not a tuple");
    const std::vector<Value*>& a = args->items;
    const std::string who = callable->text + "." + callable->name;
    switch (static_cast<Action>(callable->integer)) {
      case Action::Opaque: {
        Value* o = make(Kind::Object);
        o->items = {callable, args, nullptr};
        return o;
      }
      case Action::Dict: {
        Value* dict = make(Kind::Dict);
        if (a.empty()) return dict;
        if (a.size() != 1 || (a[0]->kind != Kind::List && a[0]->kind != Kind::Tuple)) fail(who + " called with unsupported arguments");
        charge(a[0]->items.size());
        for (Value* pair : a[0]->items) {
          if ((pair->kind != Kind::Tuple && pair->kind != Kind::List) || pair->items.size() != 2)
            fail(who + " called with an item that is not a (key, value) pair");
          dict->dict.push_back({pair->items[0], pair->items[1]});
        }
        return dict;
      }
      case Action::DefaultDict:
        return make(Kind::Dict);
      case Action::RebuildTensor: {
        if (a.size() < 4) fail("_rebuild_tensor_v2 expects at least 4 arguments, got " + std::to_string(a.size()));
        if (a[0]->kind != Kind::PersistentId) fail("_rebuild_tensor_v2: storage argument is " + a_desc(*a[0]) + ", not a persistent id");
        if (!is_int(a[1])) fail("_rebuild_tensor_v2: storage offset is " + a_desc(*a[1]) + ", not an int");
        TensorRef t;
        t.storage = a[0];
        t.offset = int_of(a[1]);
        t.shape = int_tuple(a[2], "size");
        t.strides = int_tuple(a[3], "stride");
        if (t.shape.size() != t.strides.size()) fail("_rebuild_tensor_v2: size and stride have different lengths");
        Value* v = make(Kind::Tensor);
        v->integer = int64_t(out_.tensors.size());
        out_.tensors.push_back(std::move(t));
        return v;
      }
      case Action::RebuildParam:
        if (a.empty()) fail(who + " expects at least 1 argument");
        return a[0];
      case Action::Set:
      case Action::FrozenSet: {
        Value* s = make(static_cast<Action>(callable->integer) == Action::Set ? Kind::Set : Kind::FrozenSet);
        if (a.empty()) return s;
        const Kind k = a[0]->kind;
        if (a.size() != 1 || (k != Kind::List && k != Kind::Tuple && k != Kind::Set && k != Kind::FrozenSet))
          fail(who + " called with unsupported arguments");
        charge(a[0]->items.size());
        s->items = a[0]->items;
        return s;
      }
      case Action::Bytes:
        if (a.empty()) return make_bytes("");
        if (a.size() == 1 && a[0]->kind == Kind::Bytes) {
          charge_bytes(a[0]->text.size());
          return make_bytes(a[0]->text);
        }
        if (a.size() >= 2 && a[0]->kind == Kind::Str && a[1]->kind == Kind::Str) return encode(a[0], a[1]->text);
        fail(who + " called with unsupported arguments");
      case Action::CodecsEncode:
        if (a.size() == 1 && a[0]->kind == Kind::Str) {
          charge_bytes(a[0]->text.size());
          return make_bytes(a[0]->text);
        }
        if (a.size() >= 2 && a[0]->kind == Kind::Str && a[1]->kind == Kind::Str) return encode(a[0], a[1]->text);
        fail(who + " called with unsupported arguments");
      case Action::Size: {
        Value* t = make(Kind::Tuple);
        if (a.empty()) return t;
        if (a.size() != 1 || (a[0]->kind != Kind::Tuple && a[0]->kind != Kind::List)) fail(who + " called with unsupported arguments");
        charge(a[0]->items.size());
        t->items = a[0]->items;
        return t;
      }
    }
    fail("internal error: unknown action");
  }

  void step(uint8_t op);
};

Unpickled Machine::run() {
  while (true) {
    op_pos_ = pos_;
    if (pos_ >= n_) fail("pickle ends without a STOP opcode (truncated)");
    const uint8_t op = d_[pos_++];
    if (op == '.') {  // STOP
      out_.root = pop();
      return std::move(out_);
    }
    step(op);
  }
}

void Machine::step(uint8_t op) {
  switch (op) {
    // -- framing and protocol --
    case 0x80: {  // PROTO
      const uint8_t v = u8();
      if (v > 5) fail("unsupported pickle protocol " + std::to_string(v));
      break;
    }
    case 0x95: {  // FRAME: the length is only a read-ahead hint
      const uint64_t len = le(8);
      if (len > n_ - pos_) fail("frame of " + std::to_string(len) + " bytes extends beyond the end of the pickle (truncated)");
      break;
    }
    // -- stack manipulation --
    case '(':  // MARK
      if (marks_.size() >= lim_.max_marks) fail("more than " + std::to_string(lim_.max_marks) + " nested MARKs");
      marks_.push_back(stack_.size());
      break;
    case '0':  // POP (pops a MARK when nothing is above it, like CPython)
      if (stack_.size() > base()) stack_.pop_back();
      else if (!marks_.empty()) marks_.pop_back();
      else fail("stack underflow");
      break;
    case '1':  // POP_MARK
      pop_mark();
      break;
    case '2':  // DUP
      push(top());
      break;
    // -- scalars --
    case 'N': push(make(Kind::None)); break;
    case 0x88:
    case 0x89: {  // NEWTRUE, NEWFALSE
      Value* b = make(Kind::Bool);
      b->boolean = op == 0x88;
      push(b);
      break;
    }
    case 'K': push(make_int(int64_t(le(1)))); break;                          // BININT1
    case 'M': push(make_int(int64_t(le(2)))); break;                          // BININT2
    case 'J': push(make_int(int64_t(int32_t(uint32_t(le(4)))))); break;      // BININT
    case 0x8a: {                                                              // LONG1
      const uint64_t len = le(1);
      push(long_bytes(take(len)));
      break;
    }
    case 0x8b: {  // LONG4
      const int32_t len = int32_t(uint32_t(le(4)));
      if (len < 0) fail("LONG4 with negative length");
      push(long_bytes(take(uint64_t(len))));
      break;
    }
    case 'I': {  // INT (protocol 0); "00"/"01" are False/True
      std::string_view s = line();
      if (s == "00" || s == "01") {
        Value* b = make(Kind::Bool);
        b->boolean = s == "01";
        push(b);
      } else {
        push(int_or_big(s));
      }
      break;
    }
    case 'L': push(int_or_big(line())); break;  // LONG (protocol 0)
    case 'F': {                                 // FLOAT (protocol 0)
      Value* f = make(Kind::Float);
      f->number = parse_float(line());
      push(f);
      break;
    }
    case 'G': {  // BINFLOAT: big-endian IEEE double
      need(8);
      uint64_t u = 0;
      for (int i = 0; i < 8; ++i) u = u << 8 | d_[pos_ + i];
      pos_ += 8;
      Value* f = make(Kind::Float);
      std::memcpy(&f->number, &u, 8);
      push(f);
      break;
    }
    // -- strings and bytes --
    case 'X': push(make_str(take(le(4)))); break;     // BINUNICODE
    case 0x8c: push(make_str(take(le(1)))); break;    // SHORT_BINUNICODE
    case 0x8d: push(make_str(take(le(8)))); break;    // BINUNICODE8
    case 'V': push(raw_unicode(line())); break;       // UNICODE (protocol 0)
    case 'S': push(quoted_string(line())); break;     // STRING (protocol 0)
    case 'U': push(make_str(take(le(1)))); break;     // SHORT_BINSTRING (a Python 2 str, read as UTF-8)
    case 'T': {                                       // BINSTRING
      const int32_t len = int32_t(uint32_t(le(4)));
      if (len < 0) fail("BINSTRING with negative length");
      push(make_str(take(uint64_t(len))));
      break;
    }
    case 'C': push(make_bytes(take(le(1)))); break;   // SHORT_BINBYTES
    case 'B': push(make_bytes(take(le(4)))); break;   // BINBYTES
    case 0x8e:                                        // BINBYTES8
    case 0x96: push(make_bytes(take(le(8)))); break;  // BYTEARRAY8
    // -- containers --
    case ')': push(make(Kind::Tuple)); break;  // EMPTY_TUPLE
    case 't': {                                // TUPLE
      std::vector<Value*> items = pop_mark();
      Value* t = make(Kind::Tuple);
      t->items = std::move(items);
      push(t);
      break;
    }
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1/2/3
      const size_t k = size_t(op - 0x84);
      if (stack_.size() - base() < k) fail("stack underflow");
      Value* t = make(Kind::Tuple);
      t->items.assign(stack_.end() - long(k), stack_.end());
      stack_.resize(stack_.size() - k);
      push(t);
      break;
    }
    case ']': push(make(Kind::List)); break;  // EMPTY_LIST
    case 'l': {                               // LIST
      std::vector<Value*> items = pop_mark();
      Value* l = make(Kind::List);
      l->items = std::move(items);
      push(l);
      break;
    }
    case 'a': {  // APPEND
      Value* v = pop();
      Value* l = top();
      if (l->kind != Kind::List) fail("APPEND to " + a_desc(*l) + ", not a list");
      l->items.push_back(v);
      break;
    }
    case 'e': {  // APPENDS
      std::vector<Value*> items = pop_mark();
      Value* l = top();
      if (l->kind != Kind::List) fail("APPENDS to " + a_desc(*l) + ", not a list");
      l->items.insert(l->items.end(), items.begin(), items.end());
      break;
    }
    case '}': push(make(Kind::Dict)); break;  // EMPTY_DICT
    case 'd': {                               // DICT
      std::vector<Value*> items = pop_mark();
      if (items.size() % 2) fail("DICT with an odd number of items");
      Value* dict = make(Kind::Dict);
      for (size_t i = 0; i < items.size(); i += 2) dict->dict.push_back({items[i], items[i + 1]});
      push(dict);
      break;
    }
    case 's': {  // SETITEM
      Value* v = pop();
      Value* k = pop();
      Value* dict = top();
      if (dict->kind != Kind::Dict) fail("SETITEM on " + a_desc(*dict) + ", not a dict");
      dict->dict.push_back({k, v});
      break;
    }
    case 'u': {  // SETITEMS
      std::vector<Value*> items = pop_mark();
      if (items.size() % 2) fail("SETITEMS with an odd number of items");
      Value* dict = top();
      if (dict->kind != Kind::Dict) fail("SETITEMS on " + a_desc(*dict) + ", not a dict");
      for (size_t i = 0; i < items.size(); i += 2) dict->dict.push_back({items[i], items[i + 1]});
      break;
    }
    case 0x8f: push(make(Kind::Set)); break;  // EMPTY_SET
    case 0x90: {                              // ADDITEMS
      std::vector<Value*> items = pop_mark();
      Value* s = top();
      if (s->kind != Kind::Set) fail("ADDITEMS on " + a_desc(*s) + ", not a set");
      s->items.insert(s->items.end(), items.begin(), items.end());
      break;
    }
    case 0x91: {  // FROZENSET
      std::vector<Value*> items = pop_mark();
      Value* s = make(Kind::FrozenSet);
      s->items = std::move(items);
      push(s);
      break;
    }
    // -- memo --
    case 'p': memo_put(parse_index(line())); break;  // PUT
    case 'q': memo_put(le(1)); break;                // BINPUT
    case 'r': memo_put(le(4)); break;                // LONG_BINPUT
    case 0x94: memo_put(memo_.size()); break;        // MEMOIZE
    case 'g': memo_get(parse_index(line())); break;  // GET
    case 'h': memo_get(le(1)); break;                // BINGET
    case 'j': memo_get(le(4)); break;                // LONG_BINGET
    // -- globals and object construction (interpreted, never executed) --
    case 'c': {  // GLOBAL
      std::string module(line());
      std::string name(line());
      push(global(std::move(module), std::move(name)));
      break;
    }
    case 0x93: {  // STACK_GLOBAL
      Value* name = pop();
      Value* module = pop();
      if (module->kind != Kind::Str || name->kind != Kind::Str) fail("STACK_GLOBAL needs two strings");
      push(global(module->text, name->text));
      break;
    }
    case 'i': {  // INST: module and name lines, arguments since the MARK
      std::string module(line());
      std::string name(line());
      Value* cls = global(std::move(module), std::move(name));
      Value* args = make(Kind::Tuple);
      args->items = pop_mark();
      push(call(cls, args, "INST"));
      break;
    }
    case 'o': {  // OBJ: class and arguments since the MARK
      std::vector<Value*> items = pop_mark();
      if (items.empty()) fail("OBJ without a class");
      Value* args = make(Kind::Tuple);
      args->items.assign(items.begin() + 1, items.end());
      push(call(items[0], args, "OBJ"));
      break;
    }
    case 'R': {  // REDUCE
      Value* args = pop();
      Value* callable = pop();
      push(call(callable, args, "REDUCE"));
      break;
    }
    case 0x81: {  // NEWOBJ
      Value* args = pop();
      Value* cls = pop();
      push(call(cls, args, "NEWOBJ"));
      break;
    }
    case 0x92: {  // NEWOBJ_EX (keyword arguments are dropped)
      pop();
      Value* args = pop();
      Value* cls = pop();
      push(call(cls, args, "NEWOBJ_EX"));
      break;
    }
    case 'b': {  // BUILD: object state; kept on opaque objects, ignored elsewhere (e.g. a state_dict's _metadata)
      Value* state = pop();
      Value* obj = top();
      if (obj->kind == Kind::Object) obj->items[2] = state;
      break;
    }
    // -- persistent ids (torch storages) --
    case 'P': {  // PERSID
      Value* pid = make_str(line());
      Value* p = make(Kind::PersistentId);
      p->items = {pid};
      push(p);
      break;
    }
    case 'Q': {  // BINPERSID
      Value* pid = pop();
      Value* p = make(Kind::PersistentId);
      p->items = {pid};
      push(p);
      break;
    }
    // -- refused --
    case 0x82:
    case 0x83:
    case 0x84: fail("extension registry opcodes (EXT1/EXT2/EXT4) are not supported");
    case 0x97:
    case 0x98: fail("out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER) are not supported");
    default: {
      static const char* hex = "0123456789abcdef";
      fail(std::string("unknown opcode 0x") + hex[op >> 4] + hex[op & 15]);
    }
  }
}

}  // namespace

std::string printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 200; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += char(c);
    }
  }
  if (s.size() > 200) out += "...";
  return out;
}

std::string with_article(const std::string& desc) {
  if (desc.empty() || desc == "None") return desc;
  const char c = desc[0];
  return (c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u' ? "an " : "a ") + desc;
}

const Value* Value::get(std::string_view key) const {
  for (auto it = dict.rbegin(); it != dict.rend(); ++it)
    if (it->key->kind == Kind::Str && it->key->text == key) return it->value;
  return nullptr;
}

std::string Value::qualified_name() const {
  if (kind == Kind::Global) return text + "." + name;
  if (kind == Kind::Object && !items.empty() && items[0]->kind == Kind::Global) return items[0]->text + "." + items[0]->name;
  return "";
}

std::string describe(const Value& v) {
  auto n = [](size_t k) { return "(" + std::to_string(k) + ")"; };
  switch (v.kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int:
    case Kind::BigInt: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple" + n(v.items.size());
    case Kind::List: return "list" + n(v.items.size());
    case Kind::Dict: return "dict";
    case Kind::Set: return "set" + n(v.items.size());
    case Kind::FrozenSet: return "frozenset" + n(v.items.size());
    case Kind::Global: return "global " + v.qualified_name();
    case Kind::Object: {
      const std::string q = v.qualified_name();
      if (q == "numpy.core.multiarray.scalar" || q == "numpy._core.multiarray.scalar") return "numpy scalar";
      if (q == "numpy.core.multiarray._reconstruct" || q == "numpy._core.multiarray._reconstruct") return "numpy.ndarray";
      return q;
    }
    case Kind::PersistentId: return "persistent id";
    case Kind::Tensor: return "tensor";
  }
  return "?";
}

Unpickled unpickle(const uint8_t* data, size_t size, const std::string& where, const std::string& label, const Limits& limits) {
  if (data == nullptr) size = 0;
  Machine m(data, size, where, label, limits);
  return m.run();
}

}  // namespace ssmx::pickle

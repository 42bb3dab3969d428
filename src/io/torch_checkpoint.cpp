#include "io/torch_checkpoint.h"

#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "io/pickle.h"
#include "io/zip_reader.h"

namespace ssmx {

namespace {

using pickle::Kind;
using pickle::printable;
using pickle::Value;

// The pickled magic number that starts a legacy (torch < 1.6) file: PROTO 2, LONG1 of 10 bytes 0x1950a86a20f9469cfc6c.
constexpr uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

// Entries tried, in order, when the top-level dict is a training checkpoint rather than a state dict.
constexpr const char* kStateDictKeys[] = {"model", "state_dict", "model_state_dict", "module"};

struct Archive {
  std::shared_ptr<MappedFile> file;
  ZipReader zip;
  std::string prefix;
  pickle::Unpickled pk;

  explicit Archive(std::shared_ptr<MappedFile> f) : file(f), zip(check_not_legacy(f)) {
    const std::string& path = file->path();
    if (zip.entries().empty()) throw Error(path, "not a torch checkpoint: the zip archive is empty");
    const std::string& first = zip.entries().front().name;
    const size_t slash = first.find('/');
    if (slash == std::string::npos)
      throw Error(path, "not a torch checkpoint: zip entries are not inside a top-level folder (first entry '" + printable(first) + "')");
    prefix = first.substr(0, slash);
    const ZipEntry* pkl = zip.find(prefix + "/data.pkl");
    if (!pkl) throw Error(path, "not a torch checkpoint: no '" + printable(prefix) + "/data.pkl' in the zip archive");
    if (const ZipEntry* bo = zip.find(prefix + "/byteorder")) {
      ZipBytes b = zip.bytes(*bo);
      std::string order(reinterpret_cast<const char*>(b.data), b.size);
      while (!order.empty() && (order.back() == '\n' || order.back() == ' ' || order.back() == '\r')) order.pop_back();
      if (order == "big") throw Error(path, "big-endian checkpoints are not supported");
      if (order != "little") throw Error(path, "unknown byteorder '" + printable(order) + "' in " + printable(prefix) + "/byteorder");
    }
    ZipBytes p = zip.bytes(*pkl);
    pk = pickle::unpickle(p.data, p.size, path, printable(prefix) + "/data.pkl");
  }

  static std::shared_ptr<MappedFile> check_not_legacy(const std::shared_ptr<MappedFile>& f) {
    if (f->size() >= sizeof(kLegacyMagic) && std::memcmp(f->data(), kLegacyMagic, sizeof(kLegacyMagic)) == 0)
      throw Error(f->path(), "legacy (non-zip) torch format is not supported; re-save with torch>=1.6");
    return f;
  }
};

bool storage_dtype(const std::string& storage_class, DType* dt) {
  static const std::pair<const char*, DType> kTable[] = {
      {"DoubleStorage", DType::F64}, {"FloatStorage", DType::F32},  {"HalfStorage", DType::F16},
      {"BFloat16Storage", DType::BF16}, {"LongStorage", DType::I64}, {"IntStorage", DType::I32},
      {"ShortStorage", DType::I16},  {"CharStorage", DType::I8},    {"ByteStorage", DType::U8},
      {"BoolStorage", DType::BOOL},  {"UntypedStorage", DType::U8}};
  for (const auto& [name, t] : kTable)
    if (storage_class == name) {
      *dt = t;
      return true;
    }
  return false;
}

// The persistent id of a storage: ('storage', torch.<X>Storage, '<key>', '<location>', numel).
struct StorageRef {
  std::string type;  // e.g. "FloatStorage"
  std::string key;
  int64_t numel = 0;
};

bool parse_storage(const Value* pid_value, StorageRef* out) {
  if (pid_value == nullptr || pid_value->kind != Kind::PersistentId || pid_value->items.size() != 1) return false;
  const Value* pid = pid_value->items[0];
  if (pid->kind != Kind::Tuple || pid->items.size() < 5) return false;
  const auto& it = pid->items;
  if (it[0]->kind != Kind::Str || it[0]->text != "storage") return false;
  if (it[1]->kind != Kind::Global || it[1]->text != "torch") return false;
  if (it[2]->kind != Kind::Str || it[4]->kind != Kind::Int) return false;
  out->type = it[1]->name;
  out->key = it[2]->text;
  out->numel = it[4]->integer;
  return true;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A dict key as a tensor name: str keys as they are, int keys in decimal; other keys are not names.
bool key_name(const Value* k, std::string* out) {
  if (k->kind == Kind::Str) {
    *out = k->text;
    return true;
  }
  if (k->kind == Kind::Int) {
    *out = std::to_string(k->integer);
    return true;
  }
  return false;
}

std::string key_list(const Value& dict) {
  std::string s;
  size_t shown = 0;
  for (const auto& item : dict.dict) {
    std::string k;
    if (!key_name(item.key, &k)) continue;
    if (shown == 10) {
      s += ", ...";
      break;
    }
    s += (shown++ ? ", " : "") + printable(k);
  }
  return s.empty() ? "none" : s;
}

std::string describe_value(const pickle::Unpickled& pk, const Value& v) {
  if (v.kind == Kind::Tensor) {
    const pickle::TensorRef& t = pk.tensors[size_t(v.integer)];
    StorageRef s;
    DType dt;
    std::string desc = "tensor";
    if (parse_storage(t.storage, &s) && storage_dtype(s.type, &dt)) desc += std::string(" ") + dtype_name(dt);
    return desc + " " + shape_string(t.shape);
  }
  if (v.kind == Kind::Dict) {
    size_t tensors = 0;
    for (const auto& item : v.dict) tensors += item.value->kind == Kind::Tensor;
    const size_t other = v.dict.size() - tensors;
    if (tensors == 0) return "dict(" + std::to_string(other) + (other == 1 ? " entry)" : " entries)");
    if (other == 0) return "dict(" + std::to_string(tensors) + " tensors)";
    return "dict(" + std::to_string(tensors) + " tensors, " + std::to_string(other) + " other entries)";
  }
  return pickle::describe(v);
}

// Picks the dict whose tensors are the state dict (see the header for the rule).
const Value* select_state_dict(const Archive& a, const std::string& key) {
  const std::string& path = a.file->path();
  const Value* root = a.pk.root;
  if (root->kind != Kind::Dict)
    throw Error(path, "top-level object is " + pickle::with_article(describe_value(a.pk, *root)) + ", not a dict of tensors");
  if (!key.empty()) {
    const Value* v = root->get(key);
    if (!v) throw Error(path, "no entry '" + printable(key) + "' in the top-level dict (keys: " + key_list(*root) + ")");
    if (v->kind != Kind::Dict)
      throw Error(path, "entry '" + printable(key) + "' is " + pickle::with_article(describe_value(a.pk, *v)) + ", not a dict of tensors");
    return v;
  }
  for (const char* k : kStateDictKeys) {
    const Value* v = root->get(k);
    if (v && v->kind == Kind::Dict) return v;
  }
  bool any_tensor = false;
  for (const auto& item : root->dict) any_tensor = any_tensor || item.value->kind == Kind::Tensor;
  if (!any_tensor && !root->dict.empty())
    throw Error(path, "no state dict found: the top-level dict holds no tensors and no 'model', 'state_dict', "
                      "'model_state_dict' or 'module' entry (keys: " + key_list(*root) + ")");
  return root;
}

RawTensor resolve_tensor(const Archive& a, const pickle::TensorRef& ref, const std::string& name,
                         std::unordered_map<std::string, ZipBytes>& storages) {
  const std::string& path = a.file->path();
  const std::string shown = printable(name);
  StorageRef s;
  if (!parse_storage(ref.storage, &s))
    throw Error(path, "tensor '" + shown + "': storage is not a ('storage', torch.<T>Storage, key, location, numel) persistent id");
  DType dt;
  if (!storage_dtype(s.type, &dt)) {
    if (s.type.rfind("Complex", 0) == 0) throw Error(path, "tensor '" + shown + "': complex storage torch." + printable(s.type) + " is not supported");
    throw Error(path, "tensor '" + shown + "': unknown storage type torch." + printable(s.type));
  }
  auto it = storages.find(s.key);
  if (it == storages.end()) {
    const std::string entry = a.prefix + "/data/" + s.key;
    const ZipEntry* e = a.zip.find(entry);
    if (!e) throw Error(path, "tensor '" + shown + "': storage '" + printable(s.key) + "' is missing (no entry '" + printable(entry) + "' in the zip)");
    it = storages.emplace(s.key, a.zip.bytes(*e)).first;
  }
  const ZipBytes bytes = it->second;
  const size_t item = dtype_size(dt);
  if (s.numel < 0 || uint64_t(s.numel) > bytes.size / item)
    throw Error(path, "tensor '" + shown + "': storage '" + printable(s.key) + "' declares " + std::to_string(s.numel) + " elements of " +
                          std::to_string(item) + " bytes, but its zip entry holds " + std::to_string(bytes.size) + " bytes");
  RawTensor t;
  t.dtype = dt;
  t.shape = ref.shape;
  t.strides = ref.strides;
  t.offset = ref.offset;
  t.storage = bytes.data;
  t.storage_bytes = size_t(s.numel) * item;
  t.source = path;
  t.keep_alive = a.file;
  check_bounds(t, shown);
  return t;
}

}  // namespace

std::vector<std::pair<std::string, RawTensor>> load_torch_state_dict(const std::string& path, const std::string& key) {
  return load_torch_state_dict(MappedFile::open(path), key);
}

std::vector<std::pair<std::string, RawTensor>> load_torch_state_dict(std::shared_ptr<MappedFile> file, const std::string& key) {
  Archive a(std::move(file));
  const Value* dict = select_state_dict(a, key);
  std::vector<std::pair<std::string, RawTensor>> out;
  std::unordered_map<std::string, ZipBytes> storages;
  std::unordered_set<std::string> seen;
  for (const auto& item : dict->dict) {
    if (item.value->kind != Kind::Tensor) continue;
    std::string name;
    if (!key_name(item.key, &name)) continue;
    if (!seen.insert(name).second) throw Error(a.file->path(), "duplicate tensor name '" + printable(name) + "'");
    out.emplace_back(name, resolve_tensor(a, a.pk.tensors[size_t(item.value->integer)], name, storages));
  }
  if (out.empty() && !dict->dict.empty())
    throw Error(a.file->path(), "the selected dict has " + std::to_string(dict->dict.size()) + " entries but no tensors");
  return out;
}

std::vector<std::pair<std::string, std::string>> describe_torch_checkpoint(const std::string& path) {
  Archive a(MappedFile::open(path));
  const Value* root = a.pk.root;
  std::vector<std::pair<std::string, std::string>> out;
  if (root->kind != Kind::Dict) {
    out.emplace_back("", describe_value(a.pk, *root));
    return out;
  }
  for (const auto& item : root->dict) {
    std::string k;
    if (!key_name(item.key, &k)) k = pickle::describe(*item.key) + " key";
    out.emplace_back(k, describe_value(a.pk, *item.value));
  }
  return out;
}

}  // namespace ssmx

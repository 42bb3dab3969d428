#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ssmx {

namespace {

constexpr uint64_t kMaxHeader = 100'000'000;

bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kTable[] = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"I64", DType::I64},
      {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},   {"U8", DType::U8},     {"BOOL", DType::BOOL}};
  for (const auto& [name, dt] : kTable)
    if (s == name) {
      *out = dt;
      return true;
    }
  return false;
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path) { return read_safetensors(MappedFile::open(path)); }

SafetensorsFile read_safetensors(std::shared_ptr<MappedFile> file) {
  const std::string& path = file->path();
  const size_t size = file->size();
  if (size < 8) throw Error(path, "not a safetensors file: " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, file->data(), 8);
  if (n > kMaxHeader) throw Error(path, "safetensors header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > size - 8)
    throw Error(path, "safetensors header length " + std::to_string(n) + " is larger than the file (" + std::to_string(size) + " bytes; truncated?)");
  const char* hdr = reinterpret_cast<const char*>(file->data() + 8);
  nlohmann::json j = nlohmann::json::parse(hdr, hdr + n, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(path, "safetensors header is not valid JSON");
  if (!j.is_object()) throw Error(path, "safetensors header is not a JSON object");

  SafetensorsFile out;
  out.file = file;
  const uint8_t* buf = file->data() + 8 + n;
  const uint64_t buf_size = size - 8 - n;
  struct Range {
    uint64_t b, e;
    std::string name;
  };
  std::vector<Range> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw Error(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw Error(path, "__metadata__ value '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string what = "tensor '" + name + "': ";
    if (!v.is_object()) throw Error(path, what + "entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) throw Error(path, what + "missing dtype");
    if (!v.contains("shape") || !v["shape"].is_array()) throw Error(path, what + "missing shape");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      throw Error(path, what + "missing data_offsets [begin, end]");
    RawTensor t;
    const std::string ds = v["dtype"].get<std::string>();
    if (!parse_dtype(ds, &t.dtype)) throw Error(path, what + "dtype " + ds + " is not supported");
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) throw Error(path, what + "shape entries must be non-negative integers");
      uint64_t e = d.get<uint64_t>();
      if (e != 0 && numel > (uint64_t(1) << 48) / e) throw Error(path, what + "shape is too large");
      numel *= e;
      t.shape.push_back(static_cast<int64_t>(e));
    }
    const auto& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw Error(path, what + "data_offsets must be non-negative integers");
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e) throw Error(path, what + "data_offsets begin " + std::to_string(b) + " is after end " + std::to_string(e));
    if (e > buf_size)
      throw Error(path, what + "data_offsets end " + std::to_string(e) + " is beyond the data buffer (" +
                            std::to_string(buf_size) + " bytes; truncated?)");
    const uint64_t expect = numel * dtype_size(t.dtype);
    if (e - b != expect)
      throw Error(path, what + "byte range holds " + std::to_string(e - b) + " bytes but dtype " + ds + " and shape " +
                            v["shape"].dump() + " need " + std::to_string(expect));
    t.strides = contiguous_strides(t.shape);
    t.offset = 0;
    t.storage = buf + b;
    t.storage_bytes = static_cast<size_t>(e - b);
    t.source = path;
    t.keep_alive = file;
    ranges.push_back({b, e, name});
    out.tensors.emplace_back(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.b < b.b || (a.b == b.b && a.e < b.e); });
  uint64_t cursor = 0;
  for (const Range& r : ranges) {
    if (r.b < cursor) throw Error(path, "tensor '" + r.name + "': byte range overlaps another tensor");
    if (r.b > cursor) throw Error(path, "tensor '" + r.name + "': gap in the data buffer before this tensor");
    cursor = r.e;
  }
  if (cursor != buf_size)
    throw Error(path, "data buffer has " + std::to_string(buf_size - cursor) + " trailing bytes not covered by any tensor");
  return out;
}

SafetensorsEntry make_f32_entry(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  SafetensorsEntry e;
  e.name = name;
  e.dtype = DType::F32;
  e.shape = shape;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  e.bytes.resize(size_t(n) * 4);
  if (n) std::memcpy(e.bytes.data(), data, size_t(n) * 4);
  return e;
}

void write_safetensors(const std::string& path, std::vector<SafetensorsEntry> entries,
                       const std::map<std::string, std::string>& metadata) {
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (!metadata.empty()) j["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& e : entries) {
    j[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {off, off + e.bytes.size()}}};
    off += e.bytes.size();
  }
  std::string hdr = j.dump();
  while (hdr.size() % 8 != 0) hdr.push_back(' ');
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot open for writing");
  uint64_t n = hdr.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(hdr.data(), std::streamsize(hdr.size()));
  for (const auto& e : entries) f.write(reinterpret_cast<const char*>(e.bytes.data()), std::streamsize(e.bytes.size()));
  if (!f) throw Error(path, "write failed");
}

}  // namespace ssmx

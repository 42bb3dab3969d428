#include "io/npy.h"

#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "core/error.h"
#include "core/mapped_file.h"

namespace ssmx {

void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) dict += ",";
    if (i + 1 < shape.size()) dict += " ";
  }
  dict += "), }";
  // Magic (6) + version (2) + header length (2) + header, padded with spaces and a final newline to 64 bytes.
  size_t total = 10 + dict.size() + 1;
  size_t pad = (64 - total % 64) % 64;
  dict.append(pad, ' ');
  dict.push_back('\n');
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot open for writing");
  const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  f.write(magic, 8);
  uint16_t hl = static_cast<uint16_t>(dict.size());
  f.write(reinterpret_cast<const char*>(&hl), 2);
  f.write(dict.data(), std::streamsize(dict.size()));
  int64_t n = Tensor::count(shape);
  if (n > 0) f.write(reinterpret_cast<const char*>(data), std::streamsize(n * 4));
  if (!f) throw Error(path, "write failed");
}

Tensor read_npy_f32(const std::string& path, bool allow_f64) {
  auto file = MappedFile::open(path);
  const uint8_t* p = file->data();
  const size_t size = file->size();
  if (size < 10 || std::memcmp(p, "\x93NUMPY", 6) != 0) throw Error(path, "not a NumPy .npy file (bad magic)");
  const int major = p[6];
  size_t hl = 0, start = 0;
  if (major == 1) {
    hl = size_t(p[8]) | size_t(p[9]) << 8;
    start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw Error(path, "truncated .npy header");
    hl = size_t(p[8]) | size_t(p[9]) << 8 | size_t(p[10]) << 16 | size_t(p[11]) << 24;
    start = 12;
  } else {
    throw Error(path, ".npy format version " + std::to_string(major) + " is not supported");
  }
  if (hl > size - start) throw Error(path, ".npy header length exceeds the file");
  std::string hdr(reinterpret_cast<const char*>(p + start), hl);
  std::smatch m;
  if (!std::regex_search(hdr, m, std::regex("'descr':\\s*'([^']*)'"))) throw Error(path, ".npy header has no descr");
  const std::string descr = m[1];
  if (!allow_f64 && descr != "<f4") throw Error(path, ".npy dtype " + descr + " is not supported (need float32 '<f4')");
  if (descr != "<f4" && descr != "<f8")
    throw Error(path, ".npy dtype " + descr + " is not supported (need float32 '<f4' or float64 '<f8')");
  if (std::regex_search(hdr, m, std::regex("'fortran_order':\\s*True"))) throw Error(path, "Fortran-ordered .npy arrays are not supported");
  if (!std::regex_search(hdr, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) throw Error(path, ".npy header has no shape");
  std::vector<int64_t> shape;
  std::stringstream ss(m[1].str());
  std::string item;
  int64_t numel = 1;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(" "), b = item.find_last_not_of(" ");
    if (a == std::string::npos) continue;
    item = item.substr(a, b - a + 1);
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 12)
      throw Error(path, ".npy shape entry '" + item + "' is not a valid dimension");
    int64_t d = std::stoll(item);
    if (d != 0 && numel > (int64_t(1) << 40) / d) throw Error(path, ".npy shape is too large");
    numel *= d;
    shape.push_back(d);
  }
  const size_t es = descr == "<f4" ? 4 : 8;
  const size_t data_off = start + hl;
  if (size - data_off != size_t(numel) * es)
    throw Error(path, ".npy data holds " + std::to_string(size - data_off) + " bytes but shape needs " +
                          std::to_string(size_t(numel) * es));
  Tensor t(shape);
  if (es == 4) {
    if (numel) std::memcpy(t.ptr(), p + data_off, size_t(numel) * 4);
  } else {
    for (int64_t i = 0; i < numel; ++i) {
      double d;
      std::memcpy(&d, p + data_off + 8 * i, 8);
      t.data[i] = float(d);
    }
  }
  return t;
}

}  // namespace ssmx

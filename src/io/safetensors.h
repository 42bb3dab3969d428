// ssmx/io/safetensors.h — reader and writer for the safetensors format.
//
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON ({name: {dtype, shape, data_offsets}, optional
// "__metadata__": {str: str}}), then the byte buffer. The reader validates everything before any tensor is handed
// out: header length within the file (and at most 100 MB), JSON well formed, known dtypes, non-negative shapes,
// offsets inside the buffer, byte length equal to numel × itemsize, no two tensors overlapping and no gaps (as the
// reference implementation requires). Tensors are RawTensors pointing into the memory-mapped file.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/mapped_file.h"
#include "io/raw_tensor.h"

namespace ssmx {

struct SafetensorsFile {
  std::shared_ptr<MappedFile> file;
  std::vector<std::pair<std::string, RawTensor>> tensors;  // in header order
  std::map<std::string, std::string> metadata;
};

SafetensorsFile read_safetensors(const std::string& path);
SafetensorsFile read_safetensors(std::shared_ptr<MappedFile> file);

// One tensor to write. `bytes` holds numel × itemsize little-endian bytes.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
SafetensorsEntry make_f32_entry(const std::string& name, const std::vector<int64_t>& shape, const float* data);

// Writes entries (sorted by name) with the header padded to a multiple of 8. Throws ssmx::Error on I/O failure.
void write_safetensors(const std::string& path, std::vector<SafetensorsEntry> entries,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace ssmx

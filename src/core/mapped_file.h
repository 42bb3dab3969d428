// ssmx/core/mapped_file.h — a read-only memory map of a whole file.
//
// Checkpoints are mapped, not read: tensors stored as little-endian f32 are used in place, everything else is
// converted from the mapping. An empty file maps to a null pointer with size 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace ssmx {

class MappedFile {
 public:
  // Throws ssmx::Error("path", reason) when the file cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  // A mapping over a caller-owned buffer (tests and fuzzers); the buffer must outlive the object.
  static std::shared_ptr<MappedFile> from_memory(const void* data, size_t size, std::string name);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool owns_map_ = false;
  std::string path_;
};

}  // namespace ssmx

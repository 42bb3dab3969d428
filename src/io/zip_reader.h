// ssmx/io/zip_reader.h — a minimal read-only ZIP directory over a memory-mapped file.
//
// Enough ZIP for PyTorch checkpoints (torch.save since 1.6 writes a ZIP whose records are STORED, i.e. not
// compressed): find the end-of-central-directory record (skipping a trailing comment), follow the ZIP64 locator and
// record when present, walk the central directory and read each entry's local header to find where its bytes start.
// Every offset and size is checked against the file size before it is used, entry names must be unique and the
// number of entries is capped. Only STORED entries can be read, and they are returned as byte ranges inside the
// mapping (no copy). It refuses compressed or encrypted entries, multi-disk archives and CRC checking (the bytes
// are used as they are). All failures are ssmx::Error(path, reason) with one-line reasons.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/mapped_file.h"

namespace ssmx {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;            // 0 = STORED, 8 = deflate, ...
  uint16_t flags = 0;             // general purpose bit flags (bit 0 = encrypted)
  uint64_t compressed_size = 0;
  uint64_t size = 0;              // uncompressed
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;       // first byte of the entry's (possibly compressed) data in the file
};

// A contiguous byte range inside the mapping.
struct ZipBytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

class ZipReader {
 public:
  // Parses the directory; throws ssmx::Error(file->path(), reason) when the file is not a usable ZIP.
  explicit ZipReader(std::shared_ptr<MappedFile> file);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when there is no entry with that exact name.
  const ZipEntry* find(std::string_view name) const;
  // The bytes of a STORED entry, in place. Throws for compressed or encrypted entries.
  ZipBytes bytes(const ZipEntry& e) const;
  const std::string& path() const { return file_->path(); }
  const std::shared_ptr<MappedFile>& file() const { return file_; }

  static constexpr size_t kMaxEntries = 1u << 20;

 private:
  std::shared_ptr<MappedFile> file_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

}  // namespace ssmx

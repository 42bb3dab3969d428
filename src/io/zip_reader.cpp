#include "io/zip_reader.h"

#include <cstring>

#include "core/error.h"

namespace ssmx {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEocdSize = 22;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kZip64EocdSize = 56;
constexpr size_t kCentralSize = 46;
constexpr size_t kLocalSize = 30;

uint16_t u16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t u32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t u64(const uint8_t* p) { return uint64_t(u32(p)) | uint64_t(u32(p + 4)) << 32; }

// An entry name as it may appear in a one-line message: control bytes escaped, long names shortened.
std::string printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 200; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
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

std::string num(uint64_t v) { return std::to_string(v); }

}  // namespace

ZipReader::ZipReader(std::shared_ptr<MappedFile> file) : file_(std::move(file)) {
  const std::string& path = file_->path();
  const uint8_t* d = file_->data();
  const uint64_t size = file_->size();
  auto corrupt = [&](const std::string& why) { return Error(path, "corrupt zip: " + why); };

  // 1. End of central directory: the last 22+ bytes, possibly followed by a comment of up to 65535 bytes.
  if (size < kEocdSize) throw Error(path, "not a zip file: " + num(size) + " bytes, too short for a zip directory");
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = size - kEocdSize > 0xffff ? size - kEocdSize - 0xffff : 0;
  for (uint64_t pos = size - kEocdSize + 1; pos-- > lowest;) {
    if (u32(d + pos) == kEocdSig && pos + kEocdSize + u16(d + pos + 20) == size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == UINT64_MAX) throw Error(path, "not a zip file: no end-of-central-directory record (truncated or not a torch.save zip)");

  uint64_t n_disk = u16(d + eocd + 4), cd_disk = u16(d + eocd + 6);
  uint64_t n_here = u16(d + eocd + 8), n_total = u16(d + eocd + 10);
  uint64_t cd_size = u32(d + eocd + 12), cd_offset = u32(d + eocd + 16);
  uint64_t cd_limit = eocd;  // the central directory must end before this offset

  // 2. ZIP64: a locator right before the EOCD points at the ZIP64 EOCD record, whose fields replace the 16/32-bit ones.
  if (eocd >= kZip64LocatorSize && u32(d + eocd - kZip64LocatorSize) == kZip64LocatorSig) {
    const uint8_t* loc = d + eocd - kZip64LocatorSize;
    const uint64_t rec = u64(loc + 8);
    if (rec > eocd - kZip64LocatorSize || eocd - kZip64LocatorSize - rec < kZip64EocdSize)
      throw corrupt("ZIP64 end-of-central-directory offset " + num(rec) + " is out of range");
    const uint8_t* r = d + rec;
    if (u32(r) != kZip64EocdSig) throw corrupt("bad ZIP64 end-of-central-directory signature at offset " + num(rec));
    n_disk = u32(r + 16);
    cd_disk = u32(r + 20);
    n_here = u64(r + 24);
    n_total = u64(r + 32);
    cd_size = u64(r + 40);
    cd_offset = u64(r + 48);
    cd_limit = rec;
  } else if (n_total == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu) {
    throw corrupt("end-of-central-directory needs a ZIP64 record, but there is no ZIP64 locator");
  }
  if (n_disk != 0 || cd_disk != 0 || n_here != n_total) throw Error(path, "multi-disk zip archives are not supported");
  if (n_total > kMaxEntries) throw corrupt(num(n_total) + " entries, more than the limit of " + num(kMaxEntries));
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    throw corrupt("central directory (offset " + num(cd_offset) + ", " + num(cd_size) +
                  " bytes) lies outside the file or overlaps its end records (file is " + num(size) + " bytes)");
  if (n_total * kCentralSize > cd_size)
    throw corrupt("central directory of " + num(cd_size) + " bytes is too small for " + num(n_total) + " entries");

  // 3. Central directory walk.
  entries_.reserve(n_total);
  uint64_t pos = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < n_total; ++i) {
    if (cd_end - pos < kCentralSize) throw corrupt("central directory entry " + num(i) + " is truncated");
    const uint8_t* c = d + pos;
    if (u32(c) != kCentralSig) throw corrupt("bad central directory signature for entry " + num(i) + " at offset " + num(pos));
    ZipEntry e;
    e.flags = u16(c + 8);
    e.method = u16(c + 10);
    e.compressed_size = u32(c + 20);
    e.size = u32(c + 24);
    const uint64_t name_len = u16(c + 28), extra_len = u16(c + 30), comment_len = u16(c + 32);
    uint64_t disk_start = u16(c + 34);
    e.local_header_offset = u32(c + 42);
    if (cd_end - pos - kCentralSize < name_len + extra_len + comment_len)
      throw corrupt("central directory entry " + num(i) + " runs past the end of the directory");
    e.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);

    // ZIP64 extended information (header id 1) holds the 64-bit values of the fields that read 0xFFFFFFFF.
    const bool need64 = e.size == 0xffffffffu || e.compressed_size == 0xffffffffu ||
                        e.local_header_offset == 0xffffffffu || disk_start == 0xffff;
    const uint8_t* x = c + kCentralSize + name_len;
    bool found64 = false;
    for (uint64_t xo = 0; xo + 4 <= extra_len;) {
      const uint16_t id = u16(x + xo), len = u16(x + xo + 2);
      if (len > extra_len - xo - 4) throw corrupt("extra field of entry '" + printable(e.name) + "' is truncated");
      if (id == 1 && need64) {
        const uint8_t* f = x + xo + 4;
        uint64_t left = len;
        auto take = [&](uint64_t* v, size_t bytes) {
          if (left < bytes) throw corrupt("ZIP64 extra field of entry '" + printable(e.name) + "' is too short");
          *v = bytes == 8 ? u64(f) : u32(f);
          f += bytes;
          left -= bytes;
        };
        if (e.size == 0xffffffffu) take(&e.size, 8);
        if (e.compressed_size == 0xffffffffu) take(&e.compressed_size, 8);
        if (e.local_header_offset == 0xffffffffu) take(&e.local_header_offset, 8);
        if (disk_start == 0xffff) take(&disk_start, 4);
        found64 = true;
      }
      xo += 4 + uint64_t(len);
    }
    if (need64 && !found64) throw corrupt("entry '" + printable(e.name) + "' needs a ZIP64 extra field, but has none");
    if (disk_start != 0) throw Error(path, "multi-disk zip archives are not supported");
    pos += kCentralSize + name_len + extra_len + comment_len;

    // The local header repeats name and extra field with its own lengths; the data follows it.
    const uint64_t lo = e.local_header_offset;
    if (lo > size || size - lo < kLocalSize)
      throw corrupt("local header of entry '" + printable(e.name) + "' at offset " + num(lo) + " is beyond the end of the file (" +
                    num(size) + " bytes)");
    const uint8_t* l = d + lo;
    if (u32(l) != kLocalSig) throw corrupt("bad local header signature for entry '" + printable(e.name) + "' at offset " + num(lo));
    const uint64_t lname = u16(l + 26), lextra = u16(l + 28);
    if (size - lo - kLocalSize < lname + lextra)
      throw corrupt("local header of entry '" + printable(e.name) + "' runs past the end of the file");
    if (lname != name_len || std::memcmp(l + kLocalSize, e.name.data(), name_len) != 0)
      throw corrupt("local header name differs from the central directory for entry '" + printable(e.name) + "'");
    e.data_offset = lo + kLocalSize + lname + lextra;
    if (e.compressed_size > size - e.data_offset)
      throw corrupt("entry '" + printable(e.name) + "' (" + num(e.compressed_size) + " bytes at offset " + num(e.data_offset) +
                    ") extends beyond the end of the file (" + num(size) + " bytes)");
    if (e.method == 0 && e.compressed_size != e.size)
      throw corrupt("stored entry '" + printable(e.name) + "' has different compressed and uncompressed sizes");

    if (!by_name_.emplace(e.name, entries_.size()).second) throw corrupt("duplicate entry name '" + printable(e.name) + "'");
    entries_.push_back(std::move(e));
  }
}

const ZipEntry* ZipReader::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

ZipBytes ZipReader::bytes(const ZipEntry& e) const {
  if (e.flags & 1) throw Error(path(), "zip entry '" + printable(e.name) + "' is encrypted");
  if (e.method != 0)
    throw Error(path(), "entry " + printable(e.name) + " is compressed (method " + std::to_string(e.method) +
                            "); torch checkpoints store entries uncompressed");
  // Offsets were validated against the file size in the constructor.
  return ZipBytes{file_->data() + e.data_offset, static_cast<size_t>(e.size)};
}

}  // namespace ssmx

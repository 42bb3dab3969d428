// torch.save zip checkpoints and the data-only pickle machine.
//
// Fixtures under tests/data/torch/ were written by real PyTorch (scripts/make_torch_io_fixtures.py, which also wrote
// expected.json); corrupted and hand-made files are built here in memory. Every failure must be an ssmx::Error
// whose one-line message names the file and the specific problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "../test_util.h"
#include "core/error.h"
#include "io/pickle.h"
#include "io/torch_checkpoint.h"
#include "io/zip_reader.h"

using namespace ssmx;
using namespace std::string_literals;  // "..."s keeps embedded NUL bytes

namespace {

std::string fixture(const std::string& name) { return test::data_dir() + "/torch/" + name; }

// ---- little-endian helpers over std::string buffers ----
void app16(std::string& s, uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); }
void app32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void app64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void put16(std::string& s, size_t at, uint16_t v) { std::memcpy(&s[at], &v, 2); }
void put32(std::string& s, size_t at, uint32_t v) { std::memcpy(&s[at], &v, 4); }
void put64(std::string& s, size_t at, uint64_t v) { std::memcpy(&s[at], &v, 8); }
uint64_t get64(const std::string& s, size_t at) {
  uint64_t v;
  std::memcpy(&v, &s[at], 8);
  return v;
}

// ---- a ZIP writer for tests: STORED layout (the method field can be faked), optional ZIP64 end records ----
struct Member {
  std::string name, data;
  uint16_t method = 0;
};

// zip64_extra: central records say 0xFFFFFFFF and carry the real sizes and offset in a ZIP64 extra field (as writers
// do past 4 GiB). zip64_extra_len is the length the field declares; at most 24 bytes of it are written.
std::string make_zip(const std::vector<Member>& members, bool zip64 = false, const std::string& comment = "",
                     bool zip64_extra = false, uint16_t zip64_extra_len = 24) {
  std::string out, cd;
  for (const Member& m : members) {
    const uint32_t off = uint32_t(out.size());
    if (zip64_extra) {
      out += std::string(4, '\0');  // so that no offset is 0
      const uint32_t loff = uint32_t(out.size());
      app32(out, 0x04034b50);
      app16(out, 45), app16(out, 0), app16(out, m.method), app16(out, 0), app16(out, 0);
      app32(out, 0), app32(out, 0xffffffffu), app32(out, 0xffffffffu);
      app16(out, uint16_t(m.name.size())), app16(out, 0);
      out += m.name;
      out += m.data;
      app32(cd, 0x02014b50);
      app16(cd, 45), app16(cd, 45), app16(cd, 0), app16(cd, m.method), app16(cd, 0), app16(cd, 0);
      app32(cd, 0), app32(cd, 0xffffffffu), app32(cd, 0xffffffffu);
      std::string extra, values;  // header (id 1, declared length), then up to 24 bytes of values
      app64(values, m.data.size()), app64(values, m.data.size()), app64(values, loff);
      app16(extra, 1), app16(extra, zip64_extra_len);
      extra += values.substr(0, std::min<size_t>(24, zip64_extra_len));
      app16(cd, uint16_t(m.name.size())), app16(cd, uint16_t(extra.size())), app16(cd, 0), app16(cd, 0), app16(cd, 0);
      app32(cd, 0), app32(cd, 0xffffffffu);
      cd += m.name;
      cd += extra;
      continue;
    }
    app32(out, 0x04034b50);
    app16(out, 20), app16(out, 0), app16(out, m.method), app16(out, 0), app16(out, 0);
    app32(out, 0), app32(out, uint32_t(m.data.size())), app32(out, uint32_t(m.data.size()));
    app16(out, uint16_t(m.name.size())), app16(out, 0);
    out += m.name;
    out += m.data;
    app32(cd, 0x02014b50);
    app16(cd, 20), app16(cd, 20), app16(cd, 0), app16(cd, m.method), app16(cd, 0), app16(cd, 0);
    app32(cd, 0), app32(cd, uint32_t(m.data.size())), app32(cd, uint32_t(m.data.size()));
    app16(cd, uint16_t(m.name.size())), app16(cd, 0), app16(cd, 0), app16(cd, 0), app16(cd, 0);
    app32(cd, 0), app32(cd, off);
    cd += m.name;
  }
  const uint64_t cd_off = out.size();
  out += cd;
  if (zip64) {
    const uint64_t rec = out.size();
    app32(out, 0x06064b50), app64(out, 44), app16(out, 45), app16(out, 45), app32(out, 0), app32(out, 0);
    app64(out, members.size()), app64(out, members.size()), app64(out, cd.size()), app64(out, cd_off);
    app32(out, 0x07064b50), app32(out, 0), app64(out, rec), app32(out, 1);
  }
  app32(out, 0x06054b50), app16(out, 0), app16(out, 0);
  app16(out, uint16_t(members.size())), app16(out, uint16_t(members.size()));
  app32(out, uint32_t(cd.size())), app32(out, uint32_t(cd_off)), app16(out, uint16_t(comment.size()));
  out += comment;
  return out;
}

// The entries of a real fixture, copied out with ZipReader.
std::vector<Member> members_of(const std::string& path) {
  ZipReader z(MappedFile::open(path));
  std::vector<Member> out;
  for (const ZipEntry& e : z.entries()) {
    ZipBytes b = z.bytes(e);
    out.push_back({e.name, std::string(reinterpret_cast<const char*>(b.data), b.size)});
  }
  return out;
}

std::string& member(std::vector<Member>& ms, const std::string& suffix) {
  for (Member& m : ms)
    if (m.name.size() >= suffix.size() && m.name.compare(m.name.size() - suffix.size(), suffix.size(), suffix) == 0) return m.data;
  throw std::runtime_error("no member " + suffix);
}

// Offsets of the end records inside a torch-written file (which always has ZIP64 end records).
struct EndRecords {
  size_t eocd, locator, zip64;
};
EndRecords end_records(const std::string& f) {
  EndRecords r;
  r.eocd = f.size() - 22;
  r.locator = r.eocd - 20;
  r.zip64 = size_t(get64(f, r.locator + 8));
  return r;
}

// Offset of the central directory record for `name`.
size_t central_record(const std::string& f, const std::string& name) {
  for (size_t p = f.find("PK\x01\x02"); p != std::string::npos; p = f.find("PK\x01\x02", p + 1))
    if (f.compare(p + 46, name.size(), name) == 0) return p;
  throw std::runtime_error("no central record for " + name);
}

// ---- hand-written pickles ----
std::string p_str(const std::string& s) {
  std::string o = "X";
  app32(o, uint32_t(s.size()));
  return o + s;
}
std::string p_int(int32_t v) {
  std::string o = "J";
  app32(o, uint32_t(v));
  return o;
}
std::string p_global(const std::string& m, const std::string& n) { return "c" + m + "\n" + n + "\n"; }
std::string p_ints(const std::vector<int32_t>& v) {
  std::string o = "(";
  for (int32_t x : v) o += p_int(x);
  return o + "t";
}
std::string p_tensor(const std::string& key, int32_t numel, int32_t offset, const std::vector<int32_t>& shape,
                     const std::vector<int32_t>& stride, const std::string& storage = "FloatStorage") {
  std::string p = p_global("torch._utils", "_rebuild_tensor_v2") + "(";
  p += '(';
  p += p_str("storage") + p_global("torch", storage) + p_str(key) + p_str("cpu") + p_int(numel) + "tQ";
  p += p_int(offset) + p_ints(shape) + p_ints(stride) + "\x89" + p_global("collections", "OrderedDict") + ")R";
  return p + "tR";
}
std::string p_dict(const std::vector<std::pair<std::string, std::string>>& items) {
  std::string p = "\x80\x02}(";
  for (const auto& [k, v] : items) p += p_str(k) + v;
  return p + "u.";
}
std::string f32_bytes(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

// A one-tensor checkpoint in the torch layout: archive/data.pkl, archive/data/0, archive/version.
std::string one_tensor_zip(const std::string& pkl, const std::string& storage0) {
  return make_zip({{"archive/data.pkl", pkl}, {"archive/data/0", storage0}, {"archive/version", "3\n"}});
}

// Expects loading `bytes` (written to a temp file) to throw an Error naming the file and containing `reason`.
void expect_error(const std::string& bytes, const std::string& reason, const std::string& key = "") {
  test::TempDir td;
  const std::string p = td.file("bad.pt");
  test::write_file(p, bytes);
  try {
    load_torch_state_dict(p, key);
    ADD_FAILURE() << "no error for case expecting '" << reason << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
    EXPECT_NE(msg.find(reason), std::string::npos) << "message: " << msg << "\nexpected to contain: " << reason;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message must be one line: " << msg;
  }
}

// Same for the pickle machine alone.
void expect_pickle_error(const std::string& bytes, const std::string& reason, const pickle::Limits& lim = {}) {
  try {
    pickle::unpickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mem.pkl", "data.pkl", lim);
    ADD_FAILURE() << "no error for case expecting '" << reason << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("mem.pkl: data.pkl at byte ", 0), 0u) << msg;
    EXPECT_NE(msg.find(reason), std::string::npos) << "message: " << msg << "\nexpected to contain: " << reason;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message must be one line: " << msg;
  }
}

pickle::Unpickled run_pickle(const std::string& bytes) {
  return pickle::unpickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mem.pkl");
}

std::map<std::string, RawTensor> as_map(const std::vector<std::pair<std::string, RawTensor>>& v) {
  return std::map<std::string, RawTensor>(v.begin(), v.end());
}

// Compares a loaded state dict with what PyTorch recorded in expected.json.
void expect_matches_pytorch(const std::vector<std::pair<std::string, RawTensor>>& got, const nlohmann::ordered_json& want,
                            const std::string& file) {
  SCOPED_TRACE(file);
  ASSERT_EQ(got.size(), want.size());
  size_t i = 0;
  std::map<int, const uint8_t*> storage_of;
  for (auto it = want.begin(); it != want.end(); ++it, ++i) {
    const std::string& name = it.key();
    const auto& w = it.value();
    SCOPED_TRACE(name);
    ASSERT_EQ(got[i].first, name);  // dict order is kept
    const RawTensor& t = got[i].second;
    EXPECT_EQ(dtype_name(t.dtype), w["dtype"].get<std::string>());
    EXPECT_EQ(t.shape, w["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.strides, w["stride"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.offset, w["offset"].get<int64_t>());
    EXPECT_EQ(t.source, file);
    ASSERT_NE(t.keep_alive, nullptr);
    // Storage bytes point into the mapping; tensors that share a storage in PyTorch share it here.
    EXPECT_GE(t.storage, t.keep_alive->data());
    EXPECT_LE(t.storage + t.storage_bytes, t.keep_alive->data() + t.keep_alive->size());
    const int sid = w["storage"].get<int>();
    if (storage_of.count(sid)) EXPECT_EQ(storage_of[sid], t.storage) << "storage " << sid << " is not shared";
    else storage_of[sid] = t.storage;
    const std::vector<float> v = to_f32(t);
    const auto values = w["values"].get<std::vector<double>>();
    ASSERT_EQ(v.size(), values.size());
    for (size_t k = 0; k < v.size(); ++k) EXPECT_EQ(v[k], float(values[k])) << "element " << k;
  }
  // Distinct storages are distinct byte ranges.
  std::set<const uint8_t*> distinct;
  for (const auto& [sid, p] : storage_of) distinct.insert(p);
  EXPECT_EQ(distinct.size(), storage_of.size());
}

nlohmann::ordered_json expected() {
  return nlohmann::ordered_json::parse(test::read_file(fixture("expected.json")));
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------------
// Files written by PyTorch

TEST(TorchZip, StateDictMatchesPyTorchInEveryProtocol) {
  const auto exp = expected();
  for (const char* f : {"state_dict.pt", "state_dict_p1.pt", "state_dict_p4.pt", "module_state_dict.pt"}) {
    const std::string path = fixture(f);
    expect_matches_pytorch(load_torch_state_dict(path), exp["files"][f], path);
  }
}

TEST(TorchZip, TiedViewsAndScalars) {
  auto m = as_map(load_torch_state_dict(fixture("state_dict.pt")));
  // Tied weights (two tensor objects over one storage) and one tensor object pickled twice share bytes.
  EXPECT_EQ(m["emb.weight"].storage, m["head.weight"].storage);
  EXPECT_EQ(m["f32"].storage, m["f32_again"].storage);
  EXPECT_NE(m["f32"].storage, m["emb.weight"].storage);
  // A saved transpose keeps its storage and strides; a slice keeps its storage offset.
  EXPECT_FALSE(m["transposed"].is_contiguous());
  EXPECT_EQ(m["transposed"].strides, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(to_f32(m["transposed"])[1], 4.0f);  // transposed[0][1] = base[1][0]
  EXPECT_EQ(m["sliced"].offset, 5);
  EXPECT_EQ(to_f32(m["sliced"]), (std::vector<float>{105, 106, 109, 110}));
  EXPECT_EQ(m["sliced"].storage_bytes, 12u * 4);
  EXPECT_TRUE(m["scalar"].shape.empty());
  EXPECT_EQ(to_f32(m["scalar"]), std::vector<float>{3.5f});
  EXPECT_EQ(m["empty"].numel(), 0);
  EXPECT_EQ(m["param"].shape, std::vector<int64_t>{3});  // nn.Parameter via _rebuild_parameter
  // torch aligns records to 64 bytes, so f32 data is used in place.
  const float* view = f32_view(m["f32"]);
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(reinterpret_cast<const uint8_t*>(view), m["f32"].storage);
}

TEST(TorchZip, VimCheckpointUsesItsModelEntry) {
  const std::string path = fixture("vim_like.pth");
  const auto exp = expected();
  expect_matches_pytorch(load_torch_state_dict(path), exp["files"]["vim_like.pth"], path);
  expect_matches_pytorch(load_torch_state_dict(path, "model"), exp["files"]["vim_like.pth"], path);
}

TEST(TorchZip, VimCheckpointExplicitKeyErrors) {
  const std::string path = fixture("vim_like.pth");
  auto expect_key_error = [&](const std::string& key, const std::string& reason) {
    try {
      load_torch_state_dict(path, key);
      ADD_FAILURE() << "no error for key " << key;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_NE(msg.find(reason), std::string::npos) << msg;
    }
  };
  expect_key_error("nope", "no entry 'nope' in the top-level dict (keys: model, optimizer, lr_scheduler, epoch, args, scaler");
  expect_key_error("epoch", "entry 'epoch' is an int, not a dict of tensors");
  expect_key_error("args", "entry 'args' is an argparse.Namespace, not a dict of tensors");
  expect_key_error("optimizer", "the selected dict has 2 entries but no tensors");
}

TEST(TorchZip, DescribeVimCheckpoint) {
  auto d = describe_torch_checkpoint(fixture("vim_like.pth"));
  std::map<std::string, std::string> m(d.begin(), d.end());
  ASSERT_GE(d.size(), 6u);
  EXPECT_EQ(d[0].first, "model");  // dict order is kept
  EXPECT_EQ(m["model"], "dict(6 tensors)");
  EXPECT_EQ(m["optimizer"], "dict(2 entries)");
  EXPECT_EQ(m["lr_scheduler"], "dict(4 entries)");
  EXPECT_EQ(m["epoch"], "int");
  EXPECT_EQ(m["args"], "argparse.Namespace");
  EXPECT_EQ(m["scaler"], "dict(5 entries)");
  if (expected()["numpy"].get<bool>()) {
    EXPECT_EQ(m["max_accuracy"], "numpy scalar");
  }

  auto s = describe_torch_checkpoint(fixture("state_dict.pt"));
  std::map<std::string, std::string> sm(s.begin(), s.end());
  EXPECT_EQ(sm["f32"], "tensor F32 [2, 3]");
  EXPECT_EQ(sm["bf16"], "tensor BF16 [3]");
  EXPECT_EQ(sm["scalar"], "tensor F32 []");
}

TEST(TorchZip, RefusesOsSystem) {
  const std::string path = fixture("evil_os_system.pt");
  for (int describe = 0; describe < 2; ++describe) {
    try {
      if (describe) describe_torch_checkpoint(path);
      else load_torch_state_dict(path);
      ADD_FAILURE() << "os.system pickle was accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg, path + ": archive/data.pkl at byte 2: pickle refers to global 'os.system', which is not allowed");
    }
  }
}

TEST(TorchZip, RefusesLegacyFormat) {
  const std::string path = fixture("legacy.pt");
  try {
    load_torch_state_dict(path);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": legacy (non-zip) torch format is not supported; re-save with torch>=1.6");
  }
}

// ------------------------------------------------------------------------------------------------------------------
// ZIP layer

TEST(TorchZip, RebuiltArchivesLoadTheSame) {
  // Our own writer: no 64-byte alignment, with and without ZIP64 end records, with a trailing comment.
  const auto exp = expected();
  const auto ms = members_of(fixture("state_dict.pt"));
  test::TempDir td;
  int n = 0;
  for (bool zip64 : {false, true})
    for (std::string comment : {std::string(), std::string("a comment PK\x05\x06 with a fake signature")}) {
      const std::string p = td.file(std::to_string(n++) + ".pt");
      test::write_file(p, make_zip(ms, zip64, comment));
      expect_matches_pytorch(load_torch_state_dict(p), exp["files"]["state_dict.pt"], p);
    }
}

TEST(TorchZip, Zip64ExtraFields) {
  const auto exp = expected();
  const auto ms = members_of(fixture("state_dict.pt"));
  test::TempDir td;
  test::write_file(td.file("z64.pt"), make_zip(ms, true, "", true));
  expect_matches_pytorch(load_torch_state_dict(td.file("z64.pt")), exp["files"]["state_dict.pt"], td.file("z64.pt"));
  expect_error(make_zip(ms, true, "", true, 16), "corrupt zip: ZIP64 extra field of entry 'state_dict/data.pkl' is too short");
  expect_error(make_zip(ms, true, "", true, 30), "corrupt zip: extra field of entry 'state_dict/data.pkl' is truncated");
}

TEST(TorchZip, TrailingCommentOnTorchFile) {
  std::string f = test::read_file(fixture("state_dict.pt"));
  const std::string comment(65535, 'c');  // the longest comment: the EOCD sits 65535 + 22 bytes before the end
  put16(f, f.size() - 2, uint16_t(comment.size()));
  f += comment;
  test::TempDir td;
  test::write_file(td.file("c.pt"), f);
  EXPECT_EQ(load_torch_state_dict(td.file("c.pt")).size(), 16u);
}

TEST(TorchZip, TruncatedFiles) {
  const std::string f = test::read_file(fixture("state_dict.pt"));
  for (size_t cut : {size_t(0), size_t(1), size_t(21), size_t(100), f.size() / 2, f.size() - 23, f.size() - 22,
                     f.size() - 10, f.size() - 1}) {
    SCOPED_TRACE(cut);
    expect_error(f.substr(0, cut), "not a zip file");
  }
}

TEST(TorchZip, BadEndRecords) {
  const std::string good = test::read_file(fixture("state_dict.pt"));
  const EndRecords r = end_records(good);
  std::string f = good;
  f[r.eocd] = 'X';  // EOCD signature
  expect_error(f, "not a zip file: no end-of-central-directory record");
  f = good;
  put16(f, r.eocd + 20, 7);  // comment length that does not match the file end
  expect_error(f, "not a zip file: no end-of-central-directory record");
  f = good;
  put64(f, r.locator + 8, f.size() + 1000);  // ZIP64 record offset
  expect_error(f, "corrupt zip: ZIP64 end-of-central-directory offset");
  f = good;
  f[r.zip64] = 'X';
  expect_error(f, "corrupt zip: bad ZIP64 end-of-central-directory signature");
  f = good;
  put32(f, r.zip64 + 16, 1);  // disk number
  expect_error(f, "multi-disk zip archives are not supported");
  f = good;
  put64(f, r.zip64 + 24, 1u << 21), put64(f, r.zip64 + 32, 1u << 21);  // entry count
  expect_error(f, "corrupt zip: 2097152 entries, more than the limit of 1048576");
  f = good;
  put64(f, r.zip64 + 24, 1000), put64(f, r.zip64 + 32, 1000);
  expect_error(f, "is too small for 1000 entries");
  // Without ZIP64: 0xFFFFFFFF fields but no locator.
  std::string z = make_zip({{"archive/data.pkl", p_dict({})}});
  put32(z, z.size() - 6, 0xffffffffu);
  expect_error(z, "needs a ZIP64 record, but there is no ZIP64 locator");
}

TEST(TorchZip, CentralDirectoryOutOfRange) {
  const std::string good = test::read_file(fixture("state_dict.pt"));
  const EndRecords r = end_records(good);
  std::string f = good;
  put64(f, r.zip64 + 48, uint64_t(1) << 62);  // offset
  expect_error(f, "corrupt zip: central directory (offset 4611686018427387904,");
  f = good;
  put64(f, r.zip64 + 40, ~uint64_t(0) - 5);  // size: offset + size overflows
  expect_error(f, "lies outside the file");
  std::string z = make_zip({{"archive/data.pkl", p_dict({})}});
  put32(z, z.size() - 6, uint32_t(z.size()));
  expect_error(z, "corrupt zip: central directory (offset " + std::to_string(z.size()));
  z = make_zip({{"archive/data.pkl", p_dict({})}});
  put32(z, z.size() - 6, 3);  // points into the local header
  expect_error(z, "corrupt zip: bad central directory signature for entry 0 at offset 3");
}

TEST(TorchZip, EntryBeyondFile) {
  const std::string good = test::read_file(fixture("state_dict.pt"));
  const size_t c = central_record(good, "state_dict/data/0");
  std::string f = good;
  put32(f, c + 20, 0x7fffffff), put32(f, c + 24, 0x7fffffff);  // sizes
  expect_error(f, "corrupt zip: entry 'state_dict/data/0' (2147483647 bytes at offset");
  expect_error(f, "extends beyond the end of the file (" + std::to_string(good.size()) + " bytes)");
  f = good;
  put32(f, c + 42, uint32_t(good.size() - 10));  // local header offset
  expect_error(f, "corrupt zip: local header of entry 'state_dict/data/0' at offset");
  f = good;
  put32(f, c + 20, 0xffffffffu);  // needs a ZIP64 extra field that is not there
  expect_error(f, "entry 'state_dict/data/0' needs a ZIP64 extra field, but has none");
  f = good;
  put32(f, c + 20, 5);  // stored with csize != size
  expect_error(f, "stored entry 'state_dict/data/0' has different compressed and uncompressed sizes");
  f = good;
  put16(f, c + 28, 60000);  // name length runs past the directory
  expect_error(f, "corrupt zip: central directory entry");
}

TEST(TorchZip, DuplicateAndCompressedEntries) {
  const std::string pkl = p_dict({{"w", p_tensor("0", 2, 0, {2}, {1})}});
  expect_error(make_zip({{"archive/data.pkl", pkl}, {"archive/data/0", f32_bytes({1, 2})}, {"archive/data/0", "xx"}}),
               "corrupt zip: duplicate entry name 'archive/data/0'");
  expect_error(make_zip({{"archive/data.pkl", pkl}, {"archive/data/0", f32_bytes({1, 2}), 8}}),
               "entry archive/data/0 is compressed (method 8); torch checkpoints store entries uncompressed");
  expect_error(make_zip({{"archive/data.pkl", pkl, 8}}), "entry archive/data.pkl is compressed (method 8)");
}

TEST(TorchZip, NotATorchArchive) {
  expect_error(make_zip({}), "not a torch checkpoint: the zip archive is empty");
  expect_error(make_zip({{"data.pkl", p_dict({})}}), "not a torch checkpoint: zip entries are not inside a top-level folder");
  expect_error(make_zip({{"archive/other.txt", "x"}}), "not a torch checkpoint: no 'archive/data.pkl' in the zip archive");
  expect_error(std::string(100, 'x'), "not a zip file");
}

TEST(TorchZip, ByteOrder) {
  const std::string pkl = p_dict({{"w", p_tensor("0", 2, 0, {2}, {1})}});
  auto with_order = [&](const std::string& order) {
    return make_zip({{"archive/data.pkl", pkl}, {"archive/byteorder", order}, {"archive/data/0", f32_bytes({1, 2})}});
  };
  expect_error(with_order("big"), "big-endian checkpoints are not supported");
  expect_error(with_order("middle"), "unknown byteorder 'middle' in archive/byteorder");
  test::TempDir td;
  test::write_file(td.file("le.pt"), with_order("little"));
  auto t = load_torch_state_dict(td.file("le.pt"));
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(to_f32(t[0].second), (std::vector<float>{1, 2}));
}

// ------------------------------------------------------------------------------------------------------------------
// Pickle contents inside a valid archive

TEST(TorchZip, TruncatedPickleAtEveryByte) {
  for (const char* f : {"state_dict.pt", "state_dict_p4.pt"}) {
    auto ms = members_of(fixture(f));
    const std::string pkl = member(ms, "/data.pkl");
    test::TempDir td;
    const std::string p = td.file("cut.pt");
    for (size_t cut = 0; cut < pkl.size(); ++cut) {
      member(ms, "/data.pkl") = pkl.substr(0, cut);
      test::write_file(p, make_zip(ms));
      try {
        load_torch_state_dict(p);
        ADD_FAILURE() << f << " cut at " << cut << " loaded";
      } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find(p + ": "), std::string::npos) << msg;
        EXPECT_NE(msg.find("/data.pkl at byte "), std::string::npos) << msg;
        EXPECT_NE(msg.find("truncated"), std::string::npos) << "cut " << cut << ": " << msg;
      }
    }
  }
}

TEST(TorchZip, UnknownOpcode) {
  auto ms = members_of(fixture("state_dict.pt"));
  std::string& pkl = member(ms, "/data.pkl");
  ASSERT_EQ(pkl.back(), '.');
  pkl.back() = '\xff';
  expect_error(make_zip(ms), "state_dict/data.pkl at byte " + std::to_string(pkl.size() - 1) + ": unknown opcode 0xff");
}

TEST(TorchZip, MissingStorage) {
  auto ms = members_of(fixture("state_dict.pt"));
  std::vector<Member> kept;
  for (const Member& m : ms)
    if (m.name != "state_dict/data/3") kept.push_back(m);
  expect_error(make_zip(kept), "tensor 'f64': storage '3' is missing (no entry 'state_dict/data/3' in the zip)");
}

TEST(TorchZip, StorageTooSmall) {
  const std::string data = f32_bytes({1, 2, 3, 4});
  // The persistent id claims more elements than the entry holds.
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", 5, 0, {5}, {1})}}), data),
               "tensor 'w': storage '0' declares 5 elements of 4 bytes, but its zip entry holds 16 bytes");
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", 2, 0, {2}, {1}, "DoubleStorage")}}), data.substr(0, 12)),
               "tensor 'w': storage '0' declares 2 elements of 8 bytes, but its zip entry holds 12 bytes");
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", -1, 0, {0}, {1})}}), data), "declares -1 elements");
  // Shape, stride or offset reach past the storage.
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", 4, 0, {2, 3}, {3, 1})}}), data),
               "tensor 'w': data range exceeds its storage (24 bytes needed, 16 available)");
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", 4, 3, {2}, {1})}}), data), "tensor 'w': data range exceeds its storage");
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", 4, 0, {2, 2}, {1, 3})}}), data), "tensor 'w': data range exceeds its storage");
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", 4, 1, {3}, {-1})}}), data), "tensor 'w': strides address before the storage");
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", 4, -1, {1}, {1})}}), data), "tensor 'w': negative storage offset");
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", 4, 0, {-2}, {1})}}), data), "tensor 'w': negative dimension");
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", 2, 0, {2}, {1}, "ComplexFloatStorage")}}), data),
               "tensor 'w': complex storage torch.ComplexFloatStorage is not supported");
  // A valid view at the very end of the storage is fine.
  test::TempDir td;
  test::write_file(td.file("ok.pt"), one_tensor_zip(p_dict({{"w", p_tensor("0", 4, 1, {3}, {1})}}), data));
  EXPECT_EQ(to_f32(load_torch_state_dict(td.file("ok.pt"))[0].second), (std::vector<float>{2, 3, 4}));
}

TEST(TorchZip, NotADictOfTensors) {
  const std::string data = f32_bytes({1, 2});
  expect_error(one_tensor_zip("\x80\x02](K\x01K\x02" "e.", data), "top-level object is a list(2), not a dict of tensors");
  expect_error(one_tensor_zip("\x80\x02" + p_tensor("0", 2, 0, {2}, {1}) + ".", data),
               "top-level object is a tensor F32 [2], not a dict of tensors");
  expect_error(one_tensor_zip(p_dict({{"epoch", p_int(3)}, {"args", "N"}}), data),
               "no state dict found: the top-level dict holds no tensors and no 'model', 'state_dict', 'model_state_dict' or "
               "'module' entry (keys: epoch, args)");
  expect_error(one_tensor_zip(p_dict({{"w", p_tensor("0", 2, 0, {2}, {1})}, {"w", p_tensor("0", 2, 0, {2}, {1})}}), data),
               "duplicate tensor name 'w'");
  // Storage references that are not ('storage', torch.<T>Storage, key, location, numel).
  const std::string bad_pid = p_global("torch._utils", "_rebuild_tensor_v2") + "(" + "(" + p_str("storage") +
                              p_global("torch", "FloatStorage") + p_str("0") + p_str("cpu") + "tQ" + p_int(0) +
                              p_ints({2}) + p_ints({1}) + "\x89" + "}" + "tR";
  expect_error(one_tensor_zip(p_dict({{"w", bad_pid}}), data),
               "tensor 'w': storage is not a ('storage', torch.<T>Storage, key, location, numel) persistent id");
  // Non-tensor entries of the selected dict are skipped; int keys become decimal names.
  test::TempDir td;
  test::write_file(td.file("mixed.pt"),
                   one_tensor_zip("\x80\x02}(" + p_str("w") + p_tensor("0", 2, 0, {2}, {1}) + p_str("n") + p_int(1) +
                                      "K\x07" + p_tensor("0", 2, 1, {1}, {1}) + "u.",
                                  data));
  auto t = load_torch_state_dict(td.file("mixed.pt"));
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].first, "w");
  EXPECT_EQ(t[1].first, "7");
  EXPECT_EQ(to_f32(t[1].second), std::vector<float>{2});
}

TEST(TorchZip, StateDictUnderOtherKeys) {
  const std::string data = f32_bytes({1, 2});
  const std::string sd = "}(" + p_str("w") + p_tensor("0", 2, 0, {2}, {1}) + "u";
  test::TempDir td;
  for (const char* key : {"state_dict", "model_state_dict", "module"}) {
    const std::string p = td.file(std::string(key) + ".pt");
    test::write_file(p, one_tensor_zip("\x80\x02}(" + p_str("epoch") + p_int(1) + p_str(key) + sd + "u.", data));
    auto t = load_torch_state_dict(p);
    ASSERT_EQ(t.size(), 1u) << key;
    EXPECT_EQ(t[0].first, "w");
  }
}

// ------------------------------------------------------------------------------------------------------------------
// The pickle machine alone

// pickle.dumps({'a': [1, -2, 2.5, 'xé\n\\u', None, True, False, (1, 2)], 'big': 12345678901234567890, 'neg': -5,
//               's': {3}, 'b': b'\x00\xff'}, protocol=0 and 2), by CPython 3.11.
const std::string kP0("(dp0\012Va\012p1\012(lp2\012I1\012aI-2\012aF2.5\012aVx\351\134u000a\134u005cu\012p3\012aNaI01\012aI00\012a(I1\012I2\012tp4\012asVbig\012p5\012L12345678901234567890L\012sVneg\012p6\012I-5\012sVs\012p7\012c__builtin__\012set\012p8\012((lp9\012I3\012atp10\012Rp11\012sVb\012p12\012c_codecs\012encode\012p13\012(V\134u0000\377\012p14\012Vlatin1\012p15\012tp16\012Rp17\012s.", 234);
const std::string kP2("\200\002}q\000(X\001\000\000\000aq\001]q\002(K\001J\376\377\377\377G@\004\000\000\000\000\000\000X\006\000\000\000x\303\251\012\134uq\003N\210\211K\001K\002\206q\004eX\003\000\000\000bigq\005\212\011\322\012\037\353\214\251T\253\000X\003\000\000\000negq\006J\373\377\377\377X\001\000\000\000sq\007c__builtin__\012set\012q\010]q\011K\003a\205q\012Rq\013X\001\000\000\000bq\014c_codecs\012encode\012q\015X\003\000\000\000\000\303\277q\016X\006\000\000\000latin1q\017\206q\020Rq\021u.", 190);

TEST(Pickle, Protocol0And2GiveTheSameValues) {
  using pickle::Kind;
  for (const std::string* bytes : {&kP0, &kP2}) {
    auto u = run_pickle(*bytes);
    const pickle::Value& r = *u.root;
    ASSERT_EQ(r.kind, Kind::Dict);
    ASSERT_EQ(r.dict.size(), 5u);
    const pickle::Value* a = r.get("a");
    ASSERT_TRUE(a && a->kind == Kind::List);
    ASSERT_EQ(a->items.size(), 8u);
    EXPECT_EQ(a->items[0]->integer, 1);
    EXPECT_EQ(a->items[1]->integer, -2);
    EXPECT_EQ(a->items[2]->kind, Kind::Float);
    EXPECT_EQ(a->items[2]->number, 2.5);
    EXPECT_EQ(a->items[3]->text, "x\xc3\xa9\n\\u");
    EXPECT_EQ(a->items[4]->kind, Kind::None);
    EXPECT_EQ(a->items[5]->kind, Kind::Bool);
    EXPECT_TRUE(a->items[5]->boolean);
    EXPECT_FALSE(a->items[6]->boolean);
    ASSERT_EQ(a->items[7]->kind, Kind::Tuple);
    EXPECT_EQ(a->items[7]->items[1]->integer, 2);
    EXPECT_EQ(r.get("big")->kind, Kind::BigInt);
    EXPECT_EQ(r.get("neg")->integer, -5);
    ASSERT_EQ(r.get("s")->kind, Kind::Set);
    EXPECT_EQ(r.get("s")->items[0]->integer, 3);
    ASSERT_EQ(r.get("b")->kind, Kind::Bytes);
    EXPECT_EQ(r.get("b")->text, std::string("\0\xff", 2));
  }
}

TEST(Pickle, IntegersAndFloats) {
  auto one = [](const std::string& body) { return run_pickle("\x80\x02" + body + "."); };
  EXPECT_EQ(one(std::string("\x8a\x00", 2)).root->integer, 0);
  EXPECT_EQ(one("\x8a\x01\xff").root->integer, -1);
  EXPECT_EQ(one("\x8a\x02\x00\x80"s).root->integer, -32768);  // two's complement
  EXPECT_EQ(one("\x8a\x03\x00\x80\x00"s).root->integer, 32768);
  EXPECT_EQ(one("\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f").root->integer, INT64_MAX);
  EXPECT_EQ(one(std::string("\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80", 10)).root->integer, INT64_MIN);
  EXPECT_EQ(one(std::string("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01", 11)).root->kind, pickle::Kind::BigInt);
  EXPECT_EQ(one(std::string("\x8b\x01\x00\x00\x00\x05", 6)).root->integer, 5);
  EXPECT_EQ(one("M\xff\xff").root->integer, 65535);
  EXPECT_EQ(one("J\xff\xff\xff\xff").root->integer, -1);
  EXPECT_EQ(one(std::string("G\xbf\xf0\x00\x00\x00\x00\x00\x00", 9)).root->number, -1.0);  // big-endian
  EXPECT_EQ(run_pickle("F-1e3\n.").root->number, -1000.0);
  EXPECT_EQ(run_pickle("I-9223372036854775808\n.").root->integer, INT64_MIN);
  EXPECT_EQ(run_pickle("L99999999999999999999L\n.").root->kind, pickle::Kind::BigInt);
  expect_pickle_error("Ix1\n.", "malformed integer 'x1'");
  expect_pickle_error("F1.5x\n.", "malformed float '1.5x'");
  expect_pickle_error(std::string("\x8b\xff\xff\xff\xff", 5), "LONG4 with negative length");
}

TEST(Pickle, OpaqueObjectsKeepArgumentsAndState) {
  // argparse.Namespace() via NEWOBJ, then BUILD with its __dict__; BUILD on a dict (state_dict _metadata) is ignored.
  auto u = run_pickle("\x80\x02]" + p_global("argparse", "Namespace") + ")\x81}(" + p_str("lr") + "G?\xb9\x99\x99\x99\x99\x99\x9a" +
                      "ub" + "a" + "}" + "}b" + "a.");
  ASSERT_EQ(u.root->items.size(), 2u);
  const pickle::Value& ns = *u.root->items[0];
  EXPECT_EQ(ns.kind, pickle::Kind::Object);
  EXPECT_EQ(pickle::describe(ns), "argparse.Namespace");
  ASSERT_NE(ns.items[2], nullptr);
  EXPECT_DOUBLE_EQ(ns.items[2]->get("lr")->number, 0.1);
  EXPECT_EQ(u.root->items[1]->kind, pickle::Kind::Dict);
  // numpy scalar: numpy.core.multiarray.scalar(numpy.dtype('f8'), _codecs.encode('...', 'latin1')).
  auto s = run_pickle("\x80\x02" + p_global("numpy.core.multiarray", "scalar") + p_global("numpy", "dtype") + p_str("f8") +
                      "\x89\x88\x87R" + p_global("_codecs", "encode") + p_str("\xc3\xa0?") + p_str("latin1") + "\x86R\x86R.");
  EXPECT_EQ(pickle::describe(*s.root), "numpy scalar");
  EXPECT_EQ(s.root->items[1]->items[1]->text, "\xe0?");
  // torch.Size is a tuple; OrderedDict with items; defaultdict with a factory.
  auto t = run_pickle("\x80\x02" + p_global("torch", "Size") + "K\x02K\x03\x86\x85R.");
  EXPECT_EQ(t.root->kind, pickle::Kind::Tuple);
  EXPECT_EQ(t.root->items.size(), 2u);
  auto od = run_pickle("\x80\x02" + p_global("collections", "OrderedDict") + "]" + p_str("k") + "K\x01\x86" + "a\x85R.");
  EXPECT_EQ(od.root->get("k")->integer, 1);
  auto dd = run_pickle("\x80\x02" + p_global("collections", "defaultdict") + p_global("__builtin__", "list") + "\x85R.");
  EXPECT_EQ(dd.root->kind, pickle::Kind::Dict);
}

TEST(Pickle, DisallowedGlobalsAreNamed) {
  expect_pickle_error("\x80\x02" "cos\nsystem\n" "X\x02\x00\x00\x00ls\x85R."s,
                      "at byte 2: pickle refers to global 'os.system', which is not allowed");
  expect_pickle_error("\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93.", "pickle refers to global 'builtins.eval', which is not allowed");
  expect_pickle_error("c__builtin__\ngetattr\n.", "pickle refers to global 'builtins.getattr', which is not allowed");
  expect_pickle_error("(isubprocess\nPopen\n.", "pickle refers to global 'subprocess.Popen', which is not allowed");
  expect_pickle_error("\x80\x02" "ctorch\nload\n.", "pickle refers to global 'torch.load', which is not allowed");
  expect_pickle_error("\x80\x02" "cos\nsys\x01tem\n.", "pickle refers to global 'os.sys\\x01tem', which is not allowed");
  // Only globals can be called.
  expect_pickle_error("\x80\x02])R.", "REDUCE calls a list(0); only allowlisted globals can be called");
  expect_pickle_error("\x80\x02" + p_global("argparse", "Namespace") + "]R.", "REDUCE arguments are a list(0), not a tuple");
  // The extension registry and out-of-band buffers are refused.
  expect_pickle_error("\x80\x02\x82\x01.", "extension registry opcodes (EXT1/EXT2/EXT4) are not supported");
  expect_pickle_error("\x80\x05\x97.", "out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER) are not supported");
  expect_pickle_error("\x80\x06.", "unsupported pickle protocol 6");
}

TEST(Pickle, MalformedPrograms) {
  expect_pickle_error("", "pickle ends without a STOP opcode (truncated)");
  expect_pickle_error(".", "stack underflow");
  expect_pickle_error("(.", "stack underflow");
  expect_pickle_error("t.", "no MARK on the stack");
  expect_pickle_error("K\x01(a.", "stack underflow");  // APPEND cannot reach below a MARK
  expect_pickle_error("K\x01K\x02" "a.", "APPEND to an int, not a list");
  expect_pickle_error("}K\x01u.", "no MARK on the stack");
  expect_pickle_error("}(K\x01u.", "SETITEMS with an odd number of items");
  expect_pickle_error("h\x05.", "memo key 5 is not defined");
  expect_pickle_error("q\x00."s, "stack underflow");
  expect_pickle_error("X\x02\x00\x00\x00\xc3(."s, "string is not valid UTF-8");
  expect_pickle_error(std::string("\x8d\xff\xff\xff\xff\xff\xff\xff\x7f", 9), "pickle is truncated (a length of 9223372036854775807");
  expect_pickle_error("X\xff\xff\xff\xff", "pickle is truncated (a length of 4294967295");
  expect_pickle_error(std::string("\x95\xff\x00\x00\x00\x00\x00\x00\x00.", 10), "frame of 255 bytes extends beyond the end");
  expect_pickle_error("S'abc\n.", "STRING argument is not a quoted string");
  expect_pickle_error("Vabc", "pickle is truncated (missing end of line)");
  expect_pickle_error("\x80\x02" + p_global("torch._utils", "_rebuild_tensor_v2") + "(K\x00K\x00)))t"s + "R.",
                      "_rebuild_tensor_v2: storage argument is an int, not a persistent id");
  // Protocol 0 strings with escapes.
  EXPECT_EQ(run_pickle("S'a\\n\\x41\\101\\\\'\n.").root->text, "a\nAA\\");
  EXPECT_EQ(run_pickle("V\\\\u0041\\u0042\n.").root->text, "\\\\u0041B");
}

TEST(Pickle, SelfReferenceNeitherLeaksNorRecurses) {
  // l = []; l.append(l)  and  d = {}; d['d'] = d
  auto u = run_pickle("\x80\x02]q\x00h\x00" "a."s);
  EXPECT_EQ(u.root->items[0], u.root);
  auto d = run_pickle("\x80\x02}q\x00X\x01\x00\x00\x00" "dh\x00s."s);
  EXPECT_EQ(d.root->get("d"), d.root);
  EXPECT_EQ(pickle::describe(*d.root), "dict");
}

TEST(Pickle, NestingAndSizeAreBounded) {
  // 20000 open MARKs: refused.
  expect_pickle_error(std::string(20000, '(') + ".", "more than 10000 nested MARKs");
  // 200000 levels of nested lists built through the memo (no MARKs): built without recursion, freed without it.
  std::string deep = "\x80\x02]q\x00"s;
  // Each step: new list N, memo[1] = N, current.append(N), pop current, push N (now current).
  for (int i = 0; i < 200000; ++i) deep += "]q\x01" "a0h\x01";
  deep += "0h\x00."s;
  {
    auto u = run_pickle(deep);
    EXPECT_EQ(u.root->kind, pickle::Kind::List);
    const pickle::Value* v = u.root;
    int depth = 0;
    while (!v->items.empty()) v = v->items[0], ++depth;
    EXPECT_EQ(depth, 200000);
  }
  // A stack limit.
  pickle::Limits small;
  small.max_stack = 100;
  expect_pickle_error(std::string(200, 'N') + ".", "stack deeper than 100 entries", small);
  // Copying a 1000-element list over and over (torch.Size(l), set(l)) is charged to the object budget.
  std::string bomb = "\x80\x02(" + std::string(1000, 'N') + "lq\x00"s;
  for (int i = 0; i < 5000; ++i) bomb += p_global("torch", "Size") + "h\x00\x85R0"s;
  bomb += "N.";
  expect_pickle_error(bomb, "pickle builds more than 4194304 objects");
  // Re-encoding one long string over and over is limited by the pickle's own size.
  std::string enc = "\x80\x02" + p_str(std::string(10000, 'a')) + "q\x00"s;
  for (int i = 0; i < 100; ++i) enc += p_global("_codecs", "encode") + "h\x00"s + p_str("latin1") + "\x86R0";
  enc += "N.";
  expect_pickle_error(enc, "pickle copies more string data than it contains");
  // Memo indices are keys, not array sizes: a huge index costs nothing.
  EXPECT_EQ(run_pickle("Nr\xff\xff\xff\xffj\xff\xff\xff\xff.").root->kind, pickle::Kind::None);
}

TEST(Pickle, RandomMutationsOnlyEverThrowError) {
  // A small in-tree fuzz pass (the libFuzzer target fuzz/fuzz_torch_zip.cpp goes much further).
  std::vector<std::string> seeds = {kP0, kP2};
  for (const char* f : {"state_dict.pt", "state_dict_p1.pt", "state_dict_p4.pt", "vim_like.pth"}) {
    auto ms = members_of(fixture(f));
    seeds.push_back(member(ms, "/data.pkl"));
  }
  std::mt19937 rng(7);
  int ok = 0, errors = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s = seeds[rng() % seeds.size()];
    const int edits = 1 + int(rng() % 4);
    for (int k = 0; k < edits && !s.empty(); ++k) {
      const size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0: s[at] = char(rng()); break;
        case 1: s.erase(at, 1 + rng() % 8); break;
        case 2: s.insert(at, 1, char(rng())); break;
      }
    }
    try {
      auto u = run_pickle(s);
      for (const pickle::TensorRef& t : u.tensors) EXPECT_EQ(t.shape.size(), t.strides.size());
      ++ok;
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
  EXPECT_GT(ok, 0);
}

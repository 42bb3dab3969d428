// safetensors: round trip and every kind of malformed file gives a one-line error naming the file and the reason.
#include <gtest/gtest.h>

#include <cstring>

#include "../test_util.h"
#include "core/error.h"
#include "io/safetensors.h"

using namespace ssmx;

namespace {

std::string make_file(const std::string& header, size_t data_bytes, bool pad = true) {
  std::string h = header;
  if (pad)
    while (h.size() % 8) h.push_back(' ');
  uint64_t n = h.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  out += h;
  out.append(data_bytes, '\0');
  return out;
}

// Expects read_safetensors(path) to throw an Error containing the path and `reason`.
void expect_error(const std::string& bytes, const std::string& reason) {
  test::TempDir td;
  const std::string p = td.file("bad.safetensors");
  test::write_file(p, bytes);
  try {
    read_safetensors(p);
    FAIL() << "no error for case expecting '" << reason << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
    EXPECT_NE(msg.find(reason), std::string::npos) << "message: " << msg << "\nexpected to contain: " << reason;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message must be one line: " << msg;
  }
}

}  // namespace

TEST(Safetensors, RoundTripAllFloatDtypes) {
  test::TempDir td;
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 7.0f};
  SafetensorsEntry f32 = make_f32_entry("a", {2, 3}, a.data());
  SafetensorsEntry bf{"b", DType::BF16, {3}, {}};
  SafetensorsEntry hf{"c", DType::F16, {3}, {}};
  for (float v : {1.0f, -2.5f, 0.1f}) {
    uint16_t x = float_to_bf16(v), y = float_to_half(v);
    bf.bytes.insert(bf.bytes.end(), reinterpret_cast<uint8_t*>(&x), reinterpret_cast<uint8_t*>(&x) + 2);
    hf.bytes.insert(hf.bytes.end(), reinterpret_cast<uint8_t*>(&y), reinterpret_cast<uint8_t*>(&y) + 2);
  }
  SafetensorsEntry scalar = make_f32_entry("s", {}, a.data());
  SafetensorsEntry empty = make_f32_entry("e", {0, 4}, nullptr);
  write_safetensors(td.file("x.safetensors"), {f32, bf, hf, scalar, empty}, {{"format", "pt"}});
  SafetensorsFile f = read_safetensors(td.file("x.safetensors"));
  ASSERT_EQ(f.tensors.size(), 5u);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  std::map<std::string, RawTensor> m(f.tensors.begin(), f.tensors.end());
  EXPECT_EQ(to_f32(m["a"]), a);
  EXPECT_NE(f32_view(m["a"]), nullptr);  // f32 is used in place
  std::vector<float> b = to_f32(m["b"]);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -2.5f);
  EXPECT_NEAR(b[2], 0.1f, 1e-3f);
  std::vector<float> c = to_f32(m["c"]);
  EXPECT_EQ(c[1], -2.5f);
  EXPECT_NEAR(c[2], 0.1f, 1e-4f);
  EXPECT_EQ(m["s"].shape.size(), 0u);
  EXPECT_EQ(to_f32(m["s"]), std::vector<float>{1.0f});
  EXPECT_EQ(m["e"].numel(), 0);
  // The header is padded so the data starts 8-byte aligned.
  uint64_t n;
  std::memcpy(&n, test::read_file(td.file("x.safetensors")).data(), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST(Safetensors, HalfAndBf16ConversionsAreExact) {
  // Every f16 bit pattern (finite) survives half -> float -> half.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    EXPECT_EQ(float_to_half(half_to_float(uint16_t(h))), h) << h;
  }
  EXPECT_EQ(half_to_float(0x3c00), 1.0f);
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3f80);  // tie to even
}

TEST(Safetensors, TruncatedFile) { expect_error("abc", "shorter than the 8-byte header length"); }

TEST(Safetensors, HeaderLengthLargerThanFile) {
  std::string f = make_file("{}", 0);
  uint64_t n = 4096;
  std::memcpy(f.data(), &n, 8);
  expect_error(f, "header length 4096 is larger than the file");
}

TEST(Safetensors, HugeHeaderLength) {
  std::string f = make_file("{}", 0);
  uint64_t n = uint64_t(1) << 62;
  std::memcpy(f.data(), &n, 8);
  expect_error(f, "exceeds the 100 MB limit");
}

TEST(Safetensors, InvalidJson) { expect_error(make_file("{\"a\": [1, 2", 0), "header is not valid JSON"); }

TEST(Safetensors, NotAnObject) { expect_error(make_file("[1,2,3]", 0), "not a JSON object"); }

TEST(Safetensors, DtypeShapeMismatchWithByteRange) {
  expect_error(make_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", 16),
               "byte range holds 16 bytes but dtype F32 and shape [2,3] need 24");
}

TEST(Safetensors, UnknownDtype) {
  expect_error(make_file(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2),
               "tensor 'w': dtype F8_E4M3 is not supported");
}

TEST(Safetensors, OutOfRangeOffsets) {
  expect_error(make_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
               "data_offsets end 16 is beyond the data buffer (8 bytes; truncated?)");
}

TEST(Safetensors, OverlappingOffsets) {
  expect_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         12),
               "byte range overlaps another tensor");
}

TEST(Safetensors, GapInBuffer) {
  expect_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "gap in the data buffer");
}

TEST(Safetensors, NegativeShapeAndBadOffsets) {
  expect_error(make_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "non-negative integers");
  expect_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8), "is after end");
  expect_error(make_file(R"({"a":{"dtype":"F32","shape":[1]}})", 4), "missing data_offsets");
}

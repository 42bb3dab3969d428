#include <gtest/gtest.h>

#include "../test_util.h"
#include "core/error.h"
#include "io/npy.h"

using namespace ssmx;

TEST(Npy, RoundTripShapes) {
  test::TempDir td;
  for (std::vector<int64_t> shape : {std::vector<int64_t>{5}, {3, 4}, {2, 3, 4}, {0, 7}}) {
    Tensor t(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.data[size_t(i)] = float(i) * 0.5f - 3.0f;
    write_npy(td.file("a.npy"), t);
    const std::string raw = test::read_file(td.file("a.npy"));
    EXPECT_EQ(raw.substr(0, 6), "\x93NUMPY");
    EXPECT_EQ((raw.size() - size_t(t.numel()) * 4) % 64, 0u);  // header padded to 64 bytes
    Tensor r = read_npy_f32(td.file("a.npy"));
    EXPECT_EQ(r.shape, shape);
    EXPECT_EQ(r.data, t.data);
  }
  // The 1-D header uses the Python tuple spelling "(5,)".
  Tensor one({5});
  write_npy(td.file("b.npy"), one);
  EXPECT_NE(test::read_file(td.file("b.npy")).find("'shape': (5,)"), std::string::npos);
}

TEST(Npy, BadFilesAreRejected) {
  test::TempDir td;
  test::write_file(td.file("x.npy"), "not numpy at all");
  try {
    read_npy_f32(td.file("x.npy"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad magic"), std::string::npos);
  }
  Tensor t({4});
  write_npy(td.file("t.npy"), t);
  std::string raw = test::read_file(td.file("t.npy"));
  test::write_file(td.file("t2.npy"), raw.substr(0, raw.size() - 3));
  try {
    read_npy_f32(td.file("t2.npy"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("but shape needs 16"), std::string::npos) << e.what();
  }
}

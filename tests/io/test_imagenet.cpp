// ImageNet validation lists and the ImageNet-Segmentation .mat reader on the fixtures of
// scripts/make_eval_data_fixtures.py, and on damaged copies.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/imagenet.h"
#include "../test_util.h"

namespace fs = std::filesystem;

namespace ssmx {
namespace {

std::string eval_dir() { return test::data_dir() + "/eval"; }

std::string read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_all(const std::string& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

TEST(ImagenetFolder, SortedClassesAndFiles) {
  const auto d = read_imagenet_folder(eval_dir() + "/imagenet/val");
  EXPECT_EQ(d.classes, (std::vector<std::string>{"n01440764", "n01443537", "n02102040"}));
  ASSERT_EQ(d.images.size(), 5u);
  const std::vector<std::pair<std::string, int>> want = {{"n01440764/ILSVRC2012_val_00000293.JPEG", 0},
                                                         {"n01443537/ILSVRC2012_val_00000236.JPEG", 1},
                                                         {"n01443537/ILSVRC2012_val_00000262.JPEG", 1},
                                                         {"n02102040/ILSVRC2012_val_00000003.JPEG", 2},
                                                         {"n02102040/ILSVRC2012_val_00000007.JPEG", 2}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(d.images[i].path, eval_dir() + "/imagenet/val/" + want[i].first);
    EXPECT_EQ(d.images[i].label, want[i].second);
  }
}

TEST(ImagenetFolder, Errors) {
  EXPECT_THROW(read_imagenet_folder(eval_dir() + "/does-not-exist"), Error);
  test::TempDir t;
  EXPECT_THROW(read_imagenet_folder(t.path()), Error);  // no class folders
  fs::create_directory(t.file("n0001"));
  write_all(t.file("n0001/readme.txt"), "x");
  try {
    read_imagenet_folder(t.path());
    FAIL() << "empty class folder accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("n0001"), std::string::npos);
  }
}

TEST(ImagenetFlat, TextAndCsvLabels) {
  const std::string dir = eval_dir() + "/imagenet/flat";
  for (const char* lab : {"flat_labels.txt", "flat_labels.csv"}) {
    const auto v = read_imagenet_flat(dir, eval_dir() + "/imagenet/" + lab, -1);
    ASSERT_EQ(v.size(), 4u) << lab;
    const std::vector<int> want = {64, 969, 229, 808};
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(v[i].label, want[i]) << lab;
      EXPECT_EQ(fs::path(v[i].path).filename().string(), "ILSVRC2012_val_0000000" + std::to_string(i + 1) + ".JPEG");
    }
  }
}

TEST(ImagenetFlat, MalformedLabels) {
  const std::string dir = eval_dir() + "/imagenet/flat";
  test::TempDir t;
  write_all(t.file("short.txt"), "1\n2\n3\n");
  EXPECT_THROW(read_imagenet_flat(dir, t.file("short.txt")), Error);
  write_all(t.file("bad.txt"), "1\n2\nx3\n4\n");
  try {
    read_imagenet_flat(dir, t.file("bad.txt"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.txt:3"), std::string::npos) << e.what();
  }
  write_all(t.file("missing.csv"), "file,label\nILSVRC2012_val_00000001.JPEG,1\n");
  EXPECT_THROW(read_imagenet_flat(dir, t.file("missing.csv")), Error);
  write_all(t.file("dup.csv"), "file,label\nILSVRC2012_val_00000001.JPEG,1\nILSVRC2012_val_00000001.JPEG,2\n");
  EXPECT_THROW(read_imagenet_flat(dir, t.file("dup.csv")), Error);
  EXPECT_THROW(read_imagenet_flat(dir, t.file("nope.txt")), Error);
}

TEST(SegmentationDataset, ReadsTheMatFile) {
  SegmentationDataset ds(eval_dir() + "/gtsegs_ijcv.mat");
  std::ifstream f(eval_dir() + "/seg_expected.json");
  const auto j = nlohmann::json::parse(f);
  ASSERT_EQ(ds.size(), 3);
  ASSERT_EQ(j.size(), 3u);
  for (int64_t i = 0; i < 3; ++i) {
    const auto& e = j[size_t(i)];
    const Image im = ds.image(i);
    EXPECT_EQ(im.h, e["h"].get<int>());
    EXPECT_EQ(im.w, e["w"].get<int>());
    EXPECT_EQ(im.px, e["img"].get<std::vector<uint8_t>>()) << i;
    EXPECT_EQ(ds.mask(i), e["mask"].get<std::vector<uint8_t>>()) << i;
    EXPECT_EQ(ds.mask_shape(i), std::make_pair(e["h"].get<int>(), e["w"].get<int>()));
    const auto s = ds.sample(i);
    EXPECT_EQ(s.mask, ds.mask(i));
  }
  // The fixture images are not square, so a transposition mistake cannot pass.
  EXPECT_NE(ds.image(0).h, ds.image(0).w);
  EXPECT_THROW(ds.image(3), Error);
  EXPECT_THROW(ds.mask(-1), Error);
}

TEST(SegmentationDataset, RefusesDamagedFiles) {
  const std::string good = read_all(eval_dir() + "/gtsegs_ijcv.mat");
  ASSERT_GT(good.size(), 2048u);
  test::TempDir t;
  EXPECT_THROW(SegmentationDataset(t.file("absent.mat")), Error);
  write_all(t.file("text.mat"), "MATLAB 5.0 MAT-file, not HDF5");
  EXPECT_THROW(SegmentationDataset(t.file("text.mat")), Error);
  // Truncations at several points: either the constructor or the first reads must throw, never crash.
  for (size_t cut : {size_t(600), good.size() / 2, good.size() - 100}) {
    write_all(t.file("cut.mat"), good.substr(0, cut));
    bool threw = false;
    try {
      SegmentationDataset ds(t.file("cut.mat"));
      for (int64_t i = 0; i < ds.size(); ++i) {
        ds.image(i);
        ds.mask(i);
      }
    } catch (const Error& e) {
      threw = true;
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
    EXPECT_TRUE(threw) << "truncated at " << cut;
  }
  // Some flipped bytes in the data region must not crash (an error, or different values).
  std::string flipped = good;
  for (size_t i = 1024; i < flipped.size(); i += 97) flipped[i] = char(flipped[i] ^ 0x5a);
  write_all(t.file("flip.mat"), flipped);
  try {
    SegmentationDataset ds(t.file("flip.mat"));
    for (int64_t i = 0; i < ds.size(); ++i) ds.sample(i);
  } catch (const Error&) {
  }
}

}  // namespace
}  // namespace ssmx

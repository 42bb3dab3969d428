// Image decoding and the DeiT evaluation transform against the PIL/torch fixtures of
// scripts/make_image_fixtures.py (tests/data/images/manifest.json).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "core/error.h"
#include "io/image.h"
#include "io/npy.h"

using namespace ssmx;
using nlohmann::json;

namespace {

std::string img_dir() { return test::data_dir() + "/images/"; }

json manifest() { return json::parse(test::read_file(img_dir() + "manifest.json")); }

bool is_jpeg_name(const std::string& f) { return f.size() > 4 && f.substr(f.size() - 4) == ".jpg"; }

// Number of differing bytes; -1 when the sizes differ.
int64_t count_diff(const Image& a, const Image& b) {
  if (a.w != b.w || a.h != b.h) return -1;
  int64_t n = 0;
  for (size_t i = 0; i < a.px.size(); ++i) n += a.px[i] != b.px[i];
  return n;
}

Image sub_image(const Image& src, int left, int top, int w, int h) {
  Image out(w, h);
  for (int y = 0; y < h; ++y)
    std::memcpy(&out.px[size_t(y) * size_t(w) * 3], &src.px[(size_t(y + top) * size_t(src.w) + size_t(left)) * 3], size_t(w) * 3);
  return out;
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no ssmx::Error, expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// A .npy file with the given header dict and payload.
std::string npy_bytes(const std::string& dict, const std::string& payload) {
  std::string h = dict;
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += char(h.size() & 0xFF), out += char(h.size() >> 8);
  return out + h + payload;
}

}  // namespace

TEST(ImageIo, PngDecodingMatchesPilConvertRgb) {
  // Grey, RGBA (alpha dropped, not composited) and palette-with-tRNS PNGs decode to PIL's convert("RGB") exactly.
  int checked = 0;
  const json m = manifest();
  for (const auto& c : m["cases"]) {
    const std::string f = c["file"];
    const Image img = load_image_rgb(img_dir() + f);
    EXPECT_EQ(img.w, c["width"].get<int>()) << f;
    EXPECT_EQ(img.h, c["height"].get<int>()) << f;
    if (is_jpeg_name(f) || !c.contains("decoded")) continue;
    EXPECT_EQ(count_diff(img, load_image_rgb(img_dir() + c["decoded"].get<std::string>())), 0) << f;
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

TEST(ImageIo, ShorterSideSizeIsTorchvisions) {
  EXPECT_EQ(shorter_side_size(640, 480, 256), std::make_pair(341, 256));  // int(341.33)
  EXPECT_EQ(shorter_side_size(300, 200, 256), std::make_pair(384, 256));
  EXPECT_EQ(shorter_side_size(97, 131, 256), std::make_pair(256, 345));   // int(345.73)
  EXPECT_EQ(shorter_side_size(333, 517, 256), std::make_pair(256, 397));
  EXPECT_EQ(shorter_side_size(500, 500, 256), std::make_pair(256, 256));
  EXPECT_EQ(shorter_side_size(300, 200, 73), std::make_pair(109, 73));
  const ImageTransform t224 = ImageTransform::deit_eval(224), t64 = ImageTransform::deit_eval(64),
                       t32 = ImageTransform::deit_eval(32);
  EXPECT_EQ(t224.resize, 256);
  EXPECT_EQ(t224.crop, 224);
  EXPECT_EQ(t64.resize, 73);  // int(64 / 0.875) = int(73.14)
  EXPECT_EQ(t64.crop, 64);
  EXPECT_EQ(t32.resize, 0);  // DeiT's resize_im is False for 32-pixel models
  EXPECT_EQ(t32.crop, 0);
}

TEST(ImageIo, BicubicResizeIsBitExactWithPil) {
  // Every PNG case: downscale (640x480, 333x517), upscale (300x200, 97x131, 150x100, 120x90), and the 73-pixel
  // resize of the tiny-model transform. Not one byte may differ.
  int checked = 0;
  const json m = manifest();
  for (const auto& c : m["cases"]) {
    const std::string f = c["file"];
    if (!c.contains("resized")) continue;
    const Image src = load_image_rgb(img_dir() + f);
    const Image want = load_image_rgb(img_dir() + c["resized"].get<std::string>());
    const auto [w, h] = shorter_side_size(src.w, src.h, c["resize"].get<int>());
    ASSERT_EQ(w, c["resized_width"].get<int>()) << f;
    ASSERT_EQ(h, c["resized_height"].get<int>()) << f;
    const Image got = resize_bicubic_pil(src, w, h);
    EXPECT_EQ(count_diff(got, want), 0) << f;
    ++checked;
  }
  EXPECT_EQ(checked, 7);
}

TEST(ImageIo, ResizeSpecialCases) {
  // Same size: a copy. One axis only: the other axis is untouched by PIL, so also here.
  Image a(5, 4);
  for (size_t i = 0; i < a.px.size(); ++i) a.px[i] = uint8_t(i * 37);
  EXPECT_EQ(resize_bicubic_pil(a, 5, 4).px, a.px);
  const Image wide = resize_bicubic_pil(a, 9, 4);
  EXPECT_EQ(wide.w, 9);
  EXPECT_EQ(wide.h, 4);
  // A constant image stays constant in both directions (weights sum to one in fixed point).
  Image flat(7, 3, Rgb{200, 10, 99});
  for (auto [w, h] : {std::pair{3, 2}, {20, 11}, {1, 1}}) {
    const Image r = resize_bicubic_pil(flat, w, h);
    for (size_t i = 0; i < r.px.size(); i += 3) {
      ASSERT_EQ(r.px[i], 200);
      ASSERT_EQ(r.px[i + 1], 10);
      ASSERT_EQ(r.px[i + 2], 99);
    }
  }
  expect_error([&] { resize_bicubic_pil(a, 0, 3); }, "cannot resize");
}

TEST(ImageIo, CenterCropOffsetsAndPadding) {
  const json m = manifest();
  for (const auto& c : m["cases"]) {
    const std::string f = c["file"];
    if (!c.contains("resized")) continue;
    const Image resized = load_image_rgb(img_dir() + c["resized"].get<std::string>());
    const int crop = c["crop"];
    const Image want = sub_image(resized, c["crop_left"].get<int>(), c["crop_top"].get<int>(), crop, crop);
    EXPECT_EQ(count_diff(center_crop(resized, crop, crop), want), 0) << f;
    // The whole uint8 pipeline from the file.
    ImageTransform t = ImageTransform::deit_eval(c["input_size"].get<int>());
    EXPECT_EQ(count_diff(transform_crop(load_image_rgb(img_dir() + f), t), want), 0) << f;
  }
  // 341 wide → 224: (341 - 224) / 2 = 58.5 rounds to 58 (Python's round, ties to even).
  EXPECT_EQ(m["cases"][0]["crop_left"].get<int>(), 58);
  // Crop larger than the image: zero padding split floor/ceil, as torchvision.
  const auto& pc = m["pad_case"];
  const Image src = load_image_rgb(img_dir() + pc["file"].get<std::string>());
  const Image want = load_image_rgb(img_dir() + pc["cropped"].get<std::string>());
  const int crop = pc["crop"];
  EXPECT_EQ(count_diff(center_crop(src, crop, crop), want), 0);
}

TEST(ImageIo, NormalisedTensorMatchesTorch) {
  int checked = 0;
  const json m = manifest();
  for (const auto& c : m["cases"]) {
    if (!c.contains("pixels")) continue;
    const std::string f = c["file"];
    const Tensor want = read_npy_f32(img_dir() + c["pixels"].get<std::string>());
    const PreparedImage p = load_and_preprocess(img_dir() + f, ImageTransform::deit_eval(c["input_size"].get<int>()));
    ASSERT_EQ(p.pixels.shape, want.shape) << f;
    ASSERT_EQ(p.crop.w, c["crop"].get<int>());
    double max_err = 0;
    for (int64_t i = 0; i < want.numel(); ++i)
      max_err = std::max(max_err, double(std::fabs(p.pixels.data[size_t(i)] - want.data[size_t(i)])));
    EXPECT_LE(max_err, 1e-6) << f;  // measured: exactly 0 (the same float32 operations in the same order)
    EXPECT_FLOAT_EQ(*std::min_element(want.data.begin(), want.data.end()), c["pixels_range"][0].get<float>());
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

TEST(ImageIo, JpegDecodingIsCloseToLibjpeg) {
  // stb_image and libjpeg (PIL) use different IDCTs, chroma upsampling and colour conversion, so decoded JPEG
  // pixels differ by a few levels. Measured on these fixtures (docs/images.md): RGB 4:2:0 quality 90: max 3, mean
  // 0.094 per byte (2.2 % of bytes off by more than 1); greyscale: max 1, mean 0.003. After the transform the
  // tensors differ by at most 0.052 (RGB) and 0.035 (grey), i.e. 3 and 2 uint8 levels: the bicubic lobes can
  // amplify a one-level step. The bounds leave a little room.
  const json m = manifest();
  for (const auto& c : m["cases"]) {
    const std::string f = c["file"];
    if (!is_jpeg_name(f)) continue;
    const Image got = load_image_rgb(img_dir() + f);
    const Image want = load_image_rgb(img_dir() + c["decoded"].get<std::string>());
    ASSERT_EQ(got.w, want.w);
    ASSERT_EQ(got.h, want.h);
    int max_d = 0;
    double sum = 0;
    for (size_t i = 0; i < got.px.size(); ++i) {
      const int d = std::abs(int(got.px[i]) - int(want.px[i]));
      max_d = std::max(max_d, d);
      sum += d;
    }
    const double mean = sum / double(got.px.size());
    const bool grey = c["mode"] == "grey";
    EXPECT_LE(max_d, grey ? 2 : 6) << f;
    EXPECT_LE(mean, grey ? 0.05 : 0.6) << f;
    // Through the transform the difference stays of the same size (resampling averages it down).
    const ImageTransform t = ImageTransform::deit_eval(224);
    const Tensor a = preprocess_image(got, t).pixels, b = preprocess_image(want, t).pixels;
    double tmax = 0;
    for (int64_t i = 0; i < a.numel(); ++i) tmax = std::max(tmax, double(std::fabs(a.data[size_t(i)] - b.data[size_t(i)])));
    EXPECT_LE(tmax, (grey ? 3 : 6) / 255.0 / 0.224) << f;
  }
}

TEST(ImageIo, BadFilesGiveErrors) {
  test::TempDir td;
  const std::string png = test::read_file(img_dir() + "rgb_300x200.png");
  const std::string jpg = test::read_file(img_dir() + "rgb_400x300.jpg");
  expect_error([&] { load_image_rgb(td.file("missing.png")); }, "cannot open");
  test::write_file(td.file("empty.png"), "");
  expect_error([&] { load_image_rgb(td.file("empty.png")); }, "empty file");
  test::write_file(td.file("text.png"), "this is not an image at all");
  expect_error([&] { load_image_rgb(td.file("text.png")); }, "not a JPEG or PNG");
  test::write_file(td.file("gif.gif"), "GIF89a\x01\x00\x01\x00\x00\x00\x00");
  expect_error([&] { load_image_rgb(td.file("gif.gif")); }, "not a JPEG or PNG");
  // Truncated at several points: inside the signature, in IHDR, inside IDAT, just before IEND.
  for (size_t cut : {size_t(5), size_t(20), png.size() / 2, png.size() - 12}) {
    test::write_file(td.file("cut.png"), png.substr(0, cut));
    EXPECT_THROW(load_image_rgb(td.file("cut.png")), Error) << cut;
  }
  test::write_file(td.file("cut.png"), png.substr(0, png.size() / 2));
  expect_error([&] { load_image_rgb(td.file("cut.png")); }, "truncated PNG");
  for (size_t cut : {size_t(2), size_t(100), jpg.size() / 2, jpg.size() - 2}) {
    test::write_file(td.file("cut.jpg"), jpg.substr(0, cut));
    EXPECT_THROW(load_image_rgb(td.file("cut.jpg")), Error) << cut;
  }
  test::write_file(td.file("cut.jpg"), jpg.substr(0, jpg.size() / 2));
  expect_error([&] { load_image_rgb(td.file("cut.jpg")); }, "truncated JPEG");
  // Huge dimensions in the header are refused before any pixel memory is allocated.
  {
    std::string huge = png;  // IHDR width at bytes 16..19 (stb ignores the CRC)
    huge[16] = 0, huge[17] = 0, huge[18] = char(0x4E), huge[19] = char(0x20);  // 20000
    test::write_file(td.file("huge.png"), huge);
    expect_error([&] { load_image_rgb(td.file("huge.png")); }, "20000x200 pixels; the limit is 16384");
  }
  {
    std::string huge = jpg;
    const size_t sof = huge.find("\xFF\xC0");
    ASSERT_NE(sof, std::string::npos);
    huge[sof + 5] = char(0x75), huge[sof + 6] = char(0x30);  // height 30000
    test::write_file(td.file("huge.jpg"), huge);
    expect_error([&] { load_image_rgb(td.file("huge.jpg")); }, "400x30000 pixels");
  }
  // In memory: the error names the given source.
  expect_error([&] { decode_image_rgb(reinterpret_cast<const uint8_t*>(png.data()), 30, "upload"); }, "upload: ");
}

TEST(ImageIo, PixelsNpyReader) {
  test::TempDir td;
  Tensor good({3, 4, 5});
  for (int64_t i = 0; i < good.numel(); ++i) good.data[size_t(i)] = float(i) * 0.25f - 2.0f;
  write_npy(td.file("good.npy"), good);
  Tensor r = load_pixels_npy(td.file("good.npy"));
  EXPECT_EQ(r.shape, good.shape);
  EXPECT_EQ(r.data, good.data);
  EXPECT_EQ(load_pixels_npy(td.file("good.npy"), 4, 5).shape, good.shape);
  expect_error([&] { load_pixels_npy(td.file("good.npy"), 224, 224); }, "model needs [3, 224, 224]");
  // [1, 3, H, W] is squeezed.
  Tensor batch({1, 3, 4, 5});
  write_npy(td.file("batch.npy"), batch);
  EXPECT_EQ(load_pixels_npy(td.file("batch.npy")).shape, (std::vector<int64_t>{3, 4, 5}));
  // HWC layout, 2-D, 4 channels.
  for (std::vector<int64_t> shape : {std::vector<int64_t>{4, 5, 3}, {3, 20}, {4, 4, 5}, {2, 3, 4, 5}, {3, 0, 5}}) {
    write_npy(td.file("bad.npy"), Tensor(shape));
    expect_error([&] { load_pixels_npy(td.file("bad.npy")); }, "[3, H, W]");
  }
  // float64, int and big-endian payloads.
  test::write_file(td.file("f8.npy"), npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 1, 1), }", std::string(24, '\0')));
  expect_error([&] { load_pixels_npy(td.file("f8.npy")); }, "need float32 '<f4'");
  test::write_file(td.file("be.npy"), npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (3, 1, 1), }", std::string(12, '\0')));
  expect_error([&] { load_pixels_npy(td.file("be.npy")); }, "dtype >f4");
  test::write_file(td.file("u8.npy"), npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 1, 1), }", std::string(3, '\0')));
  expect_error([&] { load_pixels_npy(td.file("u8.npy")); }, "dtype |u1");
  test::write_file(td.file("fo.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2, 2), }", std::string(48, '\0')));
  expect_error([&] { load_pixels_npy(td.file("fo.npy")); }, "Fortran");
  // Payload shorter or longer than the shape says, and an absurd shape: refused before allocating.
  test::write_file(td.file("short.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2, 2), }", std::string(40, '\0')));
  expect_error([&] { load_pixels_npy(td.file("short.npy")); }, "shape needs 48");
  test::write_file(td.file("long.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1, 1), }", std::string(16, '\0')));
  expect_error([&] { load_pixels_npy(td.file("long.npy")); }, "shape needs 12");
  test::write_file(td.file("big.npy"), npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 100000000, 100000000), }", std::string(12, '\0')));
  EXPECT_THROW(load_pixels_npy(td.file("big.npy")), Error);
  test::write_file(td.file("magic.npy"), "\x93NUMPX garbage");
  expect_error([&] { load_pixels_npy(td.file("magic.npy")); }, "bad magic");
  // Non-finite pixels.
  good.data[7] = std::nanf("");
  write_npy(td.file("nan.npy"), good);
  expect_error([&] { load_pixels_npy(td.file("nan.npy")); }, "non-finite value at flat index 7");
}

TEST(ImageIo, StressAgainstPil) {
  // Opt-in: `/usr/bin/python3 scripts/make_image_fixtures.py --stress DIR` writes 300 random images s<k>.png and
  // PIL's bicubic resizes r<k>.png; measured: all 300 (24.6 million bytes) identical.
  const char* dir = std::getenv("SSMX_IMAGE_STRESS_DIR");
  if (!dir) GTEST_SKIP() << "set SSMX_IMAGE_STRESS_DIR to a directory written by make_image_fixtures.py --stress";
  int cases = 0;
  for (int k = 0;; ++k) {
    const std::string s = std::string(dir) + "/s" + std::to_string(k) + ".png", r = std::string(dir) + "/r" + std::to_string(k) + ".png";
    if (!std::filesystem::exists(s)) break;
    const Image src = load_image_rgb(s), want = load_image_rgb(r);
    EXPECT_EQ(count_diff(resize_bicubic_pil(src, want.w, want.h), want), 0)
        << "case " << k << ": " << src.w << "x" << src.h << " -> " << want.w << "x" << want.h;
    ++cases;
  }
  EXPECT_GT(cases, 0);
}

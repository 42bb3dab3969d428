// Upsampling against torch (tests/data/images/upsample_*, scripts/make_image_fixtures.py), overlay colours at known
// pixels, colour bar and figure geometry.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "core/error.h"
#include "io/image.h"
#include "io/npy.h"
#include "render/overlay.h"

using namespace ssmx;

namespace {

Rgb px(const Image& img, int x, int y) {
  const uint8_t* p = &img.px[size_t(y * img.w + x) * 3];
  return Rgb{p[0], p[1], p[2]};
}

void expect_rgb_near(Rgb got, int r, int g, int b, int tol = 0) {
  EXPECT_NEAR(int(got.r), r, tol);
  EXPECT_NEAR(int(got.g), g, tol);
  EXPECT_NEAR(int(got.b), b, tol);
}

}  // namespace

TEST(Overlay, UpsampleMatchesTorchBilinear) {
  const std::string dir = test::data_dir() + "/images/";
  const Tensor in = read_npy_f32(dir + "upsample_14x14.npy");
  const Tensor want = read_npy_f32(dir + "upsample_14x14_224.npy");
  ASSERT_EQ(in.shape, (std::vector<int64_t>{14, 14}));
  ASSERT_EQ(want.shape, (std::vector<int64_t>{224, 224}));
  const std::vector<float> got = upsample_bilinear(in.ptr(), 14, 14, 224, 224);
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, double(std::fabs(got[i] - want.data[i])));
  EXPECT_LE(err, 1e-6);  // measured 4.8e-7: one float32 ulp at values near 3 (summation order)
  // A non-integer factor on a non-square map.
  const auto m = nlohmann::json::parse(test::read_file(dir + "manifest.json"))["upsample_small"];
  const std::vector<float> sin = m["in"].get<std::vector<float>>(), sout = m["out"].get<std::vector<float>>();
  const std::vector<float> g2 = upsample_bilinear(sin.data(), m["in_h"], m["in_w"], m["out_h"], m["out_w"]);
  ASSERT_EQ(g2.size(), sout.size());
  double err2 = 0;
  for (size_t i = 0; i < g2.size(); ++i) err2 = std::max(err2, double(std::fabs(g2[i] - sout[i])));
  EXPECT_LE(err2, 1e-6);
  EXPECT_THROW(upsample_bilinear(sin.data(), 0, 7, 4, 4), Error);
}

TEST(Overlay, JetColourMap) {
  expect_rgb_near(colormap_jet(0.0f), 0, 0, 128);     // dark blue
  expect_rgb_near(colormap_jet(0.25f), 0, 128, 255);
  expect_rgb_near(colormap_jet(0.5f), 128, 255, 128);
  expect_rgb_near(colormap_jet(0.75f), 255, 128, 0);
  expect_rgb_near(colormap_jet(1.0f), 128, 0, 0);     // dark red
  expect_rgb_near(colormap_jet(NAN), 0, 0, 128);
  expect_rgb_near(colormap_jet(7.0f), 128, 0, 0);
}

TEST(Overlay, AlphaBlendAtKnownPixels) {
  // 4x4 grey image (100), relevance equal to the column index (0..3) on every row: t = x / 3.
  Image img(4, 4, Rgb{100, 100, 100});
  float map[16];
  for (int i = 0; i < 16; ++i) map[i] = float(i % 4) * 2.0f - 1.0f;  // -1, 1, 3, 5: min-max makes it x / 3
  OverlayOptions o;
  o.colorbar = false;
  const Image out = overlay_heatmap(img, map, 4, 4, o);
  ASSERT_EQ(out.w, 4);
  ASSERT_EQ(out.h, 4);
  expect_rgb_near(px(out, 0, 0), 100, 100, 100);  // t = 0: opacity 0, the image itself
  // t = 1: 0.4 · 100 + 0.6 · jet(1) = 0.4 · 100 + 0.6 · (128, 0, 0)
  expect_rgb_near(px(out, 3, 2), 117, 40, 40, 1);
  // t = 1/3: a = 0.2, jet(1/3) = (0, 212.5, 255)
  expect_rgb_near(px(out, 1, 3), 80, 123, 131, 1);
  // Constant opacity.
  o.alpha_by_relevance = false;
  o.alpha = 1.0f;
  expect_rgb_near(px(overlay_heatmap(img, map, 4, 4, o), 0, 1), 0, 0, 128);
  // |value|: the -1 column becomes 1 (second smallest), the 1 column too.
  o.absolute = true;
  const Image ab = overlay_heatmap(img, map, 4, 4, o);
  EXPECT_EQ(ab.px[0], ab.px[3]);  // columns 0 and 1 are equal under |.|
}

TEST(Overlay, PatchMapIsUpsampledToTheImage) {
  // 2x2 patches on an 8x8 image: bilinear upsampling makes the corners the extremes, the centre in between.
  Image img(8, 8, Rgb{0, 0, 0});
  const float map[4] = {0.0f, 1.0f, 1.0f, 2.0f};
  OverlayOptions o;
  o.colorbar = false;
  o.alpha_by_relevance = false;
  o.alpha = 1.0f;
  const Image out = overlay_heatmap(img, map, 2, 2, o);
  ASSERT_EQ(out.w, 8);
  expect_rgb_near(px(out, 0, 0), 0, 0, 128);  // minimum
  expect_rgb_near(px(out, 7, 7), 128, 0, 0);  // maximum
  const Rgb mid = colormap_jet(0.5f);
  expect_rgb_near(px(out, 3, 4), mid.r, mid.g, mid.b, 40);  // upsampled value 1.0 at the centre line
}

TEST(Overlay, AdditiveBlendLikeTheNotebooks) {
  // Image 0..255 ramp by column; map = t by column (0 and 1 only). cam = jet(t)/255 + img01, / max.
  Image img(2, 1);
  img.set(0, 0, Rgb{0, 0, 0});
  img.set(1, 0, Rgb{255, 255, 255});
  const float map[2] = {0.0f, 1.0f};
  OverlayOptions o;
  o.colorbar = false;
  o.blend = OverlayOptions::Blend::Additive;
  const Image out = overlay_heatmap(img, map, 1, 2, o);
  // Column 1: jet(1) = (128, 0, 0)/255 + 1 → (1.502, 1, 1); max 1.502. Column 0: jet(0) = (0, 0, 128)/255 + 0.
  expect_rgb_near(px(out, 1, 0), 255, 169, 169, 1);
  expect_rgb_near(px(out, 0, 0), 0, 0, 85, 1);
}

TEST(Overlay, ColourBarAndLabels) {
  Image img(40, 50, Rgb{255, 255, 255});
  std::vector<float> map(40 * 50);
  for (size_t i = 0; i < map.size(); ++i) map[i] = float(i) / 1999.0f * 0.5f - 0.25f;
  const Image out = overlay_heatmap(img, map.data(), 50, 40, OverlayOptions{});
  EXPECT_EQ(out.h, 50);
  const Image bar = colorbar_image(50, -0.25f, 0.25f);
  EXPECT_EQ(out.w, 40 + 6 + bar.w);
  EXPECT_GE(bar.w, 2 + 12 + 4 + text_width("-0.25"));
  // Bar: jet(1) at the top, jet(0) at the bottom, in the column after the 2-pixel margin.
  expect_rgb_near(px(bar, 5, 0), 128, 0, 0);
  expect_rgb_near(px(bar, 5, 49), 0, 0, 128);
  expect_rgb_near(px(out, 40 + 6 + 5, 0), 128, 0, 0);
  // The labels put dark pixels right of the bar, near the top and near the bottom.
  auto dark_rows = [&](int y0, int y1) {
    int n = 0;
    for (int y = y0; y < y1; ++y)
      for (int x = 18; x < bar.w; ++x) n += px(bar, x, y).r == 0;
    return n;
  };
  EXPECT_GT(dark_rows(0, 8), 5);
  EXPECT_GT(dark_rows(42, 50), 5);
  EXPECT_EQ(dark_rows(15, 35), 0);
}

TEST(Overlay, MethodGridGeometry) {
  GridOptions g;  // one row, pad 8, title band 12
  EXPECT_EQ(grid_title_height(g), 12);
  std::vector<std::pair<std::string, Image>> panels = {
      {"input", Image(224, 224, Rgb{10, 20, 30})}, {"mamba-attr", Image(224, 224)}, {"a very long method title that does not fit", Image(224, 224)}};
  const Image fig = method_grid(panels, g);
  EXPECT_EQ(fig.w, 8 + 3 * (224 + 8));
  EXPECT_EQ(fig.h, 8 + 12 + 224 + 8);
  // The first panel sits below its title band.
  expect_rgb_near(px(fig, 8, 8 + 12), 10, 20, 30);
  expect_rgb_near(px(fig, 8 + 223, 8 + 12 + 223), 10, 20, 30);
  expect_rgb_near(px(fig, 8, 8 + 11), 255, 255, 255);
  // Title text is drawn in the band above the panel (dark pixels), and only there.
  int dark = 0;
  for (int y = 8; y < 8 + 12; ++y)
    for (int x = 8; x < 8 + 224; ++x) dark += px(fig, x, y).r == 0;
  EXPECT_GT(dark, 10);
  // Two columns, title scale 2: 2 rows of cells.
  g.cols = 2;
  g.title_scale = 2;
  const Image fig2 = method_grid(panels, g);
  EXPECT_EQ(fig2.w, 8 + 2 * (224 + 8));
  EXPECT_EQ(fig2.h, 8 + 2 * (20 + 224 + 8));
  EXPECT_THROW(method_grid({}, g), Error);
}

TEST(Overlay, ExplanationFigureFromPatchMaps) {
  Image crop(224, 224, Rgb{90, 90, 90});
  std::vector<float> a(196), b(196);
  for (int i = 0; i < 196; ++i) a[size_t(i)] = float(i), b[size_t(i)] = float(195 - i);
  OverlayOptions o;
  o.colorbar = false;
  const Image fig = explanation_figure(crop, "", {{"rollout", a}, {"mamba-attr", b}}, 14, 14, o);
  EXPECT_EQ(fig.w, 8 + 3 * (224 + 8));
  EXPECT_EQ(fig.h, 8 + 12 + 224 + 8);
  const int y = 8 + 12;
  expect_rgb_near(px(fig, 8 + 100, y + 100), 90, 90, 90);  // the image panel
  // Map a grows to the bottom right, b to the top left: opposite corners of panels 2 and 3.
  EXPECT_EQ(px(fig, 8 + 232, y).r, px(fig, 8 + 2 * 232 + 223, y + 223).r);
  EXPECT_GT(px(fig, 8 + 232 + 223, y + 223).r, px(fig, 8 + 232, y).r);
  EXPECT_THROW(explanation_figure(crop, "", {{"bad", std::vector<float>(10)}}, 14, 14, o), Error);
  // A PNG file round trip through the project's writer and the image decoder.
  test::TempDir td;
  write_png(td.file("fig.png"), fig);
  const Image back = load_image_rgb(td.file("fig.png"));
  EXPECT_EQ(back.px, fig.px);
}

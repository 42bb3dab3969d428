#include <gtest/gtest.h>

#include "../test_util.h"
#include "render/image.h"

using namespace ssmx;

TEST(Render, HeatmapIsMinMaxNormalisedPerMap) {
  // A 2x2 map: the smallest |value| gets the first colour of the map, the largest the last.
  const float m[4] = {0.0f, -2.0f, 1.0f, 4.0f};
  HeatmapStyle st;
  st.cell = 10;
  Image img = render_heatmap(m, 2, 2, st);
  auto px = [&](int x, int y) {
    const uint8_t* p = &img.px[size_t(y * img.w + x) * 3];
    return Rgb{p[0], p[1], p[2]};
  };
  const Rgb lo = colormap_viridis(0.0f), hi = colormap_viridis(1.0f);
  // Cells start at (4, 4): cell (0,0) holds 0 (min), cell (1,1) holds 4 (max).
  EXPECT_EQ(px(9, 9).r, lo.r);
  EXPECT_EQ(px(9, 9).g, lo.g);
  EXPECT_EQ(px(19, 19).g, hi.g);
  EXPECT_EQ(px(19, 19).b, hi.b);
  // Scaling by a constant changes nothing.
  const float m2[4] = {0.0f, -20.0f, 10.0f, 40.0f};
  Image img2 = render_heatmap(m2, 2, 2, st);
  EXPECT_EQ(img.px, img2.px);
}

TEST(Render, TextAndPngFile) {
  Image img(60, 20);
  draw_text(img, 2, 2, "ab", Rgb{0, 0, 0});
  int dark = 0;
  for (size_t i = 0; i < img.px.size(); i += 3) dark += img.px[i] == 0;
  EXPECT_GT(dark, 5);
  EXPECT_GT(text_width("abc"), text_width("a"));
  test::TempDir td;
  write_png(td.file("x.png"), img);
  const std::string raw = test::read_file(td.file("x.png"));
  EXPECT_EQ(raw.substr(1, 3), "PNG");
}

TEST(Render, GridPlacesTiles) {
  Image a(10, 10, Rgb{255, 0, 0}), b(20, 5, Rgb{0, 255, 0});
  Image g = image_grid({a, b, a}, 2, 2);
  EXPECT_EQ(g.w, 2 + 10 + 2 + 20 + 2);
  EXPECT_EQ(g.h, 2 + 10 + 2 + 10 + 2);
  EXPECT_EQ(g.px[size_t((2 * g.w + 2) * 3)], 255);  // red tile at (2, 2)
}

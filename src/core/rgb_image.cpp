#include "core/rgb_image.h"

#include <algorithm>

namespace ssmx {

Image::Image(int width, int height, Rgb fill) : w(width), h(height), px(size_t(width) * size_t(height) * 3) {
  for (size_t i = 0; i < px.size(); i += 3) px[i] = fill.r, px[i + 1] = fill.g, px[i + 2] = fill.b;
}

void Image::fill_rect(int x, int y, int rw, int rh, Rgb c) {
  for (int yy = std::max(0, y); yy < std::min(h, y + rh); ++yy)
    for (int xx = std::max(0, x); xx < std::min(w, x + rw); ++xx) set(xx, yy, c);
}

void Image::blit(const Image& src, int x, int y) {
  for (int yy = 0; yy < src.h; ++yy)
    for (int xx = 0; xx < src.w; ++xx) {
      const uint8_t* p = &src.px[size_t(yy * src.w + xx) * 3];
      set(x + xx, y + yy, Rgb{p[0], p[1], p[2]});
    }
}

}  // namespace ssmx

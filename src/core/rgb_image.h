// ssmx/core/rgb_image.h — the plain 8-bit RGB pixel buffer shared by image input (io/image.h) and picture output
// (render/image.h, render/overlay.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ssmx {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

struct Image {
  int w = 0, h = 0;
  std::vector<uint8_t> px;  // (h, w, 3)
  Image() = default;
  Image(int width, int height, Rgb fill = {255, 255, 255});
  void set(int x, int y, Rgb c) {
    if (x >= 0 && y >= 0 && x < w && y < h) {
      uint8_t* p = &px[size_t(y * w + x) * 3];
      p[0] = c.r, p[1] = c.g, p[2] = c.b;
    }
  }
  void fill_rect(int x, int y, int rw, int rh, Rgb c);
  void blit(const Image& src, int x, int y);
};

}  // namespace ssmx

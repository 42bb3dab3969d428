#include "render/image.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb/stb_image_write.h>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

namespace ssmx {

namespace {

Rgb lerp_table(const float (*tab)[3], int n, float v) {
  if (!(v >= 0.0f)) v = 0.0f;  // NaN too
  if (v > 1.0f) v = 1.0f;
  const float f = v * float(n - 1);
  const int i = std::min(n - 2, int(f));
  const float t = f - float(i);
  auto ch = [&](int c) { return uint8_t(std::lround(255.0f * (tab[i][c] * (1 - t) + tab[i + 1][c] * t))); };
  return Rgb{ch(0), ch(1), ch(2)};
}

// Anchor colours along the viridis map (dark purple → blue → green → yellow).
const float kViridis[][3] = {{0.267f, 0.005f, 0.329f}, {0.283f, 0.141f, 0.458f}, {0.254f, 0.265f, 0.530f},
                             {0.207f, 0.372f, 0.553f}, {0.164f, 0.471f, 0.558f}, {0.128f, 0.567f, 0.551f},
                             {0.135f, 0.659f, 0.518f}, {0.267f, 0.749f, 0.441f}, {0.478f, 0.821f, 0.318f},
                             {0.741f, 0.873f, 0.150f}, {0.993f, 0.906f, 0.144f}};
const float kDiverging[][3] = {{0.020f, 0.188f, 0.380f}, {0.263f, 0.576f, 0.765f}, {0.969f, 0.969f, 0.969f},
                               {0.839f, 0.376f, 0.302f}, {0.404f, 0.000f, 0.122f}};

std::string ascii_only(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c >= 0x80) {
      if ((c & 0xC0) == 0xC0) o += '?';  // one '?' per multi-byte character
    } else if (c < 0x20) {
      o += ' ';
    } else {
      o += char(c);
    }
  }
  return o;
}

}  // namespace

Rgb colormap_viridis(float v) { return lerp_table(kViridis, 11, v); }
Rgb colormap_diverging(float v) { return lerp_table(kDiverging, 5, 0.5f * (v + 1.0f)); }

int text_width(const std::string& text, int scale) {
  std::string a = ascii_only(text);
  return stb_easy_font_width(a.data()) * scale;
}

namespace {
template <typename Plot>
void raster_text(const std::string& text, Plot&& plot) {
  std::string a = ascii_only(text);
  std::vector<char> buf(a.size() * 300 + 1024);
  const int quads = stb_easy_font_print(0, 0, a.data(), nullptr, buf.data(), int(buf.size()));
  for (int q = 0; q < quads; ++q) {
    const float* v = reinterpret_cast<const float*>(buf.data() + size_t(q) * 64);  // 4 vertices × 16 bytes
    const float x0 = v[0], y0 = v[1], x1 = v[8], y1 = v[9];
    for (int yy = int(y0); yy < int(y1); ++yy)
      for (int xx = int(x0); xx < int(x1); ++xx) plot(xx, yy);
  }
}
}  // namespace

void draw_text(Image& img, int x, int y, const std::string& text, Rgb color, int scale) {
  raster_text(text, [&](int xx, int yy) { img.fill_rect(x + xx * scale, y + yy * scale, scale, scale, color); });
}

void draw_text_vertical(Image& img, int x, int y, const std::string& text, Rgb color, int scale) {
  // Rotate 90° counter-clockwise: glyph (gx, gy) → (x + gy, y - gx).
  raster_text(text, [&](int gx, int gy) { img.fill_rect(x + gy * scale, y - (gx + 1) * scale, scale, scale, color); });
}

Image render_heatmap(const float* m, int64_t rows, int64_t cols, const HeatmapStyle& st) {
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t k = 0; k < rows * cols; ++k) {
    float v = st.absolute ? std::fabs(m[k]) : m[k];
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  if (!(hi > lo)) hi = lo + 1.0f;
  int cell = st.cell;
  if (cell <= 0) cell = std::max<int>(1, int(320 / std::max<int64_t>(1, std::max(rows, cols))));
  const bool labels = !st.row_labels.empty() || !st.col_labels.empty();
  int left = 4, top = st.title.empty() ? 4 : 16, bottom = 4;
  if (labels) {
    int lw = 0;
    for (const auto& s : st.row_labels) lw = std::max(lw, text_width(s));
    int cw = 0;
    for (const auto& s : st.col_labels) cw = std::max(cw, text_width(s));
    left += lw + 4;
    bottom += cw + 4;
  }
  const int W = left + int(cols) * cell + 4, H = top + int(rows) * cell + bottom;
  Image img(std::max(W, text_width(st.title) + 8), H);
  if (!st.title.empty()) draw_text(img, 4, 4, st.title, Rgb{0, 0, 0});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float v = st.absolute ? std::fabs(m[r * cols + c]) : m[r * cols + c];
      float t = (v - lo) / (hi - lo);
      if (st.log_scale) t = (std::log10(std::max(t, 1e-4f)) + 4.0f) / 4.0f;
      img.fill_rect(left + int(c) * cell, top + int(r) * cell, cell, cell, colormap_viridis(t));
    }
  if (labels) {
    const int step = std::max(1, 7 / cell);  // skip labels when rows are thinner than the font
    for (size_t r = 0; r < st.row_labels.size() && int64_t(r) < rows; r += size_t(step))
      draw_text(img, left - 4 - text_width(st.row_labels[r]), top + int(r) * cell + (cell - 6) / 2, st.row_labels[r], Rgb{0, 0, 0});
    for (size_t c = 0; c < st.col_labels.size() && int64_t(c) < cols; c += size_t(step))
      draw_text_vertical(img, left + int(c) * cell + (cell - 6) / 2, top + int(rows) * cell + 4 + text_width(st.col_labels[c]),
                         st.col_labels[c], Rgb{0, 0, 0});
  }
  return img;
}

Image image_grid(const std::vector<Image>& tiles, int cols, int pad) {
  if (tiles.empty()) return Image(1, 1);
  cols = std::max(1, std::min<int>(cols, int(tiles.size())));
  const int rows = (int(tiles.size()) + cols - 1) / cols;
  std::vector<int> cw(size_t(cols), 0), rh(size_t(rows), 0);
  for (size_t k = 0; k < tiles.size(); ++k) {
    cw[k % size_t(cols)] = std::max(cw[k % size_t(cols)], tiles[k].w);
    rh[k / size_t(cols)] = std::max(rh[k / size_t(cols)], tiles[k].h);
  }
  int W = pad, H = pad;
  for (int c : cw) W += c + pad;
  for (int r : rh) H += r + pad;
  Image out(W, H);
  int y = pad;
  for (int r = 0; r < rows; ++r) {
    int x = pad;
    for (int c = 0; c < cols; ++c) {
      const size_t k = size_t(r * cols + c);
      if (k < tiles.size()) out.blit(tiles[k], x, y);
      x += cw[size_t(c)] + pad;
    }
    y += rh[size_t(r)] + pad;
  }
  return out;
}

void write_png(const std::string& path, const Image& img) {
  if (img.w <= 0 || img.h <= 0) throw Error(path, "empty image");
  if (!stbi_write_png(path.c_str(), img.w, img.h, 3, img.px.data(), img.w * 3)) throw Error(path, "cannot write PNG");
}

std::vector<uint8_t> encode_png(const Image& img) {
  std::vector<uint8_t> out;
  auto sink = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    const auto* p = static_cast<const uint8_t*>(data);
    v->insert(v->end(), p, p + size);
  };
  if (img.w <= 0 || img.h <= 0 || !stbi_write_png_to_func(sink, &out, img.w, img.h, 3, img.px.data(), img.w * 3))
    throw Error("PNG", "cannot encode an image of " + std::to_string(img.w) + "x" + std::to_string(img.h) + " pixels");
  return out;
}

std::string png_data_uri(const Image& img) {
  static const char* kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const std::vector<uint8_t> b = encode_png(img);
  std::string s = "data:image/png;base64,";
  s.reserve(s.size() + (b.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < b.size(); i += 3) {
    const uint32_t v = (uint32_t(b[i]) << 16) | (uint32_t(b[i + 1]) << 8) | b[i + 2];
    s += kB64[v >> 18], s += kB64[(v >> 12) & 63], s += kB64[(v >> 6) & 63], s += kB64[v & 63];
  }
  if (i < b.size()) {
    uint32_t v = uint32_t(b[i]) << 16;
    if (i + 1 < b.size()) v |= uint32_t(b[i + 1]) << 8;
    s += kB64[v >> 18], s += kB64[(v >> 12) & 63];
    s += i + 1 < b.size() ? kB64[(v >> 6) & 63] : '=';
    s += '=';
  }
  return s;
}

}  // namespace ssmx

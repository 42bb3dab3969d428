// ssmx/render/image.h — RGB images, colour maps, heatmaps with labels, grids, PNG output.
//
// Pictures are plain 8-bit RGB buffers; text is drawn with stb_easy_font (ASCII; other characters show as '?'),
// PNG files are written by stb_image_write. Heatmaps follow the hidden-attention papers' figures: each map is
// min-max normalised on its own (optionally of |value| and on a log scale) and drawn with a perceptual colour map.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/rgb_image.h"

namespace ssmx {

// Rgb and Image (plain (h, w, 3) uint8 buffers) are defined in core/rgb_image.h.

// Perceptual colour map (viridis-like), v in [0, 1].
Rgb colormap_viridis(float v);
// Diverging blue-white-red for signed values, v in [-1, 1].
Rgb colormap_diverging(float v);

// Draws ASCII text with its top-left corner at (x, y); scale enlarges the 6-pixel-high glyphs.
void draw_text(Image& img, int x, int y, const std::string& text, Rgb color, int scale = 1);
int text_width(const std::string& text, int scale = 1);
// Draws text rotated by 90° (reading bottom to top), its baseline ending at (x, y).
void draw_text_vertical(Image& img, int x, int y, const std::string& text, Rgb color, int scale = 1);

struct HeatmapStyle {
  bool absolute = true;     // map |value|
  bool log_scale = false;   // log10 of the normalised magnitude, floored at 1e-4
  int cell = 0;             // pixels per cell; 0 = choose so that the map is about 320 px wide
  std::string title;
  std::vector<std::string> row_labels, col_labels;  // drawn when not empty (short inputs)
};

// A (rows, cols) map, min-max normalised over its finite entries.
Image render_heatmap(const float* m, int64_t rows, int64_t cols, const HeatmapStyle& style);

// Several images in a grid with `cols` columns.
Image image_grid(const std::vector<Image>& tiles, int cols, int pad = 8);

// Writes a PNG; throws ssmx::Error(path, reason).
void write_png(const std::string& path, const Image& img);
// The PNG file's bytes, for embedding (HTML data URIs).
std::vector<uint8_t> encode_png(const Image& img);
// "data:image/png;base64,..." of the image.
std::string png_data_uri(const Image& img);

}  // namespace ssmx

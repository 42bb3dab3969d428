// ssmx/render/overlay.h — relevance maps over images: bilinear upsampling of patch maps, colour overlays with a
// colour bar, and side-by-side figures of several methods (the layout of the Vision Mamba explainability papers'
// qualitative figures: the input image first, then one overlay per method, a title above each panel).
//
// Everything works on plain arrays and ssmx::Image (8-bit RGB) so that the CLI can call it with whatever the model
// code returns; PNG files are written with write_png (render/image.h). Formats and choices: docs/images.md.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "render/image.h"

namespace ssmx {

// torch.nn.functional.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False) of one (in_h, in_w)
// map, in float32 like torch. With out = 16 · in this is also what the papers' code computes with scale_factor=16
// (torch then uses the scale 1/16, which equals in/out). Returns out_h · out_w values, row-major.
std::vector<float> upsample_bilinear(const float* map, int in_h, int in_w, int out_h, int out_w);

// The classic jet colour map (MATLAB/OpenCV shape: dark blue → blue → cyan → yellow → red → dark red), v in [0, 1]:
// r = clamp(1.5 − |4v − 3|), g = clamp(1.5 − |4v − 2|), b = clamp(1.5 − |4v − 1|), each rounded to 8 bits.
Rgb colormap_jet(float v);

struct OverlayOptions {
  enum class Blend {
    // out = (1 − a)·image + a·jet(t), with a = alpha · t (alpha_by_relevance) or a = alpha: low relevance leaves the
    // image visible. t is the min-max normalised relevance of the pixel.
    Alpha,
    // The papers' notebooks (show_cam_on_image): cam = jet(t) + image, both in [0, 1] with the image min-max
    // normalised, then cam / max(cam), truncated to 8 bits.
    Additive,
  };
  Blend blend = Blend::Alpha;
  float alpha = 0.6f;
  bool alpha_by_relevance = true;
  bool absolute = false;  // colour |relevance| instead of the signed value
  bool colorbar = true;   // append a vertical colour bar labelled with the map's min and max (before normalising)
};

// Overlays an (mh, mw) relevance map on `rgb`. A map of another size than the image is first upsampled with
// upsample_bilinear (e.g. 14×14 patches → 224×224 pixels); the upsampled map is min-max normalised over its finite
// values (a constant map is all zero). The result has the image's size, plus the colour bar to the right when
// opt.colorbar. Throws ssmx::Error on empty images or maps.
Image overlay_heatmap(const Image& rgb, const float* map, int mh, int mw, const OverlayOptions& opt = {});

// A vertical colour bar `height` pixels high: jet from `hi` at the top to `lo` at the bottom, with the two values
// printed to its right ("%.3g").
Image colorbar_image(int height, float lo, float hi);

struct GridOptions {
  int cols = 0;         // panels per row; 0 = all in one row
  int pad = 8;          // white space around and between panels
  int title_scale = 1;  // enlargement of the 6-pixel stb_easy_font glyphs
};
// Height of the title band above each panel: 8 · title_scale + 4 pixels.
int grid_title_height(const GridOptions& opt);

// Panels with a title centred above each (titles wider than the panel are cut and end in ".."). Cell size is the
// largest panel; a grid of n panels in c columns and r rows of cells W × H is
// (pad + c·(W + pad)) × (pad + r·(title + H + pad)) pixels.
Image method_grid(const std::vector<std::pair<std::string, Image>>& panels, const GridOptions& opt = {});

// The papers' qualitative figure for one image: the image ("input" or the given title) followed by one overlay per
// method, each map (mh, mw) upsampled and normalised on its own. overlay.colorbar applies to every panel.
Image explanation_figure(const Image& rgb, const std::string& image_title,
                         const std::vector<std::pair<std::string, std::vector<float>>>& maps, int mh, int mw,
                         const OverlayOptions& overlay = {}, const GridOptions& grid = {});

}  // namespace ssmx

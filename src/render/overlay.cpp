#include "render/overlay.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace ssmx {

std::vector<float> upsample_bilinear(const float* map, int in_h, int in_w, int out_h, int out_w) {
  if (in_h <= 0 || in_w <= 0 || out_h <= 0 || out_w <= 0)
    throw Error("upsample", "invalid sizes " + std::to_string(in_h) + "x" + std::to_string(in_w) + " -> " +
                                std::to_string(out_h) + "x" + std::to_string(out_w));
  // Per output index along one axis: the two source indices and their weights, in float as torch computes them
  // (source = scale · (dst + 0.5) − 0.5, clamped at 0; the upper neighbour is the same index at the last row).
  struct Tap {
    int i0, i1;
    float w0, w1;
  };
  auto taps = [](int in, int out) {
    std::vector<Tap> t(static_cast<size_t>(out));
    const float scale = float(in) / float(out);
    for (int o = 0; o < out; ++o) {
      float src = scale * (float(o) + 0.5f) - 0.5f;
      if (src < 0.0f) src = 0.0f;
      const int i0 = std::min(int(std::floor(src)), in - 1);
      const float l1 = std::min(std::max(src - float(i0), 0.0f), 1.0f);
      t[size_t(o)] = Tap{i0, i0 + (i0 < in - 1 ? 1 : 0), 1.0f - l1, l1};
    }
    return t;
  };
  const std::vector<Tap> ty = taps(in_h, out_h), tx = taps(in_w, out_w);
  std::vector<float> out(size_t(out_h) * size_t(out_w));
  for (int y = 0; y < out_h; ++y) {
    const Tap& a = ty[size_t(y)];
    const float* r0 = map + size_t(a.i0) * size_t(in_w);
    const float* r1 = map + size_t(a.i1) * size_t(in_w);
    for (int x = 0; x < out_w; ++x) {
      const Tap& b = tx[size_t(x)];
      const float top = r0[b.i0] * b.w0 + r0[b.i1] * b.w1;
      const float bottom = r1[b.i0] * b.w0 + r1[b.i1] * b.w1;
      out[size_t(y) * size_t(out_w) + size_t(x)] = top * a.w0 + bottom * a.w1;
    }
  }
  return out;
}

Rgb colormap_jet(float v) {
  if (!(v >= 0.0f)) v = 0.0f;  // NaN too
  if (v > 1.0f) v = 1.0f;
  auto ch = [&](float centre) {
    const float c = std::clamp(1.5f - std::fabs(4.0f * v - centre), 0.0f, 1.0f);
    return uint8_t(std::lround(255.0f * c));
  };
  return Rgb{ch(3.0f), ch(2.0f), ch(1.0f)};
}

namespace {

std::string fmt_value(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", double(v));
  return buf;
}

// Min and max over finite values; {0, 0} when there are none.
std::pair<float, float> finite_range(const std::vector<float>& v) {
  float lo = INFINITY, hi = -INFINITY;
  for (float x : v)
    if (std::isfinite(x)) lo = std::min(lo, x), hi = std::max(hi, x);
  if (!(lo <= hi)) return {0.0f, 0.0f};
  return {lo, hi};
}

constexpr int kBarWidth = 12;

}  // namespace

Image colorbar_image(int height, float lo, float hi) {
  if (height <= 0) throw Error("colour bar", "height must be positive");
  const std::string top = fmt_value(hi), bottom = fmt_value(lo);
  const int label_w = std::max(text_width(top), text_width(bottom));
  Image bar(2 + kBarWidth + 4 + label_w + 2, height);
  for (int y = 0; y < height; ++y) {
    const float t = height == 1 ? 1.0f : 1.0f - float(y) / float(height - 1);
    bar.fill_rect(2, y, kBarWidth, 1, colormap_jet(t));
  }
  draw_text(bar, 2 + kBarWidth + 4, 0, top, Rgb{0, 0, 0});
  draw_text(bar, 2 + kBarWidth + 4, std::max(0, height - 8), bottom, Rgb{0, 0, 0});
  return bar;
}

Image overlay_heatmap(const Image& rgb, const float* map, int mh, int mw, const OverlayOptions& opt) {
  if (rgb.w <= 0 || rgb.h <= 0 || rgb.px.size() != size_t(rgb.w) * size_t(rgb.h) * 3)
    throw Error("overlay", "empty or malformed image");
  if (mh <= 0 || mw <= 0 || map == nullptr) throw Error("overlay", "empty relevance map");
  std::vector<float> m = (mh == rgb.h && mw == rgb.w) ? std::vector<float>(map, map + size_t(mh) * size_t(mw))
                                                      : upsample_bilinear(map, mh, mw, rgb.h, rgb.w);
  if (opt.absolute)
    for (float& x : m) x = std::fabs(x);
  const auto [lo, hi] = finite_range(m);
  const float span = hi - lo;
  std::vector<float> t(m.size());
  for (size_t i = 0; i < m.size(); ++i) t[i] = (std::isfinite(m[i]) && span > 0) ? (m[i] - lo) / span : 0.0f;

  Image out(rgb.w, rgb.h);
  const size_t n = size_t(rgb.w) * size_t(rgb.h);
  if (opt.blend == OverlayOptions::Blend::Alpha) {
    const float amax = std::clamp(opt.alpha, 0.0f, 1.0f);
    for (size_t i = 0; i < n; ++i) {
      const Rgb c = colormap_jet(t[i]);
      const float a = opt.alpha_by_relevance ? amax * t[i] : amax;
      const uint8_t* p = &rgb.px[i * 3];
      auto mix = [&](uint8_t img, uint8_t col) { return uint8_t(std::lround((1.0f - a) * float(img) + a * float(col))); };
      out.px[i * 3] = mix(p[0], c.r), out.px[i * 3 + 1] = mix(p[1], c.g), out.px[i * 3 + 2] = mix(p[2], c.b);
    }
  } else {
    // show_cam_on_image: jet of uint8(255 · t), plus the min-max normalised image, divided by the maximum.
    const auto [plo, phi] = std::minmax_element(rgb.px.begin(), rgb.px.end());
    const float ilo = float(*plo), ispan = *phi > *plo ? float(*phi - *plo) : 255.0f;
    std::vector<float> cam(n * 3);
    float cmax = 0.0f;
    for (size_t i = 0; i < n; ++i) {
      const Rgb c = colormap_jet(std::floor(255.0f * t[i]) / 255.0f);
      const uint8_t cc[3] = {c.r, c.g, c.b};
      for (int k = 0; k < 3; ++k) {
        const float v = float(cc[k]) / 255.0f + (float(rgb.px[i * 3 + size_t(k)]) - ilo) / ispan;
        cam[i * 3 + size_t(k)] = v;
        cmax = std::max(cmax, v);
      }
    }
    if (!(cmax > 0.0f)) cmax = 1.0f;
    for (size_t i = 0; i < n * 3; ++i) out.px[i] = uint8_t(std::min(255.0f, 255.0f * (cam[i] / cmax)));
  }
  if (!opt.colorbar) return out;
  const Image bar = colorbar_image(rgb.h, lo, hi);
  Image with_bar(out.w + 6 + bar.w, out.h);
  with_bar.blit(out, 0, 0);
  with_bar.blit(bar, out.w + 6, 0);
  return with_bar;
}

int grid_title_height(const GridOptions& opt) { return 8 * std::max(1, opt.title_scale) + 4; }

Image method_grid(const std::vector<std::pair<std::string, Image>>& panels, const GridOptions& opt) {
  if (panels.empty()) throw Error("figure", "no panels");
  const int n = int(panels.size());
  const int cols = opt.cols <= 0 ? n : std::min(opt.cols, n);
  const int rows = (n + cols - 1) / cols;
  const int pad = std::max(0, opt.pad), scale = std::max(1, opt.title_scale);
  int cw = 1, ch = 1;
  for (const auto& p : panels) cw = std::max(cw, p.second.w), ch = std::max(ch, p.second.h);
  const int th = grid_title_height(opt);
  Image out(pad + cols * (cw + pad), pad + rows * (th + ch + pad));
  for (int k = 0; k < n; ++k) {
    const int x = pad + (k % cols) * (cw + pad), y = pad + (k / cols) * (th + ch + pad);
    std::string title = panels[size_t(k)].first;
    if (text_width(title, scale) > cw) {
      while (!title.empty() && text_width(title + "..", scale) > cw) title.pop_back();
      title += "..";
    }
    draw_text(out, x + std::max(0, (cw - text_width(title, scale)) / 2), y + 2, title, Rgb{0, 0, 0}, scale);
    const Image& img = panels[size_t(k)].second;
    out.blit(img, x + (cw - img.w) / 2, y + th);
  }
  return out;
}

Image explanation_figure(const Image& rgb, const std::string& image_title,
                         const std::vector<std::pair<std::string, std::vector<float>>>& maps, int mh, int mw,
                         const OverlayOptions& overlay, const GridOptions& grid) {
  std::vector<std::pair<std::string, Image>> panels;
  panels.emplace_back(image_title.empty() ? "input" : image_title, rgb);
  for (const auto& [name, m] : maps) {
    if (m.size() != size_t(mh) * size_t(mw))
      throw Error("figure", "map '" + name + "' has " + std::to_string(m.size()) + " values, expected " +
                                std::to_string(mh) + "x" + std::to_string(mw));
    panels.emplace_back(name, overlay_heatmap(rgb, m.data(), mh, mw, overlay));
  }
  return method_grid(panels, grid);
}

}  // namespace ssmx

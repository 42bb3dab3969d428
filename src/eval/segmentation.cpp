#include "eval/segmentation.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "core/error.h"

namespace ssmx {

namespace {
constexpr double kEps = 2.220446049250313e-16;  // np.spacing(1)
}

double average_precision(const std::vector<uint8_t>& y_true, const std::vector<float>& y_score) {
  if (y_true.size() != y_score.size()) throw Error("average_precision", "labels and scores differ in length");
  const size_t n = y_true.size();
  int64_t positives = 0;
  for (uint8_t t : y_true) positives += t != 0;
  if (positives == 0) return 0.0;
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  // Decreasing score; the order inside a tie is irrelevant because a tie is one threshold.
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return y_score[a] > y_score[b]; });
  double ap = 0;
  int64_t tp = 0, fp = 0, tp_prev = 0;
  size_t i = 0;
  while (i < n) {
    const float s = y_score[order[i]];
    for (; i < n && y_score[order[i]] == s; ++i) (y_true[order[i]] ? tp : fp) += 1;
    if (tp != tp_prev) {
      ap += double(tp - tp_prev) / double(positives) * (double(tp) / double(tp + fp));
      tp_prev = tp;
    }
  }
  return ap;
}

double f1_binary(const uint8_t* y_true, const uint8_t* y_pred, int64_t n) {
  int64_t tp = 0, fp = 0, fn = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool t = y_true[i] != 0, p = y_pred[i] != 0;
    tp += t && p;
    fp += !t && p;
    fn += t && !p;
  }
  const int64_t denom = 2 * tp + fp + fn;
  return denom == 0 ? 0.0 : 2.0 * double(tp) / double(denom);
}

SegmentationImageStats segmentation_image_stats(const float* map, const uint8_t* mask, int64_t h, int64_t w,
                                                const SegmentationOptions& opt) {
  if (h <= 0 || w <= 0) throw Error("segmentation", "empty map");
  const int64_t n = h * w;
  for (int64_t i = 0; i < n; ++i)
    if (mask[i] > 1)
      throw Error("segmentation", "mask value " + std::to_string(int(mask[i])) + " at pixel " + std::to_string(i) +
                                      " (expected 0 or 1)");
  std::vector<float> res(map, map + n);
  for (float v : res)
    if (!std::isfinite(v)) throw Error("segmentation", "relevance map holds a non-finite value");
  // Min-max normalisation (float32 like the torch script); a constant map gives 0/0 = nan there, which the script
  // sends to "neither class" for the threshold and which sklearn would reject; we use zeros.
  const auto [mn_it, mx_it] = std::minmax_element(res.begin(), res.end());
  const float mn = *mn_it, mx = *mx_it;
  std::vector<float> norm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) norm[size_t(i)] = mx > mn ? (res[size_t(i)] - mn) / (mx - mn) : 0.0f;
  // Threshold at the mean (affine-invariant: computed on the normalised map, as Chefer's script does).
  double sum = 0;
  for (float v : norm) sum += v;
  const double mean = sum / double(n);
  std::vector<uint8_t> pred(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pred[size_t(i)] = double(norm[size_t(i)]) > mean ? 1 : 0;

  SegmentationImageStats s;
  s.labelled = n;
  for (int64_t i = 0; i < n; ++i) {
    const int p = pred[size_t(i)], t = mask[i];
    s.correct += p == t;
    if (p == t) s.inter[t] += 1;
    s.uni[p] += 1;
    s.uni[t] += 1;
  }
  for (int c = 0; c < 2; ++c) s.uni[c] -= s.inter[c];

  // Pooled AP over [1 − Res, Res] against [mask == 0, mask == 1].
  const std::vector<float>& ap_map = opt.compat_unnormalised_ap ? res : norm;
  std::vector<float> score(static_cast<size_t>(2 * n));
  std::vector<uint8_t> target(static_cast<size_t>(2 * n));
  for (int64_t i = 0; i < n; ++i) {
    score[size_t(i)] = 1.0f - ap_map[size_t(i)];
    target[size_t(i)] = mask[i] == 0;
    score[size_t(n + i)] = ap_map[size_t(i)];
    target[size_t(n + i)] = mask[i] == 1;
  }
  s.ap = average_precision(target, score);

  double f1 = 0;
  for (int64_t r = 0; r < h; ++r) f1 += f1_binary(mask + r * w, pred.data() + r * w, w);
  s.f1 = f1 / double(h);
  return s;
}

void SegmentationAccumulator::add(const std::vector<float>& map, const std::vector<uint8_t>& mask, int64_t h,
                                  int64_t w) {
  if (int64_t(map.size()) != h * w || int64_t(mask.size()) != h * w)
    throw Error("segmentation", "map has " + std::to_string(map.size()) + " and mask " + std::to_string(mask.size()) +
                                    " values, expected " + std::to_string(h) + "x" + std::to_string(w));
  add(segmentation_image_stats(map.data(), mask.data(), h, w, opt_));
}

void SegmentationAccumulator::add(const SegmentationImageStats& s) {
  correct_ += s.correct;
  labelled_ += s.labelled;
  for (int c = 0; c < 2; ++c) {
    inter_[c] += s.inter[c];
    uni_[c] += s.uni[c];
  }
  ap_.push_back(s.ap);
  f1_.push_back(s.f1);
}

SegmentationResult SegmentationAccumulator::result() const {
  SegmentationResult r;
  r.images = images();
  r.pixel_accuracy = double(correct_) / (kEps + double(labelled_));
  r.iou_bg = double(inter_[0]) / (kEps + double(uni_[0]));
  r.iou_fg = double(inter_[1]) / (kEps + double(uni_[1]));
  r.miou = (r.iou_bg + r.iou_fg) / 2;
  if (!ap_.empty()) {
    r.map = std::accumulate(ap_.begin(), ap_.end(), 0.0) / double(ap_.size());
    r.mf1 = std::accumulate(f1_.begin(), f1_.end(), 0.0) / double(f1_.size());
  }
  return r;
}

std::vector<uint8_t> resize_mask_nearest(const uint8_t* mask, int64_t in_h, int64_t in_w, int64_t out_h,
                                         int64_t out_w) {
  if (in_h <= 0 || in_w <= 0 || out_h <= 0 || out_w <= 0) throw Error("resize_mask_nearest", "empty size");
  std::vector<int64_t> sx(static_cast<size_t>(out_w)), sy(static_cast<size_t>(out_h));
  const double kx = double(in_w) / double(out_w), ky = double(in_h) / double(out_h);
  for (int64_t x = 0; x < out_w; ++x) sx[size_t(x)] = std::min<int64_t>(in_w - 1, int64_t((double(x) + 0.5) * kx));
  for (int64_t y = 0; y < out_h; ++y) sy[size_t(y)] = std::min<int64_t>(in_h - 1, int64_t((double(y) + 0.5) * ky));
  std::vector<uint8_t> out(static_cast<size_t>(out_h * out_w));
  for (int64_t y = 0; y < out_h; ++y)
    for (int64_t x = 0; x < out_w; ++x) out[size_t(y * out_w + x)] = mask[sy[size_t(y)] * in_w + sx[size_t(x)]];
  return out;
}

ResizeGeometry plain_resize_geometry(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w) {
  if (in_h <= 0 || in_w <= 0 || out_h <= 0 || out_w <= 0) throw Error("plain_resize_geometry", "empty size");
  ResizeGeometry g;
  g.out_h = out_h;
  g.out_w = out_w;
  g.scale_y = double(in_h) / double(out_h);
  g.scale_x = double(in_w) / double(out_w);
  return g;
}

}  // namespace ssmx

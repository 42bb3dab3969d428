// ssmx/eval/segmentation.h — the ImageNet-Segmentation protocol (spec hidden-attention.md §4.2; Chefer et al. 2021)
//
// Per image, a relevance map Res (224×224 after upsampling) is compared with a binary foreground mask of the same
// size (NEAREST-resized from the original; see resize_mask_nearest):
//   normalise  Res ← (Res − min) / (max − min) in float32 (Chefer's script; a constant map becomes all zeros).
//              compat_unnormalised_ap = true skips this, as the MambaVision script does (the line is commented out
//              there); the threshold is affine-invariant, so only mAP changes.
//   threshold  fg = Res > mean(Res), bg = Res ≤ mean(Res)  (mean in double over the float32 map)
//   pixAcc     Σ correct / (eps + Σ labelled), accumulated over the data set (every pixel is labelled)
//   IoU        per class (bg, fg): Σ intersection / (eps + Σ union) over the data set; mIoU = mean of the two
//   AP         sklearn.metrics.average_precision_score over the pooled 2·H·W scores [1 − Res, Res] against the
//              one-hot target [mask == 0, mask == 1]: AP = Σ_k (R_k − R_{k−1}) P_k over the distinct scores in
//              decreasing order (tied scores form one threshold); no positives → 0 (nan_to_num). mAP = mean over images.
//   F1         as Chefer's script computes it: sklearn f1_score(mask row, thresholded row) for each of the H rows
//              separately (the script reshapes the map by its first dimension), 0 where undefined; mF1 = mean over
//              images of the mean over rows.
//   eps = 2.220446049250313e-16 (np.spacing(1)).
#pragma once

#include <cstdint>
#include <vector>

namespace ssmx {

struct SegmentationOptions {
  bool compat_unnormalised_ap = false;  // true: AP on the raw map (MambaVision's imagenet_seg_eval.py)
};

struct SegmentationResult {
  int64_t images = 0;
  double pixel_accuracy = 0;  // in [0, 1]
  double iou_bg = 0, iou_fg = 0, miou = 0;
  double map = 0;  // mean over images of the pooled AP
  double mf1 = 0;
};

// Per-image quantities (exposed for tests and per-image reports).
struct SegmentationImageStats {
  int64_t correct = 0, labelled = 0;
  int64_t inter[2] = {0, 0}, uni[2] = {0, 0};  // [bg, fg]
  double ap = 0, f1 = 0;
};

// One image: map and mask are H×W row-major; mask values must be 0 or 1 (throws ssmx::Error otherwise).
SegmentationImageStats segmentation_image_stats(const float* map, const uint8_t* mask, int64_t h, int64_t w,
                                                const SegmentationOptions& opt = {});

class SegmentationAccumulator {
 public:
  explicit SegmentationAccumulator(SegmentationOptions opt = {}) : opt_(opt) {}
  // map and mask: 224×224 (or any h×w given explicitly), row-major.
  void add(const std::vector<float>& map, const std::vector<uint8_t>& mask, int64_t h = 224, int64_t w = 224);
  void add(const SegmentationImageStats& s);
  SegmentationResult result() const;
  int64_t images() const { return int64_t(ap_.size()); }

 private:
  SegmentationOptions opt_;
  int64_t correct_ = 0, labelled_ = 0;
  int64_t inter_[2] = {0, 0}, uni_[2] = {0, 0};
  std::vector<double> ap_, f1_;
};

// sklearn.metrics.average_precision_score(y_true, y_score) for binary labels (0/1), step-wise, ties grouped.
// Returns 0 when there is no positive label (sklearn gives nan with a warning; the protocol applies nan_to_num).
double average_precision(const std::vector<uint8_t>& y_true, const std::vector<float>& y_score);

// sklearn.metrics.f1_score(y_true, y_pred) for binary 0/1 vectors of length n; 0 when undefined.
double f1_binary(const uint8_t* y_true, const uint8_t* y_pred, int64_t n);

// PIL Image.resize((out_w, out_h), Image.NEAREST) on a single-channel H×W image: source pixel
// floor((x + 0.5) · in_w / out_w) for output column x (likewise rows), clamped to the image.
std::vector<uint8_t> resize_mask_nearest(const uint8_t* mask, int64_t in_h, int64_t in_w, int64_t out_h,
                                         int64_t out_w);

// The protocol's geometry: torchvision Resize((224, 224)) — both sides scaled independently, no crop.
struct ResizeGeometry {
  int64_t out_h = 224, out_w = 224;
  double scale_y = 1, scale_x = 1;  // in/out: output pixel centre y maps to input (y + 0.5) · scale_y − 0.5
};
ResizeGeometry plain_resize_geometry(int64_t in_h, int64_t in_w, int64_t out_h = 224, int64_t out_w = 224);

}  // namespace ssmx

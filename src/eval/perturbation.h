// ssmx/eval/perturbation.h — the positive / negative perturbation test (spec hidden-attention.md §4.1; Chefer et al.
// 2021, Transformer-Explainability's perturbation script)
//
// For each image with ground-truth label y, a relevance map over the H×W pixels (224×224, upsampled from the patch
// map by the caller or by an upsampling callback) ranks the pixels. At each step fraction f (default 0.1 … 0.9) the
// k = floor(f · H · W) top-ranked pixels are set to 0 in the unnormalised [0, 1] image, in all 3 channels, the image
// is normalised ((x − mean_c) / std_c, ImageNet statistics by default) and the classifier callback gives a class.
//   positive   the highest-relevance pixels go first (lower AUC is better)
//   negative   the map is negated, so the lowest-relevance pixels go first (higher AUC is better)
// Ties: the ranking is a stable sort by relevance (decreasing; for negative, by −relevance decreasing), so among
// equal values the smaller row-major pixel index y·W + x is removed first. torch.topk leaves this unspecified.
// Accuracy at a step = mean over images of [prediction == y]; AUC = trapezoid of accuracy in % over the step
// fractions (x in [0, 1]); with include_zero the unperturbed image is the point x = 0.
#pragma once

#include "eval/curves.h"

#include <array>
#include <cstdint>
#include <functional>
#include <vector>

namespace ssmx {

// The classifier: a normalised 3×H×W float image (C order) → predicted class.
using PixelClassifier = std::function<int(const float* pixels_3xHxW)>;
// Upsamples a patch map ph×pw to H×W (bilinear in the protocol; the image engineer's routine).
using MapUpsampler = std::function<std::vector<float>(const std::vector<float>& patch_map, int64_t ph, int64_t pw)>;

enum class PerturbationMode { Positive, Negative };

struct PerturbationOptions {
  PerturbationMode mode = PerturbationMode::Positive;
  std::vector<double> steps = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9};
  bool include_zero = false;  // also evaluate the unperturbed image and use it as the point x = 0 of the AUC
  int64_t height = 224, width = 224;
  std::array<float, 3> mean = {0.485f, 0.456f, 0.406f};  // ImageNet normalisation (timm / DeiT)
  std::array<float, 3> std = {0.229f, 0.224f, 0.225f};
};

// The removal order: pixel indices, first removed first (see the tie rule above).
std::vector<int64_t> perturbation_order(const std::vector<float>& relevance, PerturbationMode mode);

// Number of pixels removed at fraction f of n pixels: floor(f · n) (Python int(n * f)).
int64_t perturbation_count(double fraction, int64_t n);

class PerturbationAccumulator {
 public:
  explicit PerturbationAccumulator(PerturbationOptions opt = {});
  // image01: the unnormalised [0, 1] 3×H×W image (C order); relevance: H×W. Returns the predictions per point.
  std::vector<int> add(const std::vector<float>& image01, const std::vector<float>& relevance, int label,
                       const PixelClassifier& classify);
  // The same with a patch map and an upsampler to H×W.
  std::vector<int> add_patch_map(const std::vector<float>& image01, const std::vector<float>& patch_map, int64_t ph,
                                 int64_t pw, const MapUpsampler& upsample, int label, const PixelClassifier& classify);

  int64_t images() const { return images_; }
  // x of each point: (0 if include_zero), then the steps.
  std::vector<double> fractions() const;
  // Top-1 accuracy in % per point.
  std::vector<double> accuracy_percent() const;
  double auc() const;  // trapezoid of accuracy_percent() over fractions()

 private:
  PerturbationOptions opt_;
  int64_t images_ = 0;
  std::vector<int64_t> correct_;
};

// Trapezoid rule Σ (x_{i+1} − x_i)(y_i + y_{i+1}) / 2.

}  // namespace ssmx

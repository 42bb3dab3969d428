#include "eval/perturbation.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "core/error.h"

namespace ssmx {

std::vector<int64_t> perturbation_order(const std::vector<float>& rel, PerturbationMode mode) {
  for (float v : rel)
    if (std::isnan(v)) throw Error("perturbation", "relevance map holds NaN");
  std::vector<int64_t> order(rel.size());
  std::iota(order.begin(), order.end(), int64_t(0));
  if (mode == PerturbationMode::Positive)
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return rel[size_t(a)] > rel[size_t(b)]; });
  else
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return -rel[size_t(a)] > -rel[size_t(b)]; });
  return order;
}

int64_t perturbation_count(double fraction, int64_t n) {
  if (!(fraction >= 0.0 && fraction <= 1.0)) throw Error("perturbation", "step fraction outside [0, 1]");
  return std::min<int64_t>(n, int64_t(std::floor(double(n) * fraction)));
}

PerturbationAccumulator::PerturbationAccumulator(PerturbationOptions opt) : opt_(std::move(opt)) {
  if (opt_.height <= 0 || opt_.width <= 0) throw Error("perturbation", "image size must be positive");
  for (double f : opt_.steps) perturbation_count(f, 1);
  for (size_t i = 1; i < opt_.steps.size(); ++i)
    if (!(opt_.steps[i] > opt_.steps[i - 1])) throw Error("perturbation", "step fractions must increase");
  for (float s : opt_.std)
    if (!(s > 0)) throw Error("perturbation", "normalisation std must be positive");
  correct_.assign(fractions().size(), 0);
}

std::vector<double> PerturbationAccumulator::fractions() const {
  std::vector<double> x;
  if (opt_.include_zero) x.push_back(0.0);
  x.insert(x.end(), opt_.steps.begin(), opt_.steps.end());
  return x;
}

std::vector<int> PerturbationAccumulator::add(const std::vector<float>& image01, const std::vector<float>& relevance,
                                              int label, const PixelClassifier& classify) {
  const int64_t hw = opt_.height * opt_.width;
  if (int64_t(image01.size()) != 3 * hw)
    throw Error("perturbation", "image has " + std::to_string(image01.size()) + " values, expected 3x" +
                                    std::to_string(opt_.height) + "x" + std::to_string(opt_.width));
  if (int64_t(relevance.size()) != hw)
    throw Error("perturbation", "relevance map has " + std::to_string(relevance.size()) + " values, expected " +
                                    std::to_string(opt_.height) + "x" + std::to_string(opt_.width));
  const std::vector<int64_t> order = perturbation_order(relevance, opt_.mode);
  const std::vector<double> xs = fractions();
  std::vector<float> work(static_cast<size_t>(3 * hw));
  std::vector<uint8_t> removed(size_t(hw), 0);
  std::vector<int> preds;
  int64_t done = 0;  // pixels of `order` already marked removed (the steps increase)
  for (size_t p = 0; p < xs.size(); ++p) {
    const int64_t k = perturbation_count(xs[p], hw);
    for (; done < k; ++done) removed[size_t(order[size_t(done)])] = 1;
    for (int c = 0; c < 3; ++c) {
      const float m = opt_.mean[size_t(c)], s = opt_.std[size_t(c)];
      const float* src = image01.data() + c * hw;
      float* dst = work.data() + c * hw;
      for (int64_t i = 0; i < hw; ++i) dst[i] = ((removed[size_t(i)] ? 0.0f : src[i]) - m) / s;
    }
    const int pred = classify(work.data());
    preds.push_back(pred);
    correct_[p] += pred == label;
  }
  ++images_;
  return preds;
}

std::vector<int> PerturbationAccumulator::add_patch_map(const std::vector<float>& image01,
                                                        const std::vector<float>& patch_map, int64_t ph, int64_t pw,
                                                        const MapUpsampler& upsample, int label,
                                                        const PixelClassifier& classify) {
  if (ph <= 0 || pw <= 0 || int64_t(patch_map.size()) != ph * pw)
    throw Error("perturbation", "patch map has " + std::to_string(patch_map.size()) + " values, expected " +
                                    std::to_string(ph) + "x" + std::to_string(pw));
  return add(image01, upsample(patch_map, ph, pw), label, classify);
}

std::vector<double> PerturbationAccumulator::accuracy_percent() const {
  std::vector<double> a(correct_.size(), 0.0);
  if (images_ == 0) return a;
  for (size_t i = 0; i < a.size(); ++i) a[i] = 100.0 * double(correct_[i]) / double(images_);
  return a;
}

double PerturbationAccumulator::auc() const { return trapezoid(fractions(), accuracy_percent()); }

}  // namespace ssmx

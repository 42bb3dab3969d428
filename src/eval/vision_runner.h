// ssmx/eval/vision_runner.h — the data set runner of `ssmx eval perturbation` and `ssmx eval segmentation` (and the
// image pointing game of `ssmx eval evidence` on a Vision Mamba), sharing the shape of eval/runner.h (flipping):
// one JSON line per image × method, sharded by image index (shard I of N takes index % N == I), resumable (records
// already in the output are skipped; a truncated last line is cut off first), merged into per-method tables whose
// sums run in image order, so any sharding gives bit-identical numbers. docs/vision-eval.md describes the protocols.
//
// Perturbation record (kind "perturbation"): index, image, method, label, pred (the unperturbed prediction, the class
// explained), x (the fractions), positive / negative (the prediction at each x, for the modes run), patch_map.
// Segmentation record (kind "segmentation"): index, image, method, pred, the per-image statistics of
// eval/segmentation.h (correct, labelled, inter[bg, fg], union[bg, fg], ap, f1), and the pointing game: pointing (1
// when the top patch lies in the object: at least half of its pixels are mask pixels), energy (the share of the
// positive relevance of the upsampled map that falls inside the mask) and mask_fraction (the mask's share of the
// pixels: the energy of a uniform map).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "attribution/explain.h"
#include "core/rgb_image.h"
#include "eval/perturbation.h"
#include "eval/segmentation.h"
#include "io/imagenet.h"
#include "models/vim.h"

namespace ssmx {

struct VisionExample {
  int64_t index = 0;      // position in the data (0-based)
  std::string image;      // the image file, or "FILE.mat[i]" for a sample of gtsegs_ijcv.mat
  std::string mask;       // the mask file (PNG, non-zero = object); "" when none (or for a .mat sample)
  int label = -1;         // ground-truth class, -1 when unknown
  int64_t mat_index = -1; // sample of the segmentation data set
};

struct VisionData {
  std::string path;  // what --data named
  std::vector<VisionExample> examples;
  std::shared_ptr<SegmentationDataset> mat;  // set for gtsegs_ijcv.mat
};

// --data for the vision evaluations:
//   DIR                ImageNet val, folder layout DIR/<wnid>/*.JPEG (no labels file) or flat DIR/*.JPEG + labels
//   FILE.jsonl         one object a line: "image" (path relative to the file), optional "mask", and the label as
//                      "class" (integer) or "label" (integer, or a class name of class_names)
//   FILE.mat           ImageNet-Segmentation gtsegs_ijcv.mat (images and masks, no labels)
// Every problem throws ssmx::Error naming the file (and line).
VisionData read_vision_data(const std::string& data, const std::string& labels,
                            const std::vector<std::string>& class_names = {});

// The model-sized image of one example. Perturbation: the DeiT evaluation transform (resize to H/0.875 bicubic, centre
// crop; none for inputs of 32 pixels or less, which must then have the model's size). Segmentation: the protocol's
// Resize((H, W)) without a crop (PIL bicubic here: the PIL-exact resampler of the image code; the papers' torchvision
// default is bilinear, which only matters for images not already of the model's size) and the mask resized NEAREST.
struct VisionSample {
  Image image;                // model-sized RGB
  std::vector<uint8_t> mask;  // model-sized 0/1, empty when the example has none
};
// plain_resize (`--transform resize`) replaces the DeiT transform of the perturbation test by the plain resize to H×W.
VisionSample load_vision_sample(const VimModel& m, const VisionData& d, const VisionExample& ex, bool segmentation,
                                bool plain_resize = false);

struct VisionRunSpec {
  std::vector<Method> methods;
  ExplainOptions base;  // method and target are set per record; seed = base.seed + image index; start_layer < 0:
                        // image_start_layer's default
  // perturbation
  bool positive = true, negative = true;
  std::vector<double> steps = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9};
  bool include_zero = false;
  bool plain_resize = false;  // resize to the model's H×W (bicubic, no crop) instead of the DeiT transform
  // segmentation
  bool compat_unnormalised_ap = false;
  int64_t shard = 0, shards = 1;
  std::string out;  // JSONL output ("" = none)
  bool resume = false;
};

// The first layer of the attention methods: start_layer, or when it is negative the papers' default for images,
// 15/24 of the depth rounded (15 for Vim-S, 2 for colours-vim), as `ssmx explain` uses for images.
int64_t image_start_layer(const VimModel& m, int64_t start_layer);

// The relevance map of an explanation of class `cls` of `pixels`, upsampled bilinearly to the model's H×W.
std::vector<float> pixel_relevance(const VimModel& m, const Tensor& pixels, int64_t cls, Method method,
                                   const ExplainOptions& base, std::vector<float>* patch_map_out = nullptr);

// One image × method. The image is the model-sized RGB crop.
nlohmann::json perturbation_record(const VimModel& m, const VisionExample& ex, const Image& img, Method method,
                                   const VisionRunSpec& spec);
nlohmann::json segmentation_record(const VimModel& m, const VisionExample& ex, const VisionSample& s, Method method,
                                   const VisionRunSpec& spec);

// Run every image of this shard with every method, appending to spec.out; return the records written now.
std::vector<nlohmann::json> run_perturbation(const VimModel& m, const VisionData& d, const VisionRunSpec& spec,
                                             const std::function<void()>& on_example = {});
std::vector<nlohmann::json> run_segmentation(const VimModel& m, const VisionData& d, const VisionRunSpec& spec,
                                             const std::function<void()>& on_example = {});

// "flipping", "perturbation" or "segmentation"; "" for anything else.
std::string record_kind(const nlohmann::json& j);
// The kind of the first record of a result file ("" when it has none); throws when it cannot be read.
std::string result_file_kind(const std::string& path);
// Reads perturbation or segmentation records (all of kind `kind`) from JSONL files, ordered by image index then
// method; duplicates of one image × method must agree.
std::vector<nlohmann::json> read_vision_records(const std::vector<std::string>& paths, const std::string& kind);

struct PerturbationSummary {
  std::string method;
  int64_t images = 0;
  std::vector<double> x;
  bool has_positive = false, has_negative = false;
  std::vector<double> positive_accuracy, negative_accuracy;  // top-1 accuracy in % per x
  double positive_auc = 0, negative_auc = 0;                 // trapezoid over x
};
std::vector<PerturbationSummary> summarize_perturbation(const std::vector<nlohmann::json>& records);
std::string perturbation_markdown(const std::vector<PerturbationSummary>& s);
std::string perturbation_csv(const std::vector<PerturbationSummary>& s);
nlohmann::json perturbation_json(const std::vector<PerturbationSummary>& s);
// DIR/perturbation_{positive,negative}.{png,svg}: accuracy per fraction of each method.
void plot_perturbation(const std::vector<PerturbationSummary>& s, const std::string& dir);

struct SegmentationSummary {
  std::string method;
  SegmentationResult r;  // images, pixel_accuracy, iou_bg, iou_fg, miou, map, mf1
  double pointing = 0, energy = 0, mask_fraction = 0;  // means over images
  bool compat_unnormalised_ap = false;
};
std::vector<SegmentationSummary> summarize_segmentation(const std::vector<nlohmann::json>& records);
std::string segmentation_markdown(const std::vector<SegmentationSummary>& s);
std::string segmentation_csv(const std::vector<SegmentationSummary>& s);
nlohmann::json segmentation_json(const std::vector<SegmentationSummary>& s);
// The pointing game table (pointing, energy, mask share) of segmentation records.
std::string pointing_markdown(const std::vector<SegmentationSummary>& s);

}  // namespace ssmx

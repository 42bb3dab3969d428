// ssmx/api/image_report.h — a Vision Mamba explanation request run into a report (terminal text, JSON, HTML, PNG
// figures), shared by the CLI (`ssmx explain --image`) and the Python module.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "attribution/explain.h"
#include "core/rgb_image.h"
#include "io/checkpoint.h"
#include "models/vim.h"

namespace ssmx {

// Class names for a Vision Mamba's head: labels.json next to the weights ({"0": "red", …}) or config.json's
// id2label; else ImageNet's names for a 1000-class head; else none (empty strings).
std::vector<std::string> read_class_names(const Checkpoint& ck, int64_t n_classes);

struct ImageExplainSpec {
  std::vector<std::string> class_names;  // optional, per class (read_class_names)
  std::vector<Method> methods = {Method::MambaLrp};
  int64_t cls = -1;              // class to explain; -1 = the predicted class
  ExplainOptions options;        // method settings; method and target are filled in here
  bool start_layer_set = false;  // false: the papers' default, 15/24 of the depth
};

struct ImageReport {
  std::string model, input;                                 // as the user named them
  Image crop;                                               // the un-normalised image the pixels were made from
  int64_t grid_h = 0, grid_w = 0, class_token = 0;
  std::vector<Explanation> explanations;                    // relevance per token
  std::vector<std::pair<std::string, std::vector<float>>> maps;  // per method: the patch map (grid_h·grid_w)
  std::vector<float> probs;                                 // softmax of the logits
  int64_t best = 0, cls = 0;
  std::vector<std::string> labels;                          // class names ("class 3 (tabby)")
};

// The un-normalised RGB image behind ImageNet-normalised pixels (3, H, W).
Image pixels_to_image(const Tensor& pixels);

ImageReport explain_image_report(const VimModel& m, const Tensor& pixels, const Image& crop, const std::string& model,
                                 const std::string& input, const ImageExplainSpec& spec);

std::string image_report_terminal(const ImageReport& r);
nlohmann::ordered_json image_report_json(const ImageReport& r);
Image image_report_overlay(const ImageReport& r, size_t method = 0);
Image image_report_figure(const ImageReport& r);  // the image and every method side by side
std::string image_report_html(const ImageReport& r);

}  // namespace ssmx

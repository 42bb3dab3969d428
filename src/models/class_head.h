// ssmx/models/class_head.h — a sequence-classification head on the last token, loaded from the checkpoint.
//
// Fine-tuned classifiers (the MambaLRP setup: a Linear(d_model, n_classes) on the final norm's output at the last
// position) are stored next to the backbone under one of these names, tried in this order:
//   score.weight                       (transformers *ForSequenceClassification; no bias)
//   classifier.weight [+ classifier.bias]
//   cls_head.weight   [+ cls_head.bias]
//   head.weight       [+ head.bias]    (the Vision Mamba name; only when its rows are not the vocabulary)
// The weight must be (n_classes, d_model) with n_classes < vocabulary; the bias (n_classes). Class names come from
// config.json "id2label" when present ("0" → "negative", ...), else "class 0", "class 1", ...
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace ssmx {

struct ClassHead {
  std::string tensor_name;          // "classifier.weight", ...
  int64_t n_classes = 0, d_model = 0;
  std::vector<float> weight;        // (n_classes, d_model)
  std::vector<float> bias;          // (n_classes) or empty
  std::vector<std::string> labels;  // (n_classes)

  // logits[c] = weight[c] · h + bias[c]
  std::vector<float> logits(const float* h) const;
  // A class index or a label name; throws ssmx::Error("--class", ...) otherwise.
  int64_t parse_class(const std::string& s) const;
};

// The head if the checkpoint holds one of the names above (throws ssmx::Error on a malformed one).
std::optional<ClassHead> load_class_head(const Checkpoint& ck, int64_t d_model, int64_t vocab);

}  // namespace ssmx

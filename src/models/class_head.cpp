#include "models/class_head.h"

#include "core/error.h"
#include "core/tensor.h"

namespace ssmx {

std::vector<float> ClassHead::logits(const float* h) const {
  std::vector<float> out(static_cast<size_t>(n_classes));
  for (int64_t c = 0; c < n_classes; ++c) {
    double s = bias.empty() ? 0.0 : double(bias[size_t(c)]);
    const float* w = weight.data() + c * d_model;
    for (int64_t d = 0; d < d_model; ++d) s += double(w[d]) * double(h[d]);
    out[size_t(c)] = float(s);
  }
  return out;
}

int64_t ClassHead::parse_class(const std::string& s) const {
  for (int64_t c = 0; c < n_classes; ++c)
    if (labels[size_t(c)] == s) return c;
  if (!s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos) {
    const int64_t c = std::stoll(s);
    if (c < n_classes) return c;
  }
  std::string names;
  for (int64_t c = 0; c < n_classes && c < 8; ++c) names += (c ? ", " : "") + labels[size_t(c)];
  throw Error("--class", "'" + s + "' is neither a class index below " + std::to_string(n_classes) +
                             " nor a label (" + names + (n_classes > 8 ? ", ..." : "") + ")");
}

std::optional<ClassHead> load_class_head(const Checkpoint& ck, int64_t d_model, int64_t vocab) {
  static const char* kNames[] = {"score", "classifier", "cls_head", "head"};
  for (const char* base : kNames) {
    const std::string wname = std::string(base) + ".weight";
    const RawTensor* w = ck.find(wname);
    if (!w) continue;
    if (w->shape.size() != 2 || w->shape[1] != d_model)
      throw Error(w->source, "class head '" + wname + "' has shape " + shape_str(w->shape) + ", expected (n_classes, " +
                                 std::to_string(d_model) + ")");
    if (w->shape[0] >= vocab) {
      if (std::string(base) == "head") continue;  // a language-model head under another name
      throw Error(w->source, "class head '" + wname + "' has " + std::to_string(w->shape[0]) +
                                 " rows, not fewer than the vocabulary");
    }
    ClassHead h;
    h.tensor_name = wname;
    h.n_classes = w->shape[0];
    h.d_model = d_model;
    h.weight = to_f32(*w);
    if (const RawTensor* b = ck.find(std::string(base) + ".bias")) {
      if (b->shape != std::vector<int64_t>{h.n_classes})
        throw Error(b->source, "class head bias '" + std::string(base) + ".bias' has shape " + shape_str(b->shape) +
                                   ", expected (" + std::to_string(h.n_classes) + ")");
      h.bias = to_f32(*b);
    }
    for (int64_t c = 0; c < h.n_classes; ++c) h.labels.push_back("class " + std::to_string(c));
    const auto& cfg = ck.config;
    if (cfg.is_object() && cfg.contains("id2label") && cfg["id2label"].is_object()) {
      for (const auto& [k, v] : cfg["id2label"].items()) {
        if (!v.is_string() || k.empty() || k.size() > 9 || k.find_first_not_of("0123456789") != std::string::npos)
          continue;
        const int64_t c = std::stoll(k);
        if (c < h.n_classes) h.labels[size_t(c)] = v.get<std::string>();
      }
    }
    return h;
  }
  return std::nullopt;
}

}  // namespace ssmx

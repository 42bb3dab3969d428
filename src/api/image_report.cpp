#include "api/image_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/error.h"
#include "core/runtime.h"
#include "models/imagenet_classes.h"
#include "render/image.h"
#include "render/overlay.h"

namespace ssmx {

namespace {

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string escape_html(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

}  // namespace

std::vector<std::string> read_class_names(const Checkpoint& ck, int64_t n) {
  std::vector<std::string> names(static_cast<size_t>(std::max<int64_t>(n, 0)));
  auto take = [&](const nlohmann::json& map) {
    if (!map.is_object()) return false;
    bool any = false;
    for (int64_t k = 0; k < n; ++k) {
      const std::string key = std::to_string(k);
      if (map.contains(key) && map[key].is_string()) names[size_t(k)] = map[key].get<std::string>(), any = true;
    }
    return any;
  };
  if (!ck.dir.empty()) {
    std::ifstream f(ck.dir + "/labels.json");
    if (f) {
      const nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
      if (!j.is_discarded() && take(j)) return names;
    }
  }
  if (ck.config.contains("id2label") && take(ck.config["id2label"])) return names;
  if (n == 1000)
    for (int64_t k = 0; k < n; ++k) names[size_t(k)] = imagenet_class_name(k);
  return names;
}

Image pixels_to_image(const Tensor& px) {
  if (px.shape.size() != 3 || px.shape[0] != 3) throw Error("pixels", "expected [3, H, W], got " + shape_str(px.shape));
  const int H = int(px.dim(1)), W = int(px.dim(2));
  const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  Image img;
  img.w = W, img.h = H;
  img.px.resize(size_t(W) * size_t(H) * 3);
  for (int c = 0; c < 3; ++c)
    for (int k = 0; k < W * H; ++k) {
      const float v = (px.data[size_t(c * W * H + k)] * sd[c] + mean[c]) * 255.0f;
      img.px[size_t(k) * 3 + size_t(c)] = uint8_t(std::lround(std::clamp(v, 0.0f, 255.0f)));
    }
  return img;
}

ImageReport explain_image_report(const VimModel& m, const Tensor& pixels, const Image& crop, const std::string& model,
                                 const std::string& input, const ImageExplainSpec& spec) {
  const VimConfig& c = m.config();
  if (spec.methods.empty()) throw Error("--method", "no method given");
  ImageReport r;
  r.model = model, r.input = input;
  r.crop = crop.w > 0 ? crop : pixels_to_image(pixels);
  r.grid_h = c.grid_h, r.grid_w = c.grid_w, r.class_token = c.cls_index;
  for (int64_t k = 0; k < c.n_classes; ++k) {
    std::string n = size_t(k) < spec.class_names.size() ? spec.class_names[size_t(k)] : "";
    if (n.empty() && c.n_classes == 1000) n = imagenet_class_name(k);
    r.labels.push_back("class " + std::to_string(k) + (n.empty() ? "" : " (" + n + ")"));
  }
  ExplainOptions eo = spec.options;
  // The papers start rollout and attribution at layer 15 of Vim-S's 24; the same fraction of depth otherwise.
  if (!spec.start_layer_set) eo.start_layer = int64_t(std::lround(15.0 * double(c.n_layer) / 24.0));
  eo.start_layer = std::min(eo.start_layer, c.n_layer - 1);
  eo.target = Target{};
  eo.target.kind = Target::Kind::Class;
  eo.target.cls = spec.cls;
  for (Method me : spec.methods) {
    eo.method = me;
    log_verbose(std::string("explaining with ") + method_name(me));
    r.explanations.push_back(explain_image(m, pixels, eo));
    r.maps.push_back({method_name(me), patch_map(m, r.explanations.back().relevance)});
  }
  const std::vector<float>& l = r.explanations[0].output_logits;
  const float mx = *std::max_element(l.begin(), l.end());
  double z = 0;
  for (float v : l) z += std::exp(double(v) - mx);
  for (float v : l) r.probs.push_back(float(std::exp(double(v) - mx) / z));
  r.best = int64_t(std::max_element(r.probs.begin(), r.probs.end()) - r.probs.begin());
  r.cls = r.explanations[0].target.cls;
  return r;
}

std::string image_report_terminal(const ImageReport& r) {
  std::string s = "prediction: " + r.labels[size_t(r.best)] + "  p=" + fmt("%.4f", r.probs[size_t(r.best)]) + "\n";
  s += "target:     " + r.labels[size_t(r.cls)] + ", logit " + fmt("%.6g", r.explanations[0].target_value) +
       " (p=" + fmt("%.4f", r.probs[size_t(r.cls)]) + ")\n";
  for (size_t k = 0; k < r.explanations.size(); ++k) {
    const Explanation& e = r.explanations[k];
    const auto& mp = r.maps[k].second;
    const int64_t top = int64_t(std::max_element(mp.begin(), mp.end()) - mp.begin());
    s += e.method + ": most relevant patch row " + std::to_string(top / r.grid_w) + " col " +
         std::to_string(top % r.grid_w) + " (" + fmt("%.4g", mp[size_t(top)]) + ")";
    if (e.has_conservation) {
      const bool ig = e.method == "integrated-gradients";
      s += "; sum R = " + fmt("%.6g", e.relevance_sum) + (ig ? ", f(x) - f(baseline) = " : ", f = ") +
           fmt("%.6g", e.reference_value) + ", absorbed by biases = " + fmt("%.6g", ig ? 0.0 : e.bias_absorbed);
    }
    s += "\n";
  }
  return s;
}

nlohmann::ordered_json image_report_json(const ImageReport& r) {
  nlohmann::ordered_json j;
  j["model"] = r.model;
  j["input"] = r.input;
  j["grid"] = {r.grid_h, r.grid_w};
  j["class_token"] = r.class_token;
  j["prediction"] = {{"class", r.best}, {"label", r.labels[size_t(r.best)]}, {"probability", r.probs[size_t(r.best)]}};
  j["target"] = {{"kind", "class"}, {"class", r.cls}, {"label", r.labels[size_t(r.cls)]}, {"probability", r.probs[size_t(r.cls)]}};
  j["logit"] = r.explanations[0].target_value;
  j["explanations"] = nlohmann::ordered_json::array();
  for (size_t k = 0; k < r.explanations.size(); ++k) {
    const Explanation& x = r.explanations[k];
    nlohmann::ordered_json e;
    e["method"] = x.method;
    e["patch_map"] = r.maps[k].second;
    e["token_relevance"] = x.relevance;
    e["settings"] = x.settings;
    if (x.has_conservation)
      e["conservation"] = {{"relevance_sum", x.relevance_sum}, {"target_value", x.reference_value},
                           {"bias_absorbed", x.bias_absorbed},
                           {"gap", x.relevance_sum + (x.method == "integrated-gradients" ? 0.0 : x.bias_absorbed) - x.reference_value}};
    e["seconds"] = x.seconds;
    j["explanations"].push_back(e);
  }
  return j;
}

Image image_report_overlay(const ImageReport& r, size_t method) {
  if (method >= r.maps.size()) throw Error("overlay", "no method " + std::to_string(method));
  return overlay_heatmap(r.crop, r.maps[method].second.data(), int(r.grid_h), int(r.grid_w));
}

Image image_report_figure(const ImageReport& r) {
  return explanation_figure(r.crop, r.labels[size_t(r.cls)], r.maps, int(r.grid_h), int(r.grid_w));
}

std::string image_report_html(const ImageReport& r) {
  const nlohmann::ordered_json j = image_report_json(r);
  std::string h = "<!doctype html><html><head><meta charset=\"utf-8\"><title>ssmx explanation</title><style>"
                  "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
                  "padding:4px 8px;text-align:left}img{image-rendering:pixelated}</style></head><body>\n";
  h += "<h1>Why " + escape_html(r.labels[size_t(r.cls)]) + "?</h1>\n";
  h += "<p>model <code>" + escape_html(r.model) + "</code>, input <code>" + escape_html(r.input) + "</code>, prediction " +
       escape_html(r.labels[size_t(r.best)]) + " (p=" + fmt("%.4f", r.probs[size_t(r.best)]) + "), target logit " +
       fmt("%.6g", r.explanations[0].target_value) + "</p>\n";
  h += "<img alt=\"relevance maps\" src=\"" + png_data_uri(image_report_figure(r)) + "\">\n";
  h += "<table><tr><th>method</th><th>settings</th><th>sum of relevance</th><th>target value</th>"
       "<th>absorbed by biases</th><th>seconds</th></tr>\n";
  for (const auto& e : j["explanations"]) {
    h += "<tr><td>" + e["method"].get<std::string>() + "</td><td><code>" + escape_html(e["settings"].dump()) + "</code></td>";
    if (e.contains("conservation"))
      h += "<td>" + fmt("%.6g", e["conservation"]["relevance_sum"].get<double>()) + "</td><td>" +
           fmt("%.6g", e["conservation"]["target_value"].get<double>()) + "</td><td>" +
           fmt("%.6g", e["conservation"]["bias_absorbed"].get<double>()) + "</td>";
    else
      h += "<td>—</td><td>—</td><td>—</td>";
    h += "<td>" + fmt("%.3f", e["seconds"].get<double>()) + "</td></tr>\n";
  }
  h += "</table></body></html>\n";
  return h;
}

}  // namespace ssmx

// ssmx explain — per-token relevance for a prediction, by one or several methods; terminal, .npy, JSON and HTML.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api/explain_report.h"
#include "attribution/explain.h"
#include "common.h"
#include "core/error.h"
#include "core/runtime.h"
#include "models/class_head.h"
#include "models/mamba.h"
#include "models/imagenet_classes.h"
#include "render/image.h"
#include "render/overlay.h"
#include "render/report.h"

namespace ssmx::cli {

namespace {

struct ExplainCli {
  std::string model;
  InputSpec in;
  std::string methods = "mamba-lrp";
  std::string target, contrast, cls;
  int64_t position = -1;
  std::string out, json, html;
  bool words = false, no_color = false, zero_biases = false;
  std::string lrp_rules = "silu,ssm,gate,norm", linear_rule = "lrp0";
  double epsilon = 1e-6, gamma = 0.25;
  int steps = 32, samples = 16;
  std::string baseline = "zero";
  double noise = 0.1;
  uint64_t seed = 0;
  int64_t start_layer = 0;
  std::string compat = "none";
  ImageSpec img;
  std::string overlay, figure;
  bool start_layer_set = false;
};

void write_text_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw Error(path, "cannot write (no such directory or no permission)");
    f << content;
    f.close();
    if (!f) {
      std::remove(tmp.c_str());
      throw Error(path, "cannot write");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path, "cannot write");
  }
}

// The un-normalised RGB image behind preprocessed pixels (for overlays when the input was --pixels).
Image pixels_to_image(const Tensor& px) {
  const int H = int(px.dim(1)), W = int(px.dim(2));
  const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  Image img;
  img.w = W, img.h = H;
  img.px.resize(size_t(W * H * 3));
  for (int c = 0; c < 3; ++c)
    for (int k = 0; k < W * H; ++k) {
      const float v = (px.data[size_t(c * W * H + k)] * sd[c] + mean[c]) * 255.0f;
      img.px[size_t(k * 3 + c)] = uint8_t(std::lround(std::clamp(v, 0.0f, 255.0f)));
    }
  return img;
}

void run_image(const ExplainCli& o, const Globals& g, const Loaded& m) {
  const VimModel& vm = *m.vim;
  const VimConfig& c = vm.config();
  if (!o.target.empty() || !o.contrast.empty())
    throw Error("--target", o.model + " is a Vision Mamba: explain a class with --class C (default: the predicted class)");
  const LoadedImage in = load_image_input(o.img, vm);
  const Image crop = in.crop.w > 0 ? in.crop : pixels_to_image(in.pixels);
  ExplainOptions eo;
  eo.rules = parse_lrp_rules(o.lrp_rules, o.linear_rule, o.epsilon, o.gamma);
  eo.zero_biases = o.zero_biases;
  eo.ig_steps = o.steps, eo.ig_baseline = o.baseline;
  eo.sg_samples = o.samples, eo.sg_noise = o.noise, eo.seed = o.seed;
  // The papers start rollout and attribution at layer 15 of Vim-S's 24; the same fraction of depth otherwise.
  eo.start_layer = o.start_layer_set ? o.start_layer : int64_t(std::lround(15.0 * double(c.n_layer) / 24.0));
  eo.start_layer = std::min(eo.start_layer, c.n_layer - 1);
  eo.compat = o.compat;
  eo.target.kind = Target::Kind::Class;
  if (!o.cls.empty() && o.cls != "predicted") {
    if (o.cls.size() > 9 || o.cls.find_first_not_of("0123456789") != std::string::npos)
      throw Error("--class", "'" + o.cls + "' is not a class index");
    eo.target.cls = std::stoll(o.cls);
  }
  const std::vector<Method> methods = parse_method_list(o.methods);
  std::vector<Explanation> ex;
  std::vector<std::pair<std::string, std::vector<float>>> maps;
  for (Method me : methods) {
    eo.method = me;
    log_verbose(std::string("explaining with ") + method_name(me));
    ex.push_back(explain_image(vm, in.pixels, eo));
    maps.push_back({method_name(me), patch_map(vm, ex.back().relevance)});
  }
  const Explanation& e0 = ex[0];
  const int64_t cls = e0.target.cls, C = c.n_classes;
  auto label = [&](int64_t k) {
    const std::string n = C == 1000 ? imagenet_class_name(k) : "";
    return "class " + std::to_string(k) + (n.empty() ? "" : " (" + n + ")");
  };
  std::vector<float> p(e0.output_logits.size());
  {
    const float mx = *std::max_element(e0.output_logits.begin(), e0.output_logits.end());
    double z = 0;
    for (float v : e0.output_logits) z += std::exp(double(v) - mx);
    for (size_t k = 0; k < p.size(); ++k) p[k] = float(std::exp(double(e0.output_logits[k]) - mx) / z);
  }
  const int64_t best = int64_t(std::max_element(p.begin(), p.end()) - p.begin());
  std::printf("prediction: %s  p=%.4f\n", label(best).c_str(), p[size_t(best)]);
  std::printf("target:     %s, logit %.6g (p=%.4f)\n", label(cls).c_str(), e0.target_value, p[size_t(cls)]);
  const int64_t gh = c.grid_h, gw = c.grid_w;
  for (size_t k = 0; k < ex.size(); ++k) {
    const auto& mp = maps[k].second;
    const int64_t top = int64_t(std::max_element(mp.begin(), mp.end()) - mp.begin());
    std::printf("%s: most relevant patch row %lld col %lld (%.4g)", ex[k].method.c_str(), (long long)(top / gw),
                (long long)(top % gw), mp[size_t(top)]);
    if (ex[k].has_conservation) {
      const bool ig = ex[k].method == "integrated-gradients";
      std::printf("; sum R = %.6g, %s = %.6g, absorbed by biases = %.6g", ex[k].relevance_sum,
                  ig ? "f(x) - f(baseline)" : "f", ex[k].reference_value, ig ? 0.0 : ex[k].bias_absorbed);
    }
    std::printf("\n");
  }
  if (!o.out.empty()) {
    std::vector<float> all;
    for (const auto& mp : maps) all.insert(all.end(), mp.second.begin(), mp.second.end());
    if (maps.size() == 1) write_npy_atomic(o.out, all.data(), {gh, gw});
    else write_npy_atomic(o.out, all.data(), {int64_t(maps.size()), gh, gw});
  }
  if (!o.overlay.empty()) {
    write_png(o.overlay, overlay_heatmap(crop, maps[0].second.data(), int(gh), int(gw)));
    std::printf("wrote %s\n", o.overlay.c_str());
  }
  Image fig;
  if (!o.figure.empty() || !o.html.empty()) fig = explanation_figure(crop, label(cls), maps, int(gh), int(gw));
  if (!o.figure.empty()) {
    write_png(o.figure, fig);
    std::printf("wrote %s\n", o.figure.c_str());
  }
  nlohmann::ordered_json j;
  if (!o.json.empty() || !o.html.empty()) {
    j["model"] = o.model;
    j["input"] = o.img.image.empty() ? o.img.pixels : o.img.image;
    j["grid"] = {gh, gw};
    j["class_token"] = c.cls_index;
    j["prediction"] = {{"class", best}, {"label", label(best)}, {"probability", p[size_t(best)]}};
    j["target"] = {{"kind", "class"}, {"class", cls}, {"label", label(cls)}, {"probability", p[size_t(cls)]}};
    j["logit"] = e0.target_value;
    for (size_t k = 0; k < ex.size(); ++k) {
      nlohmann::ordered_json e;
      e["method"] = ex[k].method;
      e["patch_map"] = maps[k].second;
      e["token_relevance"] = ex[k].relevance;
      e["settings"] = ex[k].settings;
      if (ex[k].has_conservation)
        e["conservation"] = {{"relevance_sum", ex[k].relevance_sum}, {"target_value", ex[k].reference_value},
                             {"bias_absorbed", ex[k].bias_absorbed},
                             {"gap", ex[k].relevance_sum + (ex[k].method == "integrated-gradients" ? 0.0 : ex[k].bias_absorbed) -
                                         ex[k].reference_value}};
      e["seconds"] = ex[k].seconds;
      j["explanations"].push_back(e);
    }
  }
  if (!o.json.empty()) write_text_atomic(o.json, j.dump(1) + "\n");
  if (!o.html.empty()) {
    std::string h = "<!doctype html><html><head><meta charset=\"utf-8\"><title>ssmx explanation</title><style>"
                    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
                    "padding:4px 8px;text-align:left}</style></head><body>\n<h1>Why " + label(cls) + "?</h1>\n";
    h += "<p>model <code>" + o.model + "</code>, prediction " + label(best) + " (p=" + std::to_string(p[size_t(best)]) +
         "), target logit " + std::to_string(e0.target_value) + "</p>\n";
    h += "<img alt=\"relevance maps\" src=\"" + png_data_uri(fig) + "\">\n<table><tr><th>method</th><th>settings</th>"
         "<th>sum of relevance</th><th>target value</th><th>absorbed by biases</th><th>seconds</th></tr>\n";
    for (const auto& e : j["explanations"]) {
      h += "<tr><td>" + e["method"].get<std::string>() + "</td><td><code>" + e["settings"].dump() + "</code></td>";
      if (e.contains("conservation"))
        h += "<td>" + std::to_string(e["conservation"]["relevance_sum"].get<double>()) + "</td><td>" +
             std::to_string(e["conservation"]["target_value"].get<double>()) + "</td><td>" +
             std::to_string(e["conservation"]["bias_absorbed"].get<double>()) + "</td>";
      else
        h += "<td>—</td><td>—</td><td>—</td>";
      h += "<td>" + std::to_string(e["seconds"].get<double>()) + "</td></tr>\n";
    }
    h += "</table></body></html>\n";
    write_text_atomic(o.html, h);
    std::printf("wrote %s\n", o.html.c_str());
  }
}

void run(const ExplainCli& o, const Globals& g) {
  set_verbose(g.verbose);
  set_num_threads(g.threads);
  log_verbose(blas_core_reason());
  log_verbose("threads: " + std::to_string(num_threads()));
  Loaded m = load_model(o.model);
  if (m.vim) {
    run_image(o, g, m);
    return;
  }
  if (o.img.given()) throw Error("--image", o.model + " is a language model; give --text or --ids");
  const auto* mm = dynamic_cast<const MambaModel*>(m.model.get());
  if (!mm) throw Error(o.model, "explain supports the Mamba and Falcon-Mamba families so far");
  std::vector<int32_t> ids = resolve_input(m, o.in, o.model);

  ExplainSpec spec;
  spec.methods = parse_method_list(o.methods);
  spec.target = o.target;
  spec.contrast = o.contrast;
  spec.cls = o.cls;
  spec.position = o.position;
  spec.words = o.words;
  spec.keep_maps = !o.html.empty() && ids.size() <= 256;
  ExplainOptions& eo = spec.options;
  eo.rules = parse_lrp_rules(o.lrp_rules, o.linear_rule, o.epsilon, o.gamma);
  eo.zero_biases = o.zero_biases;
  eo.ig_steps = o.steps;
  eo.ig_baseline = o.baseline;
  eo.sg_samples = o.samples;
  eo.sg_noise = o.noise;
  eo.seed = o.seed;
  eo.start_layer = o.start_layer;
  eo.compat = o.compat;
  const Report rep = explain_report(*mm, m.ck, m.tok ? &*m.tok : nullptr, o.model, o.in.ids.empty() ? o.in.text : "",
                                    ids, spec);
  const size_t n_methods = rep.explanations.size();
  const Explanation& e0 = rep.explanations[0];

  if (!o.out.empty()) {
    if (n_methods == 1) {
      write_npy_atomic(o.out, e0.relevance.data(), {int64_t(ids.size())});
    } else {
      std::vector<float> all;
      for (const auto& e : rep.explanations) all.insert(all.end(), e.relevance.begin(), e.relevance.end());
      write_npy_atomic(o.out, all.data(), {int64_t(n_methods), int64_t(ids.size())});
    }
  }
  if (!o.json.empty()) write_text_atomic(o.json, report_json(rep).dump(1) + "\n");
  if (!o.html.empty()) write_text_atomic(o.html, render_html(rep));
  const bool color = !o.no_color && ::isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR");
  std::fputs(render_terminal(rep, color).c_str(), stdout);
  if (!o.html.empty()) std::printf("wrote %s\n", o.html.c_str());
}

}  // namespace

void register_explain(CLI::App& app, Globals& g) {
  auto o = std::make_shared<ExplainCli>();
  CLI::App* sub = app.add_subcommand("explain", "Per-token relevance of a prediction (gradients, attention, MambaLRP)");
  sub->footer(
      "Methods: gradient, grad-input, integrated-gradients, smoothgrad, random, raw-attention, rollout, mamba-attr,\n"
      "unified-attr, mamba-lrp, lrp-ln (or 'all'); several at once with --method a,b,c. Formulas: docs/methods.md.\n"
      "Example: ssmx explain models/sentiment-mamba --text \"...\" --method mamba-lrp,grad-input --html report.html");
  sub->add_option("model", o->model, "Model directory or weights file")->required();
  add_input_options(sub, o->in);
  sub->add_option("-m,--method", o->methods, "Method(s), comma-separated")->capture_default_str();
  sub->add_option("--target", o->target,
                  "Target token: an id, or the text of one token (default: the predicted next token)");
  sub->add_option("--contrast", o->contrast, "Explain logit(target) - logit(contrast): an id or one token's text");
  sub->add_option("--position", o->position, "Position whose next-token logits are explained (default: last; -k counts from the end)");
  sub->add_option("--class", o->cls, "Class of the model's classification head: index, label, or 'predicted'");
  sub->add_option("-o,--out", o->out,
                  "Write the relevance as float32 .npy: [T] ([M, T] for M methods); images: the patch map [H, W] ([M, H, W])");
  sub->add_option("--json", o->json, "Write tokens, ids, offsets, relevance, target, logit and settings as JSON");
  sub->add_option("--html", o->html, "Write a self-contained HTML report");
  sub->add_flag("--words", o->words, "Sum sub-word tokens into words");
  sub->add_flag("--no-color", o->no_color, "Print a table instead of coloured tokens (also: NO_COLOR, or not a terminal)");
  sub->add_option("--lrp-rules", o->lrp_rules, "mamba-lrp rules: subset of silu,ssm,gate,norm, or none")->capture_default_str();
  sub->add_option("--linear-rule", o->linear_rule, "Rule for in_proj/out_proj in LRP methods: lrp0, epsilon, gamma")
      ->capture_default_str();
  sub->add_option("--epsilon", o->epsilon, "Epsilon of the epsilon rule")->capture_default_str();
  sub->add_option("--gamma", o->gamma, "Gamma of the gamma rule")->capture_default_str();
  sub->add_option("--steps", o->steps, "integrated-gradients: steps")->capture_default_str();
  sub->add_option("--baseline", o->baseline, "integrated-gradients: zero, or token:ID")->capture_default_str();
  sub->add_option("--samples", o->samples, "smoothgrad: samples")->capture_default_str();
  sub->add_option("--noise", o->noise, "smoothgrad: noise level (fraction of the embeddings' range)")->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed for smoothgrad and random")->capture_default_str();
  auto* sl = sub->add_option("--start-layer", o->start_layer,
                             "First layer used by attention methods (default 0; images: 15/24 of the depth)");
  add_image_options(sub, o->img);
  sub->add_option("--overlay", o->overlay, "Images: write the first method's map over the image as PNG");
  sub->add_option("--figure", o->figure, "Images: write the image and every method's map side by side as PNG");
  sub->add_option("--compat", o->compat, "none, or official: the published code's variant of the attention methods")
      ->capture_default_str();
  sub->add_flag("--zero-biases", o->zero_biases, "Run the model as if every bias were zero (conservation checks)");
  sub->callback([o, &g, sl] {
    o->start_layer_set = sl->count() > 0;
    run(*o, g);
  });
}

}  // namespace ssmx::cli

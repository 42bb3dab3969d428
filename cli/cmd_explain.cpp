// ssmx explain — per-token relevance for a prediction, by one or several methods; terminal, .npy, JSON and HTML.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api/explain_report.h"
#include "api/image_report.h"
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

void run_image(const ExplainCli& o, const Loaded& m) {
  const VimModel& vm = *m.vim;
  if (!o.target.empty() || !o.contrast.empty())
    throw Error("--target", o.model + " is a Vision Mamba: explain a class with --class C (default: the predicted class)");
  const LoadedImage in = load_image_input(o.img, vm);
  ImageExplainSpec spec;
  spec.methods = parse_method_list(o.methods);
  spec.class_names = read_class_names(m.ck, vm.config().n_classes);
  ExplainOptions& eo = spec.options;
  eo.rules = parse_lrp_rules(o.lrp_rules, o.linear_rule, o.epsilon, o.gamma);
  eo.zero_biases = o.zero_biases;
  eo.ig_steps = o.steps, eo.ig_baseline = o.baseline;
  eo.sg_samples = o.samples, eo.sg_noise = o.noise, eo.seed = o.seed;
  eo.start_layer = o.start_layer;
  eo.compat = o.compat;
  spec.start_layer_set = o.start_layer_set;
  if (!o.cls.empty() && o.cls != "predicted") {
    if (o.cls.size() > 9 || o.cls.find_first_not_of("0123456789") != std::string::npos)
      throw Error("--class", "'" + o.cls + "' is not a class index");
    spec.cls = std::stoll(o.cls);
  }
  const ImageReport r = explain_image_report(vm, in.pixels, in.crop, o.model, o.img.image.empty() ? o.img.pixels : o.img.image, spec);
  std::fputs(image_report_terminal(r).c_str(), stdout);
  if (!o.out.empty()) {
    std::vector<float> all;
    for (const auto& mp : r.maps) all.insert(all.end(), mp.second.begin(), mp.second.end());
    if (r.maps.size() == 1) write_npy_atomic(o.out, all.data(), {r.grid_h, r.grid_w});
    else write_npy_atomic(o.out, all.data(), {int64_t(r.maps.size()), r.grid_h, r.grid_w});
  }
  if (!o.overlay.empty()) {
    write_png(o.overlay, image_report_overlay(r));
    std::printf("wrote %s\n", o.overlay.c_str());
  }
  if (!o.figure.empty()) {
    write_png(o.figure, image_report_figure(r));
    std::printf("wrote %s\n", o.figure.c_str());
  }
  if (!o.json.empty()) write_text_atomic(o.json, image_report_json(r).dump(1) + "\n");
  if (!o.html.empty()) {
    write_text_atomic(o.html, image_report_html(r));
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
    run_image(o, m);
    return;
  }
  if (o.img.given()) throw Error("--image", o.model + " is a language model; give --text or --ids");
  const CausalLM* mm = m.model.get();
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
  sub->add_option("MODEL", o->model, "Model directory or weights file")->required();
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

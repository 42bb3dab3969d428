// ssmx eval perturbation | segmentation — the vision faithfulness and localisation protocols for Vision Mamba
// (docs/vision-eval.md), resumable and sharded like `eval flipping`; the image pointing game of `eval evidence`;
// the vision half of `eval merge`.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api/explain_report.h"
#include "api/image_report.h"
#include "common.h"
#include "core/error.h"
#include "core/runtime.h"
#include "eval/runner.h"
#include "eval/vision_runner.h"
#include "progress.h"

namespace ssmx::cli {

namespace {

void parse_shard(const std::string& s, int64_t& si, int64_t& sn) {
  const size_t sl = s.find('/');
  if (sl == std::string::npos || sl == 0 || sl + 1 >= s.size() || s.find_first_not_of("0123456789/") != std::string::npos ||
      s.find('/', sl + 1) != std::string::npos || s.size() > 18)
    throw Error("--shard", "expected I/N, got '" + s + "'");
  si = std::stoll(s.substr(0, sl)), sn = std::stoll(s.substr(sl + 1));
  if (sn < 1 || si >= sn) throw Error("--shard", "expected I/N with 0 <= I < N, got '" + s + "'");
}

// "10" → 0.1 … 0.9; "0.1,0.5,0.9" → those fractions.
std::vector<double> parse_steps(const std::string& s) {
  std::vector<double> out;
  if (s.find_first_not_of("0123456789") == std::string::npos && !s.empty() && s.size() < 7) {
    const int n = std::stoi(s);
    if (n < 2) throw Error("--steps", "a count of steps must be at least 2, got '" + s + "'");
    for (int i = 1; i < n; ++i) out.push_back(double(i) / double(n));
    return out;
  }
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string v = s.substr(pos, end - pos);
    size_t used = 0;
    double f = 0;
    try {
      f = std::stod(v, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || used != v.size()) throw Error("--steps", "expected fractions like 0.1,0.2 or a count, got '" + s + "'");
    if (!(f > 0 && f <= 1)) throw Error("--steps", "fraction " + v + " is outside (0, 1]");
    if (!out.empty() && !(f > out.back())) throw Error("--steps", "fractions must increase, got '" + s + "'");
    out.push_back(f);
    pos = end + 1;
  }
  return out;
}

void write_text_file(const std::string& path, const std::string& s) {
  std::ofstream f(path);
  if (!f) throw Error(path, "cannot write");
  f << s;
  if (!f) throw Error(path, "cannot write");
}

struct VisionCli {
  std::string model, data, labels, methods = "random,grad-input,mamba-lrp", mode = "both", steps = "10";
  std::string transform = "deit";
  bool include_zero = false, compat_ap = false, resume = false;
  int64_t limit = 0, start_layer = -1;
  uint64_t seed = 0;
  std::string shard = "0/1", out, plot, markdown, csv, json, compat = "none";
};

struct Prepared {
  Loaded m;
  VisionData data;
  VisionRunSpec spec;
  int64_t mine = 0;
};

Prepared prepare(const VisionCli& o, const Globals& g, const char* what) {
  set_verbose(g.verbose);
  set_num_threads(g.threads);
  log_verbose(blas_core_reason());
  Prepared p;
  parse_shard(o.shard, p.spec.shard, p.spec.shards);
  if (o.resume && o.out.empty()) throw Error("--resume", "needs --out");
  if (o.limit < 0) throw Error("--limit", "must not be negative");
  if (o.start_layer < -1) throw Error("--start-layer", "must not be negative");
  if (o.compat != "none" && o.compat != "official") throw Error("--compat", "expected none or official, got '" + o.compat + "'");
  p.spec.methods = parse_method_list(o.methods);
  p.spec.base.start_layer = o.start_layer;
  p.spec.base.seed = o.seed;
  p.spec.base.compat = o.compat;
  p.spec.out = o.out;
  p.spec.resume = o.resume;
  p.m = load_model(o.model);
  if (!p.m.vim) throw Error(o.model, std::string("eval ") + what + " needs a Vision Mamba (for text models: eval flipping)");
  p.data = read_vision_data(o.data, o.labels, read_class_names(p.m.ck, p.m.vim->config().n_classes));
  if (o.limit > 0 && int64_t(p.data.examples.size()) > o.limit) p.data.examples.resize(size_t(o.limit));
  for (const auto& ex : p.data.examples) p.mine += ex.index % p.spec.shards == p.spec.shard;
  return p;
}

void run_perturbation_cli(const VisionCli& o, const Globals& g) {
  // option checks first: a usage error must not wait for the model
  if (o.mode != "positive" && o.mode != "negative" && o.mode != "both")
    throw Error("--mode", "expected positive, negative or both, got '" + o.mode + "'");
  const std::vector<double> steps = parse_steps(o.steps);
  if (o.transform != "deit" && o.transform != "resize")
    throw Error("--transform", "expected deit or resize, got '" + o.transform + "'");
  Prepared p = prepare(o, g, "perturbation");
  p.spec.plain_resize = o.transform == "resize";
  p.spec.positive = o.mode != "negative";
  p.spec.negative = o.mode != "positive";
  p.spec.steps = steps;
  p.spec.include_zero = o.include_zero;
  Progress bar("perturbation", p.mine, g.verbose);
  const auto recs = run_perturbation(*p.m.vim, p.data, p.spec, [&] { bar.step(); });
  bar.done();
  const auto sum = summarize_perturbation(o.out.empty() ? recs : read_vision_records({o.out}, "perturbation"));
  const std::string md = perturbation_markdown(sum);
  const VimConfig& c = p.m.vim->config();
  std::printf("%s\n%lld images of %s (shard %lld/%lld), %lldx%lld pixels, explaining the predicted class%s\n", md.c_str(),
              (long long)p.mine, o.data.c_str(), (long long)p.spec.shard, (long long)p.spec.shards, (long long)c.img_w,
              (long long)c.img_h, o.include_zero ? ", AUC from x = 0" : ", AUC over the steps");
  if (!o.markdown.empty()) write_text_file(o.markdown, md);
  if (!o.csv.empty()) write_text_file(o.csv, perturbation_csv(sum));
  if (!o.json.empty()) write_text_file(o.json, perturbation_json(sum).dump(1) + "\n");
  if (!o.plot.empty()) plot_perturbation(sum, o.plot);
}

void run_segmentation_cli(const VisionCli& o, const Globals& g) {
  Prepared p = prepare(o, g, "segmentation");
  p.spec.compat_unnormalised_ap = o.compat_ap;
  Progress bar("segmentation", p.mine, g.verbose);
  const auto recs = run_segmentation(*p.m.vim, p.data, p.spec, [&] { bar.step(); });
  bar.done();
  const auto sum = summarize_segmentation(o.out.empty() ? recs : read_vision_records({o.out}, "segmentation"));
  const std::string md = segmentation_markdown(sum);
  std::printf("%s\n%lld images of %s (shard %lld/%lld), mAP %s\n", md.c_str(), (long long)p.mine, o.data.c_str(),
              (long long)p.spec.shard, (long long)p.spec.shards,
              o.compat_ap ? "on the raw maps (compat)" : "on min-max normalised maps");
  if (!o.markdown.empty()) write_text_file(o.markdown, md);
  if (!o.csv.empty()) write_text_file(o.csv, segmentation_csv(sum));
  if (!o.json.empty()) write_text_file(o.json, segmentation_json(sum).dump(1) + "\n");
}

void add_common(CLI::App* sub, VisionCli& o) {
  sub->add_option("MODEL", o.model, "Vision Mamba model directory")->required();
  sub->add_option("-m,--method", o.methods, "Methods, comma-separated (or all)")->capture_default_str();
  sub->add_option("--limit", o.limit, "Use only the first N images");
  sub->add_option("--shard", o.shard, "I/N: the images with index % N == I")->capture_default_str();
  sub->add_option("--out", o.out, "JSONL results, one line per image and method");
  sub->add_flag("--resume", o.resume, "Skip the image x method records already in --out");
  sub->add_option("--seed", o.seed, "Seed of random/smoothgrad (plus the image index)")->capture_default_str();
  sub->add_option("--start-layer", o.start_layer, "First layer of the attention methods (default: 15/24 of the depth)");
  sub->add_option("--compat", o.compat, "none or official (the published attention-method variants)")->capture_default_str();
  sub->add_option("--markdown", o.markdown, "Write the table as Markdown");
  sub->add_option("--csv", o.csv, "Write the table as CSV");
  sub->add_option("--json", o.json, "Write the table as JSON");
}

}  // namespace

void run_image_evidence(const Loaded& m, const std::string& model, const std::string& data, const std::string& methods,
                        int64_t limit, int64_t start_layer, const std::string& json, const Globals& g) {
  VisionData d = read_vision_data(data, "", read_class_names(m.ck, m.vim->config().n_classes));
  if (limit > 0 && int64_t(d.examples.size()) > limit) d.examples.resize(size_t(limit));
  VisionRunSpec spec;
  spec.methods = parse_method_list(methods);
  spec.base.start_layer = start_layer;
  Progress bar("pointing game", int64_t(d.examples.size()), g.verbose);
  const auto sum = summarize_segmentation(run_segmentation(*m.vim, d, spec, [&] { bar.step(); }));
  bar.done();
  std::printf("%s\n%lld images of %s; pointing: the top patch is at least half object; energy: share of the positive "
              "relevance inside the object mask\n",
              pointing_markdown(sum).c_str(), (long long)d.examples.size(), data.c_str());
  if (!json.empty()) {
    nlohmann::json j;
    j["model"] = model;
    j["data"] = data;
    j["images"] = d.examples.size();
    for (const auto& s : sum)
      j["methods"].push_back({{"method", s.method}, {"pointing_game", s.pointing}, {"energy", s.energy},
                              {"mask_fraction", s.mask_fraction}});
    write_text_file(json, j.dump(1) + "\n");
  }
}

bool merge_vision(const std::vector<std::string>& inputs, const std::string& markdown, const std::string& csv,
                  const std::string& json, const std::string& plot) {
  std::string kind;
  for (const auto& p : inputs)
    if (kind.empty()) kind = result_file_kind(p);
  if (kind != "perturbation" && kind != "segmentation") return false;
  std::string md, cs, js;
  if (kind == "perturbation") {
    const auto sum = summarize_perturbation(read_vision_records(inputs, kind));
    md = perturbation_markdown(sum), cs = perturbation_csv(sum), js = perturbation_json(sum).dump(1) + "\n";
    if (!plot.empty()) plot_perturbation(sum, plot);
  } else {
    const auto sum = summarize_segmentation(read_vision_records(inputs, kind));
    md = segmentation_markdown(sum), cs = segmentation_csv(sum), js = segmentation_json(sum).dump(1) + "\n";
    if (!plot.empty()) throw Error("--plot", "segmentation results have no curves to plot");
  }
  std::printf("%s", md.c_str());
  if (!markdown.empty()) write_text_file(markdown, md);
  if (!csv.empty()) write_text_file(csv, cs);
  if (!json.empty()) write_text_file(json, js);
  return true;
}

void register_eval_vision(CLI::App& app, Globals& g) {
  CLI::App* ev = app.get_subcommand("eval");
  auto p = std::make_shared<VisionCli>();
  CLI::App* pe = ev->add_subcommand(
      "perturbation", "Positive/negative pixel perturbation of a Vision Mamba (top-1 accuracy per step, AUC)");
  add_common(pe, *p);
  pe->add_option("--data", p->data, "ImageNet val folder (DIR/<wnid>/*.JPEG), a flat DIR with --labels, or a JSONL list")
      ->required();
  pe->add_option("--labels", p->labels, "Labels of a flat image folder (one integer a line, or CSV file,label)");
  pe->add_option("--mode", p->mode, "positive, negative or both")->capture_default_str();
  pe->add_option("--steps", p->steps, "Fractions removed: a count S (1/S … (S-1)/S) or a list 0.1,0.2,…")
      ->capture_default_str();
  pe->add_option("--transform", p->transform,
                 "deit (shorter side to H/0.875 bicubic, centre crop; none at 32 px or less) or resize (to HxW, no crop)")
      ->capture_default_str();
  pe->add_flag("--include-zero", p->include_zero, "Also classify the unperturbed image: the AUC starts at x = 0");
  pe->add_option("--plot", p->plot, "Write the accuracy curves as PNG and SVG into DIR");
  pe->callback([p, &g] { run_perturbation_cli(*p, g); });

  auto s = std::make_shared<VisionCli>();
  CLI::App* se = ev->add_subcommand(
      "segmentation", "Relevance maps against object masks: pixel accuracy, mIoU, mAP, mF1 and the pointing game");
  add_common(se, *s);
  se->add_option("--data", s->data, "gtsegs_ijcv.mat (ImageNet-Segmentation) or a JSONL list with image and mask")
      ->required();
  se->add_flag("--compat-unnormalised-ap", s->compat_ap, "mAP on the raw maps (MambaVision's script)");
  se->callback([s, &g] { run_segmentation_cli(*s, g); });
}

}  // namespace ssmx::cli

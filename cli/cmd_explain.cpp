// ssmx explain — per-token relevance for a prediction, by one or several methods; terminal, .npy, JSON and HTML.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "attribution/explain.h"
#include "common.h"
#include "core/error.h"
#include "core/runtime.h"
#include "models/class_head.h"
#include "models/mamba.h"
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
};

LrpRules parse_rules(const ExplainCli& o) {
  LrpRules r;
  if (o.lrp_rules != "none" && !o.lrp_rules.empty()) {
    size_t pos = 0;
    while (pos <= o.lrp_rules.size()) {
      size_t end = o.lrp_rules.find(',', pos);
      if (end == std::string::npos) end = o.lrp_rules.size();
      const std::string name = o.lrp_rules.substr(pos, end - pos);
      if (name == "silu") r.silu = true;
      else if (name == "ssm") r.ssm = true;
      else if (name == "gate") r.gate = true;
      else if (name == "norm") r.norm = true;
      else throw Error("--lrp-rules", "unknown rule '" + name + "' (a comma-separated subset of silu,ssm,gate,norm, or none)");
      pos = end + 1;
    }
  }
  if (o.linear_rule == "lrp0") r.linear = LrpRules::Linear::Zero;
  else if (o.linear_rule == "epsilon") r.linear = LrpRules::Linear::Epsilon;
  else if (o.linear_rule == "gamma") r.linear = LrpRules::Linear::Gamma;
  else throw Error("--linear-rule", "unknown rule '" + o.linear_rule + "' (lrp0, epsilon or gamma)");
  r.epsilon = o.epsilon;
  r.gamma = o.gamma;
  return r;
}

// A token given as an id ("1234") or as the text of exactly one token (" positive").
int32_t parse_token(const Loaded& m, const std::string& s, const char* opt) {
  if (!s.empty() && s.size() <= 10 && s.find_first_not_of("0123456789") == std::string::npos) {
    const long long v = std::stoll(s);
    if (v > 2147483647LL) throw Error(opt, "token id " + s + " is too large");
    return int32_t(v);
  }
  if (!m.tok) throw Error(opt, "'" + s + "' is not a token id, and the model has no tokenizer.json to read it as text");
  if (auto id = m.tok->token_to_id(s)) return *id;
  const std::vector<int32_t> ids = m.tok->encode_ids(s);
  if (ids.size() == 1) return ids[0];
  std::string parts;
  for (int32_t id : ids) parts += (parts.empty() ? "" : " ") + std::string("'") + printable_token(m.tok->token_text(id)) + "'";
  throw Error(opt, "'" + s + "' is " + std::to_string(ids.size()) + " tokens (" + parts +
                       "), not one; give a single token or its id");
}

std::string token_label(const Loaded& m, int32_t id) {
  std::string t = m.tok ? m.tok->token_text(id) : "";
  return "'" + printable_token(t) + "' (id " + std::to_string(id) + ")";
}

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

std::vector<float> softmax(const std::vector<float>& l) {
  std::vector<float> p(l.size());
  if (l.empty()) return p;
  float m = l[0];
  for (float v : l) m = std::max(m, v);
  double s = 0;
  for (size_t i = 0; i < l.size(); ++i) s += std::exp(double(l[i]) - m);
  for (size_t i = 0; i < l.size(); ++i) p[i] = float(std::exp(double(l[i]) - m) / s);
  return p;
}

void run(const ExplainCli& o, const Globals& g) {
  set_verbose(g.verbose);
  set_num_threads(g.threads);
  log_verbose(blas_core_reason());
  log_verbose("threads: " + std::to_string(num_threads()));
  Loaded m = load_model(o.model);
  const auto* mm = dynamic_cast<const MambaModel*>(m.model.get());
  if (!mm) throw Error(o.model, "explain supports the Mamba and Falcon-Mamba families so far");
  std::vector<int32_t> ids = resolve_input(m, o.in, o.model);
  Encoding enc;
  if (!o.in.text.empty()) enc = m.tok->encode(o.in.text);

  std::vector<Method> methods;
  {
    size_t pos = 0;
    while (pos <= o.methods.size()) {
      size_t end = o.methods.find(',', pos);
      if (end == std::string::npos) end = o.methods.size();
      const std::string name = o.methods.substr(pos, end - pos);
      if (name == "all") {
        for (Method x : all_methods()) methods.push_back(x);
      } else {
        methods.push_back(parse_method(name));
      }
      pos = end + 1;
    }
  }

  std::optional<ClassHead> head = load_class_head(m.ck, mm->config().d_model, mm->config().vocab);
  ExplainOptions eo;
  eo.rules = parse_rules(o);
  eo.zero_biases = o.zero_biases;
  eo.ig_steps = o.steps;
  eo.ig_baseline = o.baseline;
  eo.sg_samples = o.samples;
  eo.sg_noise = o.noise;
  eo.seed = o.seed;
  eo.start_layer = o.start_layer;
  eo.compat = o.compat;
  eo.keep_maps = !o.html.empty() && ids.size() <= 256;
  Target& t = eo.target;
  t.position = o.position;
  if (!o.cls.empty()) {
    if (!head) throw Error("--class", "the model has no classification head (docs/methods.md lists the tensor names read)");
    if (!o.target.empty() || !o.contrast.empty()) throw Error("--class", "give either --class or --target/--contrast");
    t.kind = Target::Kind::Class;
    t.cls = o.cls == "predicted" ? -1 : head->parse_class(o.cls);
  } else {
    if (!o.target.empty()) t.token = parse_token(m, o.target, "--target");
    if (!o.contrast.empty()) {
      t.kind = Target::Kind::Contrast;
      t.contrast = parse_token(m, o.contrast, "--contrast");
    }
  }

  Report rep;
  rep.model = o.model;
  rep.input_text = o.in.text;
  rep.words = o.words;
  for (size_t k = 0; k < ids.size(); ++k) {
    ReportToken rt;
    rt.id = ids[k];
    rt.text = m.tok ? m.tok->token_text(ids[k]) : std::to_string(ids[k]);
    if (k < enc.offsets.size()) rt.begin = enc.offsets[k].first, rt.end = enc.offsets[k].second;
    rep.tokens.push_back(rt);
  }
  for (Method me : methods) {
    eo.method = me;
    log_verbose(std::string("explaining with ") + method_name(me));
    rep.explanations.push_back(explain(*mm, head ? &*head : nullptr, ids, eo));
    log_verbose(std::string(method_name(me)) + " took " + std::to_string(rep.explanations.back().seconds) + " s");
  }
  const Explanation& e0 = rep.explanations[0];
  const std::vector<float> p = softmax(e0.output_logits);
  const size_t best = size_t(std::max_element(p.begin(), p.end()) - p.begin());
  rep.prediction_prob = p[best];
  if (e0.target.kind == Target::Kind::Class) {
    rep.prediction_label = "class " + std::to_string(best) + " (" + head->labels[best] + ")";
    rep.target_label = "class " + std::to_string(e0.target.cls) + " (" + head->labels[size_t(e0.target.cls)] + ")";
    rep.target_prob = p[size_t(e0.target.cls)];
  } else {
    rep.prediction_label = token_label(m, int32_t(best));
    rep.target_label = token_label(m, e0.target.token);
    rep.target_prob = p[size_t(e0.target.token)];
    if (e0.target.kind == Target::Kind::Contrast) rep.contrast_label = token_label(m, e0.target.contrast);
  }

  if (!o.out.empty()) {
    if (methods.size() == 1) {
      write_npy_atomic(o.out, e0.relevance.data(), {int64_t(ids.size())});
    } else {
      std::vector<float> all;
      for (const auto& e : rep.explanations) all.insert(all.end(), e.relevance.begin(), e.relevance.end());
      write_npy_atomic(o.out, all.data(), {int64_t(methods.size()), int64_t(ids.size())});
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
  sub->add_option("-o,--out", o->out, "Write the relevance as float32 .npy: [T] ([M, T] for M methods)");
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
  sub->add_option("--start-layer", o->start_layer, "First layer used by attention methods")->capture_default_str();
  sub->add_option("--compat", o->compat, "none, or official: the published code's variant of the attention methods")
      ->capture_default_str();
  sub->add_flag("--zero-biases", o->zero_biases, "Run the model as if every bias were zero (conservation checks)");
  sub->callback([o, &g] { run(*o, g); });
}

}  // namespace ssmx::cli

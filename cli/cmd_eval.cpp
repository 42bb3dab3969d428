// ssmx eval — evaluation protocols for explanations. So far: `evidence` (pointing game and evidence recall on data
// whose deciding words are known, e.g. models/sentiment-mamba/heldout.jsonl).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api/explain_report.h"
#include "attribution/explain.h"
#include "common.h"
#include "core/error.h"
#include "core/runtime.h"
#include "eval/evidence.h"
#include "eval/flipping.h"
#include "eval/runner.h"
#include "eval/text_data.h"
#include "models/mamba.h"
#include "progress.h"

namespace ssmx::cli {

namespace {

struct EvidenceCli {
  std::string model, data, methods = "grad-input,mamba-lrp", json;
  int top_k = 3;
  int skip_first = 0, skip_last = 0;
  bool contrast = false;
  int64_t limit = 0;
  int64_t start_layer = -1;  // -1: 0 for text, 15/24 of the depth for images
};

void run_evidence(const EvidenceCli& o, const Globals& g) {
  set_verbose(g.verbose);
  set_num_threads(g.threads);
  log_verbose(blas_core_reason());
  if (o.top_k < 1) throw Error("--top-k", "must be at least 1");
  if (o.start_layer < -1) throw Error("--start-layer", "must not be negative");
  if (o.skip_first < 0 || o.skip_last < 0) throw Error("--skip-first/--skip-last", "must not be negative");
  Loaded m = load_model(o.model);
  if (m.vim) {  // images with object masks: the image pointing game
    run_image_evidence(m, o.model, o.data, o.methods, o.limit, o.start_layer, o.json, g);
    return;
  }
  const CausalLM* mm = m.model.get();
  if (!mm) throw Error(o.model, "is an image model; this evaluation needs a language model");
  if (!m.tok) throw Error(o.model, "no tokenizer.json next to the weights (the data is text)");
  std::vector<EvidenceExample> data = read_evidence_jsonl(o.data);
  if (o.limit > 0 && int64_t(data.size()) > o.limit) data.resize(size_t(o.limit));
  const std::vector<Method> methods = parse_method_list(o.methods);
  ExplainOptions base;
  base.start_layer = std::max<int64_t>(o.start_layer, 0);
  Progress bar("evidence", int64_t(data.size()), g.verbose);
  const auto sc = evaluate_evidence(*mm, *m.tok, data, methods, base, {o.top_k, o.skip_first, o.skip_last, o.contrast}, [&] { bar.step(); });
  bar.done();
  std::printf("| method | pointing game | recall@|E| | hit@%d | s/example |\n|---|---|---|---|---|\n", o.top_k);
  for (const auto& s : sc)
    std::printf("| %s | %.3f | %.3f | %.3f | %.4f |\n", s.method.c_str(), s.pointing, s.recall, s.hit_at_k,
                s.examples ? s.seconds / double(s.examples) : 0.0);
  std::printf("\n%lld examples from %s\n", (long long)data.size(), o.data.c_str());
  if (!o.json.empty()) {
    nlohmann::json j;
    j["model"] = o.model;
    j["data"] = o.data;
    j["examples"] = data.size();
    j["top_k"] = o.top_k;
    j["skip_first"] = o.skip_first;
    j["skip_last"] = o.skip_last;
    j["target"] = o.contrast ? "logit(target) - logit(strongest other target)" : "logit(target)";
    for (const auto& s : sc)
      j["methods"].push_back({{"method", s.method}, {"pointing_game", s.pointing}, {"recall_at_E", s.recall},
                              {"hit_at_k", s.hit_at_k}, {"seconds", s.seconds}});
    std::ofstream f(o.json);
    if (!f) throw Error(o.json, "cannot write");
    f << j.dump(1) << "\n";
    if (!f) throw Error(o.json, "cannot write");
  }
}

struct FlipCli {
  std::string model, data, format, text_field, label_field = "label", labels, tpl, methods = "random,grad-input,mamba-lrp";
  std::string mask = "zero", out, plot;
  int steps = 0;
  int skip_first = 0, skip_last = 0;
  bool abs = false, resume = false;
  int64_t limit = 0, start_layer = 0;
  uint64_t seed = 0;
  std::string shard = "0/1";
};

void write_text(const std::string& path, const std::string& s) {
  std::ofstream f(path);
  if (!f) throw Error(path, "cannot write");
  f << s;
  if (!f) throw Error(path, "cannot write");
}

void run_flipping_cli(const FlipCli& o, const Globals& g) {
  set_verbose(g.verbose);
  set_num_threads(g.threads);
  log_verbose(blas_core_reason());
  int64_t si = 0, sn = 1;
  {
    const size_t sl = o.shard.find('/');
    if (sl == std::string::npos || sl == 0 || sl + 1 >= o.shard.size() ||
        o.shard.find_first_not_of("0123456789/") != std::string::npos)
      throw Error("--shard", "expected I/N, got '" + o.shard + "'");
    si = std::stoll(o.shard.substr(0, sl)), sn = std::stoll(o.shard.substr(sl + 1));
    if (sn < 1 || si >= sn) throw Error("--shard", "expected I/N with 0 <= I < N, got '" + o.shard + "'");
  }
  if (o.resume && o.out.empty()) throw Error("--resume", "needs --out");
  if (o.steps < 0) throw Error("--steps", "must not be negative");
  if (o.skip_first < 0 || o.skip_last < 0) throw Error("--skip-first/--skip-last", "must not be negative");
  RunSpec spec;
  parse_mask(o.mask, spec.flip);
  spec.flip.steps = o.steps;
  spec.flip.skip_first = o.skip_first, spec.flip.skip_last = o.skip_last;
  spec.flip.abs = o.abs;
  spec.methods = parse_method_list(o.methods);
  spec.base.start_layer = o.start_layer;
  spec.base.seed = o.seed;
  spec.shard = si, spec.shards = sn;
  spec.out = o.out;
  spec.resume = o.resume;
  Loaded m = load_model(o.model);
  const CausalLM* mm = m.model.get();
  if (!mm) throw Error(o.model, "is an image model; this evaluation needs a language model");
  if (!m.tok) throw Error(o.model, "no tokenizer.json next to the weights (the data is text)");
  TextFields tf;
  tf.text = o.text_field;
  tf.label = o.label_field;
  std::vector<TextRecord> recs = read_text_data(o.data, parse_text_format(o.format, o.data), tf);
  if (o.limit > 0 && int64_t(recs.size()) > o.limit) recs.resize(size_t(o.limit));
  const auto labels = o.labels.empty() ? std::map<std::string, std::string>{} : parse_label_map(o.labels);
  const std::vector<FlipExample> data = prepare_examples(*m.tok, recs, o.data, o.tpl, labels, spec.flip.classes);
  int64_t mine = 0;
  for (const auto& ex : data) mine += ex.index % sn == si;
  Progress bar("flipping", mine, g.verbose);
  const auto recs_out = run_flipping(*mm, data, spec, [&] { bar.step(); });
  bar.done();
  const auto sum = summarize(o.out.empty() ? recs_out : read_records({o.out}));
  std::printf("%s\n%lld examples of %s (shard %lld/%lld), mask %s, target logit at the last position\n",
              summary_markdown(sum).c_str(), (long long)mine, o.data.c_str(), (long long)si, (long long)sn,
              mask_name(spec.flip).c_str());
  if (!o.plot.empty()) plot_curves(sum, o.plot);
}

struct MergeCli {
  std::vector<std::string> inputs;
  std::string markdown, csv, json, plot;
};

void run_merge(const MergeCli& o) {
  if (merge_vision(o.inputs, o.markdown, o.csv, o.json, o.plot)) return;  // perturbation / segmentation records
  const auto sum = summarize(read_records(o.inputs));
  const std::string md = summary_markdown(sum);
  std::printf("%s", md.c_str());
  if (!o.markdown.empty()) write_text(o.markdown, md);
  if (!o.csv.empty()) write_text(o.csv, summary_csv(sum));
  if (!o.json.empty()) write_text(o.json, summary_json(sum).dump(1) + "\n");
  if (!o.plot.empty()) plot_curves(sum, o.plot);
}

}  // namespace

void register_eval(CLI::App& app, Globals& g) {
  CLI::App* ev = app.add_subcommand("eval", "Evaluate explanations (faithfulness and plausibility protocols)");
  ev->require_subcommand(1);
  auto o = std::make_shared<EvidenceCli>();
  CLI::App* sub = ev->add_subcommand("evidence", "Pointing game and evidence recall on data with known evidence words; for a Vision Mamba, the image pointing game on images with object masks");
  sub->add_option("MODEL", o->model, "Model directory")->required();
  sub->add_option("--data", o->data, "JSONL with text, target and evidence_char_spans per line (Vision Mamba: image and mask per line)")->required();
  sub->add_option("-m,--method", o->methods, "Methods, comma-separated (or all)")->capture_default_str();
  sub->add_option("--top-k", o->top_k, "k of hit@k")->capture_default_str();
  sub->add_option("--skip-first", o->skip_first, "Never rank the first N tokens (a fixed prompt prefix)")
      ->capture_default_str();
  sub->add_option("--skip-last", o->skip_last, "Never rank the last N tokens (a fixed prompt suffix)")
      ->capture_default_str();
  sub->add_flag("--contrast", o->contrast,
                "Explain logit(target) - logit(c), c the strongest other target of the data (why this label, not another)");
  sub->add_option("--limit", o->limit, "Use only the first N examples");
  sub->add_option("--start-layer", o->start_layer, "First layer of the attention methods (default 0; images: 15/24 of the depth)");
  sub->add_option("--json", o->json, "Write the scores as JSON");
  sub->callback([o, &g] { run_evidence(*o, g); });

  auto f = std::make_shared<FlipCli>();
  CLI::App* fl = ev->add_subcommand("flipping", "MoRF/LeRF token flipping (ΔA_F), activation (AUAC) and pruning (AU-MSE)");
  fl->add_option("MODEL", f->model, "Model directory")->required();
  fl->add_option("--data", f->data, "CSV, TSV (GLUE SST-2) or JSONL text data")->required();
  fl->add_option("--format", f->format, "csv, tsv or jsonl (default: from the extension)");
  fl->add_option("--text-field", f->text_field, "Text column/field (default: sentence if present, else text)");
  fl->add_option("--label-field", f->label_field, "Label column/field")->capture_default_str();
  fl->add_option("--labels", f->labels, "Label -> target token: \"0: negative,1: positive\" or a JSON object file");
  fl->add_option("--template", f->tpl, "Wrap each text, e.g. \"review: {text} sentiment:\"");
  fl->add_option("-m,--method", f->methods, "Methods, comma-separated (or all)")->capture_default_str();
  fl->add_option("--mask", f->mask, "zero (embedding), token:ID, or remove")->capture_default_str();
  fl->add_option("--steps", f->steps, "Fractions i/STEPS of the candidate tokens; 0 = one token per step")
      ->capture_default_str();
  fl->add_option("--skip-first", f->skip_first, "Never perturb the first N tokens (a fixed prompt prefix)")
      ->capture_default_str();
  fl->add_option("--skip-last", f->skip_last, "Never perturb the last N tokens (a fixed prompt suffix)")
      ->capture_default_str();
  fl->add_flag("--abs", f->abs, "Order tokens by |relevance|");
  fl->add_option("--limit", f->limit, "Use only the first N examples");
  fl->add_option("--shard", f->shard, "I/N: the examples with index % N == I")->capture_default_str();
  fl->add_option("--out", f->out, "JSONL results, one line per example and method");
  fl->add_flag("--resume", f->resume, "Skip the examples already in --out");
  fl->add_option("--seed", f->seed, "Seed of random/smoothgrad (plus the example index)")->capture_default_str();
  fl->add_option("--start-layer", f->start_layer, "First layer of the attention methods")->capture_default_str();
  fl->add_option("--plot", f->plot, "Write the mean curves as PNG and SVG into DIR");
  fl->callback([f, &g] { run_flipping_cli(*f, g); });

  auto mg = std::make_shared<MergeCli>();
  CLI::App* me = ev->add_subcommand("merge", "Merge flipping, perturbation or segmentation result shards and print the table");
  me->add_option("inputs", mg->inputs, "Result JSONL files")->required();
  me->add_option("--markdown", mg->markdown, "Write the table as Markdown");
  me->add_option("--csv", mg->csv, "Write the table as CSV");
  me->add_option("--json", mg->json, "Write the table and the mean curves as JSON");
  me->add_option("--plot", mg->plot, "Write the mean curves as PNG and SVG into DIR");
  me->callback([mg] { run_merge(*mg); });
}

}  // namespace ssmx::cli

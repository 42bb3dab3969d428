// ssmx eval — evaluation protocols for explanations. So far: `evidence` (pointing game and evidence recall on data
// whose deciding words are known, e.g. models/sentiment-mamba/heldout.jsonl).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "attribution/explain.h"
#include "common.h"
#include "core/error.h"
#include "core/runtime.h"
#include "eval/evidence.h"
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
  int64_t start_layer = 0;
};

std::vector<Method> parse_methods(const std::string& s) {
  std::vector<Method> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string name = s.substr(pos, end - pos);
    if (name == "all") {
      for (Method m : all_methods()) out.push_back(m);
    } else {
      out.push_back(parse_method(name));
    }
    pos = end + 1;
  }
  return out;
}

void run_evidence(const EvidenceCli& o, const Globals& g) {
  set_verbose(g.verbose);
  set_num_threads(g.threads);
  log_verbose(blas_core_reason());
  if (o.top_k < 1) throw Error("--top-k", "must be at least 1");
  if (o.skip_first < 0 || o.skip_last < 0) throw Error("--skip-first/--skip-last", "must not be negative");
  Loaded m = load_model(o.model);
  const auto* mm = dynamic_cast<const MambaModel*>(m.model.get());
  if (!mm) throw Error(o.model, "eval supports the Mamba and Falcon-Mamba families so far");
  if (!m.tok) throw Error(o.model, "no tokenizer.json next to the weights (the data is text)");
  std::vector<EvidenceExample> data = read_evidence_jsonl(o.data);
  if (o.limit > 0 && int64_t(data.size()) > o.limit) data.resize(size_t(o.limit));
  const std::vector<Method> methods = parse_methods(o.methods);
  ExplainOptions base;
  base.start_layer = o.start_layer;
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

}  // namespace

void register_eval(CLI::App& app, Globals& g) {
  CLI::App* ev = app.add_subcommand("eval", "Evaluate explanations (faithfulness and plausibility protocols)");
  ev->require_subcommand(1);
  auto o = std::make_shared<EvidenceCli>();
  CLI::App* sub = ev->add_subcommand("evidence", "Pointing game and evidence recall on data with known evidence words");
  sub->add_option("model", o->model, "Model directory")->required();
  sub->add_option("--data", o->data, "JSONL with text, target and evidence_char_spans per line")->required();
  sub->add_option("-m,--method", o->methods, "Methods, comma-separated (or all)")->capture_default_str();
  sub->add_option("--top-k", o->top_k, "k of hit@k")->capture_default_str();
  sub->add_option("--skip-first", o->skip_first, "Never rank the first N tokens (a fixed prompt prefix)")
      ->capture_default_str();
  sub->add_option("--skip-last", o->skip_last, "Never rank the last N tokens (a fixed prompt suffix)")
      ->capture_default_str();
  sub->add_flag("--contrast", o->contrast,
                "Explain logit(target) - logit(c), c the strongest other target of the data (why this label, not another)");
  sub->add_option("--limit", o->limit, "Use only the first N examples");
  sub->add_option("--start-layer", o->start_layer, "First layer of the attention methods")->capture_default_str();
  sub->add_option("--json", o->json, "Write the scores as JSON");
  sub->callback([o, &g] { run_evidence(*o, g); });
}

}  // namespace ssmx::cli

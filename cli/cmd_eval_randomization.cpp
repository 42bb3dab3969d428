// ssmx eval randomization — the cascading model-parameter randomisation test (src/eval/randomization.h).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api/explain_report.h"
#include "common.h"
#include "core/error.h"
#include "core/runtime.h"
#include "eval/randomization.h"
#include "progress.h"

namespace ssmx::cli {

namespace {

struct RandomizationCli {
  std::string model, data, methods = "grad-input,mamba-lrp,random", json;
  int64_t limit = 20;
  int64_t start_layer = 0;
  uint64_t seed = 0;
};

void run_randomization(const RandomizationCli& o, const Globals& g) {
  set_verbose(g.verbose);
  set_num_threads(g.threads);
  log_verbose(blas_core_reason());
  Loaded m = load_model(o.model, /*need_model=*/false);
  if (!m.tok) throw Error(o.model, "no tokenizer.json next to the weights (the data is text)");
  std::vector<TextExample> data = read_text_jsonl(o.data);
  if (o.limit > 0 && int64_t(data.size()) > o.limit) data.resize(size_t(o.limit));
  const std::vector<Method> methods = parse_method_list(o.methods);
  ExplainOptions base;
  base.start_layer = o.start_layer;
  base.seed = o.seed;
  std::unique_ptr<Progress> bar;
  const RandomizationScores sc = evaluate_randomization(m.ck, *m.tok, data, methods, base, o.seed, [&](int64_t k, int64_t n) {
    if (!bar) bar = std::make_unique<Progress>("randomization", n, g.verbose);
    bar->step();
    (void)k;
  });
  if (bar) bar->done();
  std::printf("Spearman rank correlation with the trained model's maps (signed / |R|), %lld examples, cascading from "
              "the output:\n\n| stage |", (long long)sc.examples);
  for (const auto& me : sc.methods) std::printf(" %s |", me.c_str());
  std::printf("\n|---|");
  for (size_t k = 0; k < sc.methods.size(); ++k) std::printf("---|");
  std::printf("\n");
  for (size_t s = 0; s < sc.stages.size(); ++s) {
    std::printf("| %s |", sc.stages[s].c_str());
    for (size_t k = 0; k < sc.methods.size(); ++k) std::printf(" %.3f / %.3f |", sc.rho[k][s], sc.rho_abs[k][s]);
    std::printf("\n");
  }
  if (!o.json.empty()) {
    nlohmann::json j;
    j["model"] = o.model;
    j["data"] = o.data;
    j["examples"] = sc.examples;
    j["seed"] = o.seed;
    j["stages"] = sc.stages;
    for (size_t k = 0; k < sc.methods.size(); ++k)
      j["methods"].push_back({{"method", sc.methods[k]}, {"spearman", sc.rho[k]}, {"spearman_abs", sc.rho_abs[k]}});
    std::ofstream f(o.json);
    if (!f) throw Error(o.json, "cannot write");
    f << j.dump(1) << "\n";
    if (!f) throw Error(o.json, "cannot write");
  }
}

}  // namespace

void register_eval_randomization(CLI::App& app, Globals& g) {
  CLI::App* ev = app.get_subcommand("eval");
  auto o = std::make_shared<RandomizationCli>();
  CLI::App* sub = ev->add_subcommand("randomization",
                                     "Cascading model-parameter randomisation test (Spearman ρ to the trained maps)");
  sub->add_option("MODEL", o->model, "Model directory")->required();
  sub->add_option("--data", o->data, "JSONL with a 'text' (and optional 'target' token) per line")->required();
  sub->add_option("-m,--method", o->methods, "Methods, comma-separated (or all)")->capture_default_str();
  sub->add_option("--limit", o->limit, "Use only the first N examples (0: all)")->capture_default_str();
  sub->add_option("--start-layer", o->start_layer, "First layer of the attention methods")->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of the random weights (and of smoothgrad/random)")->capture_default_str();
  sub->add_option("--json", o->json, "Write the correlations as JSON");
  sub->callback([o, &g] { run_randomization(*o, g); });
}

}  // namespace ssmx::cli

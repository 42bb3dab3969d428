// ssmx/eval/runner.h — the data set runner of `ssmx eval flipping` and `ssmx eval merge`.
//
// Each example × method gives one JSON line (the curves and areas of eval/flipping.h). Runs are sharded by example
// index (shard I of N takes the examples with index % N == I), resumable (records already in the output file are
// skipped; a truncated last line is cut off first), and shards merge into one table: the per-method means over the
// examples, summed in example order so that any sharding gives bit-identical means.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "attribution/explain.h"
#include "eval/flipping.h"
#include "eval/text_data.h"
#include "io/tokenizer.h"

namespace ssmx {

struct FlipExample {
  int64_t index = 0;  // position in the data file (0-based)
  int64_t line = 0;
  std::string text;   // after the template
  std::vector<int32_t> ids;
  int32_t target = -1;  // -1 = the predicted token (among the class tokens when there are any)
};

// Tokenizes the records: text → template → ids; target from the record's "target", else its label through the
// label map (an unmapped label is an error naming the line); without either, the prediction. `classes` receives the
// distinct target tokens of the label map (and of the data's targets).
std::vector<FlipExample> prepare_examples(const Tokenizer& tok, const std::vector<TextRecord>& recs,
                                          const std::string& path, const std::string& tpl,
                                          const std::map<std::string, std::string>& labels,
                                          std::vector<int32_t>& classes);

// A single-token target's id ("' positive'"); throws when it is not one token.
int32_t target_token(const Tokenizer& tok, const std::string& text, const std::string& where);

// One example × method: explain (target at the last position), flip; the JSON record.
nlohmann::json flip_record(const CausalLM& m, const FlipExample& ex, Method method, const ExplainOptions& base,
                           const FlipOptions& fo);

// Keys "INDEX/method" of the complete records in `path`; cuts a truncated or unparsable last line off the file.
std::set<std::string> completed_records(const std::string& path);

struct RunSpec {
  std::vector<Method> methods;
  ExplainOptions base;
  FlipOptions flip;
  int64_t shard = 0, shards = 1;
  std::string out;     // JSONL output ("" = none)
  bool resume = false;
};
// Runs every example of this shard with every method, appending records to spec.out; returns the records written
// in this call. on_example is called after each example.
std::vector<nlohmann::json> run_flipping(const CausalLM& m, const std::vector<FlipExample>& data, const RunSpec& spec,
                                         const std::function<void()>& on_example = {});

struct FlipSummary {
  std::string method;
  int64_t examples = 0;
  double a_morf = 0, a_lerf = 0, delta_af = 0, auac = 0, a_ins_lerf = 0, delta_ai = 0, au_mse = 0;
  std::vector<double> grid, morf, lerf, act, prune;  // mean curves resampled on x = 0, 0.05, …, 1
};
// Reads records from JSONL files (duplicates of one example × method must agree) and averages them per method.
std::vector<nlohmann::json> read_records(const std::vector<std::string>& paths);
std::vector<FlipSummary> summarize(const std::vector<nlohmann::json>& records);
std::string summary_markdown(const std::vector<FlipSummary>& s);
std::string summary_csv(const std::vector<FlipSummary>& s);
nlohmann::json summary_json(const std::vector<FlipSummary>& s);
// Mean MoRF/LeRF/activation/pruning curves of every method: DIR/flipping_{morf,lerf,activation,pruning}.{png,svg}.
void plot_curves(const std::vector<FlipSummary>& s, const std::string& dir);

// A line plot of named series (x in [0, 1]) as BASE.png and BASE.svg; the plot of plot_curves and of the vision
// evaluations (eval/vision_runner.h).
struct PlotSeries {
  std::string name;
  std::vector<double> x, y;
};
void plot_series(const std::vector<PlotSeries>& s, const std::string& title, const std::string& xlabel,
                 const std::string& ylabel, const std::string& base);

}  // namespace ssmx

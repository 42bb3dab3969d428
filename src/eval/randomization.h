// ssmx/eval/randomization.h — the model-parameter randomisation test (Adebayo et al. 2018, "Sanity checks for
// saliency maps"), cascading from the output towards the input.
//
// Stage 0 is the trained model. Each later stage re-draws one more block of weights, from the top: the LM head (when
// it is not tied to the embedding), the final norm, then layer L−1, L−2, …, 0 (every tensor of the layer). A re-drawn
// tensor gets Gaussian values with that tensor's own mean and standard deviation (seeded by the tensor's name), so
// scales stay sensible while everything learned is gone; randomisation is cumulative. At every stage each example is
// explained for the same target — the trained model's own target token — and the map is compared with the trained
// model's map by Spearman's rank correlation (average ranks for ties), of the signed relevance and of |relevance|.
// A method whose maps do not decorrelate as the weights are destroyed does not explain the model (the `random` method
// is the extreme case: ρ = 1 at every stage).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attribution/explain.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"

namespace ssmx {

// Spearman's rank correlation of two equally long vectors (ties get average ranks). 0 when either is constant.
double spearman(const std::vector<float>& a, const std::vector<float>& b);

// A checkpoint whose picked tensors are replaced by Gaussian noise of the same mean and std (f32, owned here).
struct RandomizedCheckpoint {
  Checkpoint ck;
  std::vector<std::shared_ptr<std::vector<float>>> owned;
};
RandomizedCheckpoint randomize_tensors(const Checkpoint& base, const std::function<bool(const std::string&)>& pick,
                                       uint64_t seed);

// The cascade for a Mamba-family checkpoint: stage names ("head", "norm_f", "layer 23", …, "layer 0") and, for each,
// whether a tensor name belongs to it.
struct RandomizationStage {
  std::string name;
  std::function<bool(const std::string&)> selects;
};
std::vector<RandomizationStage> randomization_stages(const Checkpoint& ck, int64_t n_layer);

struct TextExample {
  std::string text;
  std::string target;  // the text of one token; empty: the trained model's prediction at the last position
};
// JSONL with a string "text" and an optional string "target" per line; throws ssmx::Error(path:line) otherwise.
std::vector<TextExample> read_text_jsonl(const std::string& path);

struct RandomizationScores {
  std::vector<std::string> stages;  // "trained", then the cascade
  std::vector<std::string> methods;
  std::vector<std::vector<double>> rho;      // [method][stage]: mean Spearman ρ of the signed maps
  std::vector<std::vector<double>> rho_abs;  // [method][stage]: of |maps|
  int64_t examples = 0;
};

// Runs the cascade on `examples` (tokenised with `tok`) for every method. `on_stage(k, n)` reports progress.
RandomizationScores evaluate_randomization(const Checkpoint& ck, const Tokenizer& tok,
                                           const std::vector<TextExample>& examples,
                                           const std::vector<Method>& methods, const ExplainOptions& base,
                                           uint64_t seed, const std::function<void(int64_t, int64_t)>& on_stage = {});

}  // namespace ssmx

// ssmx/eval/evidence.h — do explanations point at the words that decide the label? (pointing game, evidence recall)
//
// For data whose deciding words are known (the bundled generated tasks), each example gives a text, the target token
// to explain and the byte spans of its evidence words. A token is evidence when its byte range overlaps a span.
// Per method and example, tokens are ranked by relevance (largest first; ties by position):
//   pointing game   1 if the top-ranked token is evidence
//   recall@|E|      |top-|E| tokens ∩ evidence| / |E|, with |E| the number of evidence tokens
//   hit@k           1 if any of the top-k tokens is evidence
// and the report gives their means over the examples.
#pragma once

#include <cstdint>
#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "attribution/explain.h"
#include "io/tokenizer.h"

namespace ssmx {

struct EvidenceExample {
  std::string text;
  std::string target;                                // text of the target token (" positive")
  std::vector<std::pair<size_t, size_t>> evidence;   // byte spans [begin, end) in text
};

// Reads JSONL with fields "text", "target" and "evidence_char_spans" ([[b, e], ...]); throws ssmx::Error(path:line).
std::vector<EvidenceExample> read_evidence_jsonl(const std::string& path);

struct EvidenceScores {
  std::string method;
  int64_t examples = 0;
  double pointing = 0, recall = 0, hit_at_k = 0;
  double seconds = 0;
};

// Indices of the tokens overlapping the spans.
std::vector<int64_t> evidence_tokens(const Encoding& enc, const std::vector<std::pair<size_t, size_t>>& spans);

// Scores of one relevance vector: {pointing, recall@|E|, hit@k}. Only tokens in [first, last) are ranked
// (last < 0: to the end); evidence outside that range is ignored.
std::array<double, 3> score_evidence(const std::vector<float>& relevance, const std::vector<int64_t>& evidence, int k,
                                     int64_t first = 0, int64_t last = -1);

struct EvidenceRanking {
  int k = 3;           // hit@k
  int skip_first = 0;  // tokens at the start that are never candidates (a fixed prompt prefix)
  int skip_last = 0;   // tokens at the end that are never candidates (a fixed prompt suffix)
  // Explain logit(target) − logit(c), with c the other target of the data set (by the largest logit) — the
  // contrastive question "why this label and not the other one?"; false: logit(target) alone.
  bool contrast_other_targets = false;
};

// Explains every example with every method (target: the example's target token at the last position, or its
// contrast with the other targets, see EvidenceRanking).
std::vector<EvidenceScores> evaluate_evidence(const CausalLM& m, const Tokenizer& tok,
                                              const std::vector<EvidenceExample>& data, const std::vector<Method>& methods,
                                              const ExplainOptions& base, const EvidenceRanking& rank,
                                              const std::function<void()>& on_example = {});

}  // namespace ssmx

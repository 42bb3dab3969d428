#include "eval/evidence.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/error.h"

namespace ssmx {

std::vector<EvidenceExample> read_evidence_jsonl(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path, "cannot open");
  std::vector<EvidenceExample> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error(where, "not a JSON object");
    EvidenceExample ex;
    if (!j.contains("text") || !j["text"].is_string()) throw Error(where, "missing string field 'text'");
    if (!j.contains("target") || !j["target"].is_string()) throw Error(where, "missing string field 'target'");
    ex.text = j["text"].get<std::string>();
    ex.target = j["target"].get<std::string>();
    if (!j.contains("evidence_char_spans") || !j["evidence_char_spans"].is_array())
      throw Error(where, "missing array field 'evidence_char_spans'");
    for (const auto& s : j["evidence_char_spans"]) {
      if (!s.is_array() || s.size() != 2 || !s[0].is_number_unsigned() || !s[1].is_number_unsigned())
        throw Error(where, "evidence_char_spans holds something other than [begin, end] pairs");
      const size_t b = s[0].get<size_t>(), e = s[1].get<size_t>();
      if (b >= e || e > ex.text.size()) throw Error(where, "evidence span [" + std::to_string(b) + ", " + std::to_string(e) + ") is outside the text");
      ex.evidence.push_back({b, e});
    }
    out.push_back(std::move(ex));
  }
  if (out.empty()) throw Error(path, "no examples");
  return out;
}

std::vector<int64_t> evidence_tokens(const Encoding& enc, const std::vector<std::pair<size_t, size_t>>& spans) {
  std::vector<int64_t> ev;
  for (size_t t = 0; t < enc.offsets.size(); ++t) {
    const auto [b, e] = enc.offsets[t];
    for (const auto& [sb, se] : spans)
      if (b < se && sb < e) {
        ev.push_back(int64_t(t));
        break;
      }
  }
  return ev;
}

std::array<double, 3> score_evidence(const std::vector<float>& rel, const std::vector<int64_t>& all_ev, int k,
                                     int64_t first, int64_t last) {
  const int64_t T = int64_t(rel.size());
  if (last < 0 || last > T) last = T;
  first = std::max<int64_t>(first, 0);
  std::vector<int64_t> ev;
  for (int64_t t : all_ev)
    if (t >= first && t < last) ev.push_back(t);
  if (ev.empty() || first >= last) return {0, 0, 0};
  std::vector<int64_t> order(size_t(last - first));
  std::iota(order.begin(), order.end(), first);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return rel[size_t(a)] > rel[size_t(b)]; });
  auto is_ev = [&](int64_t t) { return std::find(ev.begin(), ev.end(), t) != ev.end(); };
  const double pointing = is_ev(order[0]) ? 1.0 : 0.0;
  int64_t found = 0;
  for (size_t r = 0; r < ev.size() && r < order.size(); ++r) found += is_ev(order[r]);
  double hit = 0;
  for (int r = 0; r < k && size_t(r) < order.size(); ++r)
    if (is_ev(order[size_t(r)])) hit = 1;
  return {pointing, double(found) / double(ev.size()), hit};
}

std::vector<EvidenceScores> evaluate_evidence(const CausalLM& m, const Tokenizer& tok,
                                              const std::vector<EvidenceExample>& data, const std::vector<Method>& methods,
                                              const ExplainOptions& base, const EvidenceRanking& rank,
                                              const std::function<void()>& on_example) {
  std::vector<EvidenceScores> sc(methods.size());
  for (size_t i = 0; i < methods.size(); ++i) sc[i].method = method_name(methods[i]);
  auto target_id = [&](const std::string& text) {
    std::vector<int32_t> tgt = tok.encode_ids(text);
    if (auto id = tok.token_to_id(text)) tgt = {*id};
    if (tgt.size() != 1) throw Error("data", "target '" + text + "' is not a single token");
    return tgt[0];
  };
  std::vector<int32_t> targets;  // the distinct targets of the data set
  if (rank.contrast_other_targets) {
    for (const auto& ex : data) {
      const int32_t id = target_id(ex.target);
      if (std::find(targets.begin(), targets.end(), id) == targets.end()) targets.push_back(id);
    }
    if (targets.size() < 2) throw Error("data", "contrast with the other targets needs at least two distinct targets");
  }
  for (const auto& ex : data) {
    const Encoding enc = tok.encode(ex.text);
    if (enc.ids.empty()) throw Error("data", "an example's text encodes to no tokens");
    const std::vector<int32_t> tgt = {target_id(ex.target)};
    int32_t contrast = -1;
    if (rank.contrast_other_targets) {
      ForwardOptions fo;
      fo.all_logits = false;
      const Tensor logits = m.forward(enc.ids, fo).logits;  // (1, V)
      for (int32_t c : targets)
        if (c != tgt[0] && (contrast < 0 || logits.data[size_t(c)] > logits.data[size_t(contrast)])) contrast = c;
    }
    const std::vector<int64_t> ev = evidence_tokens(enc, ex.evidence);
    for (size_t i = 0; i < methods.size(); ++i) {
      ExplainOptions o = base;
      o.method = methods[i];
      o.target = Target{};
      o.target.token = tgt[0];
      if (contrast >= 0) o.target.kind = Target::Kind::Contrast, o.target.contrast = contrast;
      const Explanation e = explain(m, nullptr, enc.ids, o);
      const auto s = score_evidence(e.relevance, ev, rank.k, rank.skip_first,
                                    int64_t(e.relevance.size()) - rank.skip_last);
      sc[i].pointing += s[0], sc[i].recall += s[1], sc[i].hit_at_k += s[2];
      sc[i].seconds += e.seconds;
      sc[i].examples++;
    }
    if (on_example) on_example();
  }
  for (auto& s : sc)
    if (s.examples) s.pointing /= double(s.examples), s.recall /= double(s.examples), s.hit_at_k /= double(s.examples);
  return sc;
}

}  // namespace ssmx

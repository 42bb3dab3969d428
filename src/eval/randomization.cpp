#include "eval/randomization.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "core/error.h"
#include "models/mamba.h"
#include "models/model.h"

namespace ssmx {

namespace {

std::vector<double> average_ranks(const std::vector<float>& v) {
  const size_t n = v.size();
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), size_t(0));
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && v[idx[j + 1]] == v[idx[i]]) ++j;
    const double avg = 0.5 * double(i + j) + 1.0;
    for (size_t k = i; k <= j; ++k) r[idx[k]] = avg;
    i = j + 1;
  }
  return r;
}

uint64_t name_hash(const std::string& s) {  // FNV-1a, for per-tensor seeds
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

double spearman(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) throw Error("spearman", "vectors of different lengths");
  const size_t n = a.size();
  if (n < 2) return 0.0;
  const std::vector<double> ra = average_ranks(a), rb = average_ranks(b);
  const double mean = 0.5 * double(n + 1);
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = ra[i] - mean, y = rb[i] - mean;
    sab += x * y, saa += x * x, sbb += y * y;
  }
  if (saa == 0 || sbb == 0) return 0.0;
  return sab / std::sqrt(saa * sbb);
}

RandomizedCheckpoint randomize_tensors(const Checkpoint& base, const std::function<bool(const std::string&)>& pick,
                                       uint64_t seed) {
  RandomizedCheckpoint out;
  out.ck = base;
  for (auto& [name, t] : out.ck.tensors) {
    if (!pick(name)) continue;
    const std::vector<float> v = to_f32(t);
    double mean = 0, var = 0;
    for (float x : v) mean += x;
    mean /= double(std::max<size_t>(v.size(), 1));
    for (float x : v) var += (x - mean) * (x - mean);
    const double sd = v.size() > 1 ? std::sqrt(var / double(v.size() - 1)) : 0.0;
    std::mt19937_64 rng(seed ^ name_hash(name));
    std::normal_distribution<double> nd(mean, sd > 0 ? sd : 1e-3);
    auto buf = std::make_shared<std::vector<float>>(v.size());
    for (float& x : *buf) x = float(nd(rng));
    RawTensor r;
    r.dtype = DType::F32;
    r.shape = t.shape;
    r.strides = contiguous_strides(t.shape);
    r.offset = 0;
    r.storage = reinterpret_cast<const uint8_t*>(buf->data());
    r.storage_bytes = buf->size() * sizeof(float);
    r.source = t.source + " (randomised)";
    t = r;
    out.owned.push_back(buf);
  }
  return out;
}

std::vector<RandomizationStage> randomization_stages(const Checkpoint& ck, int64_t n_layer) {
  // Tensor names of every language family: the head (Mamba/Mamba-2 lm_head, RWKV head; tied heads have none), the
  // final norm (norm_f, RWKV ln_out, RecurrentGemma final_norm) and the blocks (layers.{l}. or RWKV blocks.{l}.).
  std::vector<RandomizationStage> st;
  for (const char* head : {"lm_head.weight", "head.weight"})
    if (ck.find(head)) {
      const std::string h = head;
      st.push_back({"head", [h](const std::string& n) { return n == h; }});
      break;
    }
  st.push_back({"norm_f", [](const std::string& n) {
                  return contains(n, "norm_f.") || contains(n, "ln_out.") || contains(n, "final_norm.");
                }});
  for (int64_t l = n_layer - 1; l >= 0; --l) {
    const std::string a = "layers." + std::to_string(l) + ".", b = "blocks." + std::to_string(l) + ".";
    st.push_back({"layer " + std::to_string(l), [a, b](const std::string& n) {
                    return n.find(a) == 0 || contains(n, "." + a) || n.find(b) == 0 ||
                           contains(n, "." + b);
                  }});
  }
  return st;
}

std::vector<TextExample> read_text_jsonl(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path, "cannot open");
  std::vector<TextExample> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error(where, "not a JSON object");
    if (!j.contains("text") || !j["text"].is_string()) throw Error(where, "missing string field 'text'");
    TextExample ex;
    ex.text = j["text"].get<std::string>();
    if (j.contains("target")) {
      if (!j["target"].is_string()) throw Error(where, "field 'target' is not a string");
      ex.target = j["target"].get<std::string>();
    }
    out.push_back(std::move(ex));
  }
  if (out.empty()) throw Error(path, "no examples");
  return out;
}

RandomizationScores evaluate_randomization(const Checkpoint& ck, const Tokenizer& tok,
                                           const std::vector<TextExample>& examples,
                                           const std::vector<Method>& methods, const ExplainOptions& base,
                                           uint64_t seed, const std::function<void(int64_t, int64_t)>& on_stage) {
  if (detect_family(ck) == "vim") throw Error(ck.path, "the randomisation test is for language models");
  std::unique_ptr<CausalLM> trained = load_causal_lm(ck);
  const std::vector<RandomizationStage> cascade = randomization_stages(ck, trained->info().dim("layers"));

  RandomizationScores sc;
  sc.stages.push_back("trained");
  for (const auto& s : cascade) sc.stages.push_back(s.name);
  for (Method m : methods) sc.methods.push_back(method_name(m));
  sc.rho.assign(methods.size(), std::vector<double>(sc.stages.size(), 0.0));
  sc.rho_abs = sc.rho;

  // Inputs, targets (the trained model's) and the trained maps.
  std::vector<std::vector<int32_t>> ids;
  std::vector<int32_t> targets;
  std::vector<std::vector<std::vector<float>>> ref(methods.size());  // [method][example]
  for (const auto& ex : examples) {
    std::vector<int32_t> in = tok.encode_ids(ex.text);
    if (in.empty()) throw Error("data", "an example's text encodes to no tokens");
    int32_t target = -1;
    if (!ex.target.empty()) {
      std::vector<int32_t> t = tok.encode_ids(ex.target);
      if (auto id = tok.token_to_id(ex.target)) t = {*id};
      if (t.size() != 1) throw Error("data", "target '" + ex.target + "' is not a single token");
      target = t[0];
    } else {
      ForwardOptions fo;
      fo.all_logits = false;
      const Tensor l = trained->forward(in, fo).logits;
      target = int32_t(std::max_element(l.data.begin(), l.data.end()) - l.data.begin());
    }
    ids.push_back(std::move(in));
    targets.push_back(target);
  }
  auto explain_all = [&](const CausalLM& m, size_t stage) {
    for (size_t k = 0; k < methods.size(); ++k) {
      double s = 0, sa = 0;
      for (size_t i = 0; i < ids.size(); ++i) {
        ExplainOptions o = base;
        o.method = methods[k];
        o.target = Target{};
        o.target.token = targets[i];
        const std::vector<float> r = explain(m, nullptr, ids[i], o).relevance;
        if (stage == 0) ref[k].push_back(r);
        std::vector<float> a(r.size()), b(r.size());
        for (size_t t = 0; t < r.size(); ++t) a[t] = std::fabs(ref[k][i][t]), b[t] = std::fabs(r[t]);
        s += spearman(ref[k][i], r);
        sa += spearman(a, b);
      }
      sc.rho[k][stage] = s / double(ids.size());
      sc.rho_abs[k][stage] = sa / double(ids.size());
    }
  };
  const int64_t n_stages = int64_t(sc.stages.size());
  explain_all(*trained, 0);
  if (on_stage) on_stage(1, n_stages);
  std::vector<std::function<bool(const std::string&)>> chosen;
  for (size_t s = 0; s < cascade.size(); ++s) {
    chosen.push_back(cascade[s].selects);
    RandomizedCheckpoint rc = randomize_tensors(ck, [&](const std::string& n) {
      for (const auto& f : chosen)
        if (f(n)) return true;
      return false;
    }, seed);
    std::unique_ptr<CausalLM> m = load_causal_lm(rc.ck);
    explain_all(*m, s + 1);
    if (on_stage) on_stage(int64_t(s) + 2, n_stages);
  }
  sc.examples = int64_t(ids.size());
  return sc;
}

}  // namespace ssmx

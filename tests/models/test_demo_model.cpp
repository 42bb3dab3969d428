// The bundled trained demo model models/sentiment-mamba (scripts/make_demo_model.py): the C++ tokenizer gives the
// ids the Python oracle gave, the logits match the float64 PyTorch reference, and the model predicts the label of
// its held-out sentences.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "../test_util.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "models/model.h"

using namespace ssmx;

namespace {

constexpr double kTol = 1e-4;  // max |a - b| <= 1e-4 · max(1, max |b|)

std::string model_dir() { return std::string(SSMX_SOURCE_DIR) + "/models/sentiment-mamba"; }
std::string fixture_path() { return test::data_dir() + "/models/sentiment-mamba.reference.safetensors"; }

int32_t argmax_last(const Tensor& logits) {
  const int64_t V = logits.dim(1);
  const float* row = logits.ptr() + (logits.dim(0) - 1) * V;
  return int32_t(std::max_element(row, row + V) - row);
}

}  // namespace

TEST(DemoModel, MatchesPyTorchReferenceAndPredictsLabels) {
  Checkpoint ck = open_checkpoint(model_dir());
  auto model = load_causal_lm(ck);
  EXPECT_EQ(model->info().family, "mamba");
  Tokenizer tok = Tokenizer::from_file(model_dir() + "/tokenizer.json");
  SafetensorsFile ref = read_safetensors(fixture_path());
  std::map<std::string, RawTensor> r(ref.tensors.begin(), ref.tensors.end());
  const int count = std::stoi(ref.metadata.at("count"));
  ASSERT_GE(count, 6);
  const int32_t pos_id = std::stoi(ref.metadata.at("positive_id"));
  const int32_t neg_id = std::stoi(ref.metadata.at("negative_id"));
  EXPECT_EQ(tok.token_to_id("Ġpositive"), pos_id);
  EXPECT_EQ(tok.token_to_id("Ġnegative"), neg_id);
  for (int k = 0; k < count; ++k) {
    const std::string key = std::to_string(k);
    const std::string text = ref.metadata.at("text." + key);
    SCOPED_TRACE(text);
    std::vector<int32_t> want_ids;
    for (float v : to_f32(r.at("input_ids." + key))) want_ids.push_back(int32_t(v));
    const std::vector<int32_t> ids = tok.encode_ids(text);
    ASSERT_EQ(ids, want_ids);
    ForwardResult out = model->forward(ids, {});
    const int64_t V = out.logits.dim(1);
    const std::vector<float> want_last = to_f32(r.at("last_logits." + key));
    ASSERT_EQ(int64_t(want_last.size()), V);
    const float* last = out.logits.ptr() + (out.logits.dim(0) - 1) * V;
    EXPECT_LE(test::parity_error(last, want_last.data(), V), kTol);
    if (k == 0) {
      const std::vector<float> want_all = to_f32(r.at("logits.0"));
      ASSERT_EQ(int64_t(want_all.size()), out.logits.numel());
      EXPECT_LE(test::parity_error(out.logits.ptr(), want_all.data(), out.logits.numel()), kTol);
    }
    const int32_t pred = argmax_last(out.logits);
    EXPECT_TRUE(pred == pos_id || pred == neg_id) << tok.token_text(pred);
    EXPECT_EQ(tok.token_text(pred), ref.metadata.at("predicted." + key));
  }
  // The demo sentence of the README: negation inside an overridden clause, the clause after "but" decides.
  EXPECT_EQ(ref.metadata.at("text.0"), "review: the acting was not bad , but the plot was dull . sentiment:");
  EXPECT_EQ(ref.metadata.at("predicted.0"), " negative");
}

TEST(DemoModel, HeldOutAccuracy) {
  Checkpoint ck = open_checkpoint(model_dir());
  auto model = load_causal_lm(ck);
  Tokenizer tok = Tokenizer::from_file(model_dir() + "/tokenizer.json");
  std::ifstream in(model_dir() + "/heldout.jsonl");
  ASSERT_TRUE(in.good());
  std::string line;
  int n = 0, right = 0;
  ForwardOptions last_only;
  last_only.all_logits = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json ex = nlohmann::json::parse(line);
    const std::string text = ex.at("text");
    const Encoding enc = tok.encode(text);
    // Every evidence word is covered by the tokens listed for it, through the C++ offsets.
    const std::vector<int> ev_tokens = ex.at("evidence_tokens");
    for (const auto& span : ex.at("evidence_char_spans")) {
      const size_t b = span.at(0), e = span.at(1);
      bool covered = false;
      for (int t : ev_tokens) covered |= enc.offsets.at(size_t(t)).first < e && b < enc.offsets.at(size_t(t)).second;
      EXPECT_TRUE(covered) << text;
    }
    const auto target = tok.token_to_id(std::string("Ġ") + ex.at("label").get<std::string>());
    ASSERT_TRUE(target.has_value());
    ForwardResult out = model->forward(enc.ids, last_only);
    right += argmax_last(out.logits) == *target;
    ++n;
  }
  EXPECT_GE(n, 200);
  EXPECT_GE(double(right) / n, 0.97) << right << " / " << n;
}

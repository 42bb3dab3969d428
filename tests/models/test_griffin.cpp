// RecurrentGemma / Griffin forward against the float64 PyTorch reference (scripts/make_griffin_fixtures.py):
// logits and every named activation, the local attention window, config cross-checks, thread invariance.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "core/error.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/griffin.h"

using namespace ssmx;
namespace fs = std::filesystem;

namespace {

constexpr double kTol = 1e-4;

std::string fixture_dir(const std::string& name) { return test::data_dir() + "/models/" + name; }

std::map<std::string, RawTensor> read_ref(const std::string& path, SafetensorsFile& keep) {
  keep = read_safetensors(path);
  return {keep.tensors.begin(), keep.tensors.end()};
}

std::vector<int32_t> ref_ids(std::map<std::string, RawTensor>& r) {
  std::vector<int32_t> ids;
  for (float v : to_f32(r.at("input_ids"))) ids.push_back(int32_t(v));
  return ids;
}

// Copies a fixture to a temp dir and edits its config.json.
void copy_with_config(const std::string& name, const std::string& to, const std::function<void(nlohmann::json&)>& edit) {
  for (const auto& f : fs::directory_iterator(fixture_dir(name))) fs::copy_file(f.path(), to + "/" + f.path().filename().string());
  nlohmann::json c = nlohmann::json::parse(test::read_file(to + "/config.json"));
  edit(c);
  test::write_file(to + "/config.json", c.dump(2));
}

void expect_load_error(const std::string& dir, const std::string& reason) {
  try {
    Checkpoint ck = open_checkpoint(dir);
    auto m = load_causal_lm(ck);
    FAIL() << "no error; expected: " << reason;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir + "/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(reason), std::string::npos) << "message: " << msg << "\nexpected: " << reason;
  }
}

class GriffinFixture : public ::testing::TestWithParam<const char*> {};

}  // namespace

TEST_P(GriffinFixture, MatchesPyTorchReference) {
  const std::string dir = fixture_dir(GetParam());
  ASSERT_TRUE(fs::exists(dir + "/reference.safetensors"));
  Checkpoint ck = open_checkpoint(dir);
  auto model = load_causal_lm(ck);
  EXPECT_EQ(model->info().family, "recurrent_gemma");
  SafetensorsFile keep;
  auto r = read_ref(dir + "/reference.safetensors", keep);
  const auto ids = ref_ids(r);
  ForwardOptions opt;
  opt.keep_activations = true;
  ForwardResult out = model->forward(ids, opt);
  int compared = 0;
  double worst = 0;
  std::set<std::string> seen;
  for (const auto& [name, t] : r) {
    if (name == "input_ids") continue;
    const Tensor* got = name == "logits" ? &out.logits : nullptr;
    if (!got) {
      auto it = out.acts.find(name);
      ASSERT_NE(it, out.acts.end()) << "the engine does not expose activation '" << name << "'";
      got = &it->second;
    }
    ASSERT_EQ(got->shape, t.shape) << name;
    std::vector<float> want = to_f32(t);
    const double err = test::parity_error(got->ptr(), want.data(), got->numel());
    EXPECT_LE(err, kTol) << name << ": parity error " << err;
    worst = std::max(worst, err);
    ++compared;
    seen.insert(name);
  }
  // Every activation the engine exposes is checked (reference and engine have the same names).
  for (const auto& [name, t] : out.acts) EXPECT_TRUE(seen.count(name)) << "activation '" << name << "' has no reference";
  EXPECT_GE(compared, 35);
  std::printf("%s: %d tensors, worst parity error %.3g\n", GetParam(), compared, worst);
  // Last-position logits equal the last row.
  ForwardOptions last;
  last.all_logits = false;
  ForwardResult lo = model->forward(ids, last);
  const int64_t V = lo.logits.dim(1);
  EXPECT_EQ(0, std::memcmp(lo.logits.ptr(), out.logits.ptr() + (out.logits.dim(0) - 1) * V, size_t(V) * 4));
  // The layer hook sees the same activations layer by layer.
  int64_t hooked = 0;
  ForwardOptions hk;
  hk.layer_hook = [&](int64_t layer, const std::map<std::string, Tensor>& acts) {
    const std::string key = "layers." + std::to_string(layer) + ".temporal_out";
    ASSERT_TRUE(acts.count(key));
    EXPECT_EQ(acts.at(key).data, out.acts.at(key).data);
    ++hooked;
  };
  model->forward(ids, hk);
  EXPECT_EQ(hooked, dynamic_cast<const GriffinModel&>(*model).config().n_layer);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GriffinFixture, ::testing::Values("griffin-f32", "griffin-bf16"));

TEST(Griffin, ConfigAndLayerTypes) {
  Checkpoint ck = open_checkpoint(fixture_dir("griffin-f32"));
  auto m = GriffinModel::load(ck);
  const GriffinConfig& c = m->config();
  EXPECT_EQ(c.n_layer, 4);
  EXPECT_EQ(c.d_model, 32);
  EXPECT_EQ(c.lru_width, 48);
  EXPECT_EQ(c.heads, 4);
  EXPECT_EQ(c.kv_heads, 1);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.rot_dims, 4);
  EXPECT_EQ(c.mlp_width, 48);
  EXPECT_EQ(c.window, 4);
  EXPECT_EQ(c.normalizer, 5.65625f);  // bf16(sqrt(32)) = 5.65625, not 5.65685
  EXPECT_EQ(c.recurrent, (std::vector<bool>{true, true, false, true}));
  EXPECT_TRUE(c.tied);
}

// The fixtures use a window shorter than the prompt: widening it changes the logits beyond the tolerance (so the
// parity test above really checks the sliding window), and the last position's logits with window w only depend
// on what the attention layer's window and the recurrence carry.
TEST(Griffin, SlidingWindowMatters) {
  test::TempDir td;
  copy_with_config("griffin-f32", td.path(), [](nlohmann::json& c) { c["attention_window_size"] = 1000; });
  SafetensorsFile keep;
  auto r = read_ref(fixture_dir("griffin-f32") + "/reference.safetensors", keep);
  const auto ids = ref_ids(r);
  ASSERT_GT(int64_t(ids.size()), 5);
  Checkpoint ck = open_checkpoint(td.path());
  auto wide = load_causal_lm(ck);
  ForwardOptions opt;
  opt.keep_activations = true;
  ForwardResult out = wide->forward(ids, opt);
  std::vector<float> want = to_f32(r.at("layers.2.attn"));
  const Tensor& got = out.acts.at("layers.2.attn");
  const int64_t cols = got.dim(1);
  // Rows 0..4 (i - 4 <= 0) are identical with both windows; later rows are not.
  EXPECT_LE(test::parity_error(got.ptr(), want.data(), 5 * cols), kTol);
  EXPECT_GT(test::parity_error(got.ptr() + 5 * cols, want.data() + 5 * cols, got.numel() - 5 * cols), 1e-3);
}

TEST(Griffin, ConfigMismatchErrors) {
  struct Case {
    const char* key;
    nlohmann::json value;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"hidden_size", 33, "hidden_size is 33 but the embedding width gives 32"},
      {"lru_width", 40, "lru_width is 40 but linear_x.weight's first dimension gives 48"},
      {"num_attention_heads", 8, "num_attention_heads is 8 but"},
      {"num_key_value_heads", 4, "num_key_value_heads is 4 but"},
      {"num_hidden_layers", 3, "num_hidden_layers is 3 but"},
      {"intermediate_size", 64, "intermediate_size is 64 (MLP width 32) but gate_proj.weight has 48 rows"},
      {"conv1d_width", 3, "conv1d_width is 3 but"},
      {"block_types", nlohmann::json::array({"recurrent", "attention"}), "block_types make layer 1 attention"},
  };
  for (const auto& cs : cases) {
    SCOPED_TRACE(cs.key);
    test::TempDir td;
    copy_with_config("griffin-f32", td.path(), [&](nlohmann::json& c) { c[cs.key] = cs.value; });
    expect_load_error(td.path(), cs.reason);
  }
}

TEST(Griffin, ThreadCountDoesNotChangeResults) {
  Checkpoint ck = open_checkpoint(fixture_dir("griffin-f32"));
  auto m = load_causal_lm(ck);
  std::vector<int32_t> ids;
  for (int i = 0; i < 300; ++i) ids.push_back((i * 37 + 11) % 509);
  ForwardOptions opt;
  opt.keep_activations = true;
  set_num_threads(1);
  ForwardResult a = m->forward(ids, opt);
  set_num_threads(2);
  ForwardResult b = m->forward(ids, opt);
  set_num_threads(0);
  EXPECT_EQ(a.logits.data, b.logits.data);
  for (const auto& [name, t] : a.acts) EXPECT_EQ(t.data, b.acts.at(name).data) << name;
}

TEST(Griffin, RgLruScanIsTheRecurrence) {
  const int64_t T = 7, W = 130;  // more than one channel block
  std::vector<float> a = test::random_normal(T * W, 3, 0.5f), x = test::random_normal(T * W, 4), out(size_t(T * W));
  rglru_scan(out.data(), a.data(), x.data(), T, W);
  for (int64_t c = 0; c < W; ++c) {
    double h = 0;
    for (int64_t t = 0; t < T; ++t) {
      h = double(a[size_t(t * W + c)]) * h + double(x[size_t(t * W + c)]);
      EXPECT_NEAR(out[size_t(t * W + c)], h, 1e-5 * std::max(1.0, std::abs(h)));
    }
  }
}

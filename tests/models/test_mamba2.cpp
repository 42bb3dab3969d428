// Mamba-2 forward against the PyTorch reference fixtures (scripts/make_mamba2_fixtures.py: HF f32 with groups and an
// untied head, bf16 with biases and the dt clamp, the mamba_ssm layout in f16), config cross-checks, the scan against
// the naive double recurrence, thread-count invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "core/error.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/mamba2.h"

using namespace ssmx;
namespace fs = std::filesystem;

namespace {

constexpr double kTol = 1e-4;

std::string fixture(const std::string& name) { return test::data_dir() + "/models/" + name; }

class Mamba2Fixture : public ::testing::TestWithParam<const char*> {};

// A copy of a fixture directory with config.json edited by `edit`.
std::string edited_copy(const test::TempDir& td, const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  for (const auto& e : fs::directory_iterator(fixture(name))) fs::copy_file(e.path(), td.file(e.path().filename().string()));
  nlohmann::json c = nlohmann::json::parse(test::read_file(td.file("config.json")));
  edit(c);
  test::write_file(td.file("config.json"), c.dump(2));
  return td.path();
}

std::string load_error(const std::string& dir) {
  try {
    Checkpoint ck = open_checkpoint(dir);
    load_causal_lm(ck);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_P(Mamba2Fixture, MatchesPyTorchReference) {
  const std::string dir = fixture(GetParam());
  SCOPED_TRACE(dir);
  Checkpoint ck = open_checkpoint(dir);
  auto model = load_causal_lm(ck);
  EXPECT_EQ(model->info().family, "mamba2");
  SafetensorsFile ref = read_safetensors(dir + "/reference.safetensors");
  std::map<std::string, RawTensor> r(ref.tensors.begin(), ref.tensors.end());
  ASSERT_TRUE(r.count("input_ids") && r.count("logits"));
  std::vector<int32_t> ids;
  for (float v : to_f32(r["input_ids"])) ids.push_back(int32_t(v));
  ForwardOptions opt;
  opt.keep_activations = true;
  ForwardResult out = model->forward(ids, opt);
  int compared = 0;
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
    ++compared;
  }
  const int64_t L = model->info().dim("layers");
  EXPECT_EQ(compared, 2 + 14 * L);  // logits, norm_f, 14 per layer: every activation is compared
  // Each activation the engine exposes is in the fixture.
  EXPECT_EQ(out.acts.size(), size_t(1 + 14 * L));
  // Last-position logits equal the last row.
  ForwardOptions last;
  last.all_logits = false;
  ForwardResult lo = model->forward(ids, last);
  const int64_t V = lo.logits.dim(1);
  EXPECT_EQ(0, std::memcmp(lo.logits.ptr(), out.logits.ptr() + (out.logits.dim(0) - 1) * V, size_t(V) * 4));
  // layer_hook sees the same tensors, in order.
  int64_t next = 0;
  ForwardOptions hk;
  hk.layer_hook = [&](int64_t layer, const std::map<std::string, Tensor>& acts) {
    EXPECT_EQ(layer, next++);
    const Tensor& d = acts.at("layers." + std::to_string(layer) + ".delta");
    const Tensor& want = out.acts.at("layers." + std::to_string(layer) + ".delta");
    EXPECT_EQ(0, std::memcmp(d.ptr(), want.ptr(), size_t(d.numel()) * 4));
  };
  model->forward(ids, hk);
  EXPECT_EQ(next, L);
}

INSTANTIATE_TEST_SUITE_P(AllLayouts, Mamba2Fixture,
                         ::testing::Values("mamba2-f32-safetensors", "mamba2-bf16-bias-clamp", "mamba2-f16-mamba-ssm"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

TEST(Mamba2Model, DimensionsFromShapes) {
  Checkpoint ck = open_checkpoint(fixture("mamba2-f32-safetensors"));
  auto m = Mamba2Model::load(ck);
  const Mamba2Config& c = m->config();
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.n_groups, 2);
  EXPECT_EQ(c.d_state, 8);
  EXPECT_EQ(c.d_conv, 4);
  EXPECT_EQ(c.chunk_size, 4);
  EXPECT_FALSE(c.tied);
  EXPECT_EQ(c.norm_groups, 1);
  Checkpoint ck2 = open_checkpoint(fixture("mamba2-bf16-bias-clamp"));
  auto m2 = Mamba2Model::load(ck2);
  EXPECT_TRUE(m2->config().in_proj_bias);
  EXPECT_FLOAT_EQ(m2->config().dt_min, 0.02f);
  EXPECT_FLOAT_EQ(m2->config().dt_max, 0.3f);
  EXPECT_TRUE(m2->config().tied);
  Checkpoint ck3 = open_checkpoint(fixture("mamba2-f16-mamba-ssm"));
  auto m3 = Mamba2Model::load(ck3);
  EXPECT_EQ(m3->config().n_layer, 3);
  EXPECT_EQ(m3->config().d_state, 16);
  EXPECT_EQ(m3->info().architecture, "Mamba2ForCausalLM");
}

TEST(Mamba2Model, ConfigMismatchesAreErrors) {
  struct Case {
    const char* fixture;
    std::function<void(nlohmann::json&)> edit;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"mamba2-f32-safetensors", [](nlohmann::json& c) { c["num_heads"] = 8; }, "num_heads is 8"},
      {"mamba2-f32-safetensors", [](nlohmann::json& c) { c["head_dim"] = 32; }, "head_dim is 32"},
      {"mamba2-f32-safetensors", [](nlohmann::json& c) { c["state_size"] = 16; }, "state_size is 16"},
      {"mamba2-f32-safetensors", [](nlohmann::json& c) { c["n_groups"] = 3; }, "n_groups 3"},
      {"mamba2-f32-safetensors", [](nlohmann::json& c) { c["hidden_size"] = 64; }, "hidden_size is 64"},
      {"mamba2-f32-safetensors", [](nlohmann::json& c) { c["expand"] = 4; }, "expand is 4"},
      {"mamba2-f32-safetensors", [](nlohmann::json& c) { c["conv_kernel"] = 3; }, "conv_kernel is 3"},
      {"mamba2-f32-safetensors", [](nlohmann::json& c) { c["num_hidden_layers"] = 3; }, "num_hidden_layers is 3"},
      {"mamba2-f32-safetensors", [](nlohmann::json& c) { c["use_bias"] = true; }, "use_bias is true"},
      {"mamba2-f32-safetensors", [](nlohmann::json& c) { c["time_step_limit"] = {0.5, 0.1}; }, "lower bound above"},
      {"mamba2-bf16-bias-clamp", [](nlohmann::json& c) { c["vocab_size"] = 500; }, "vocab_size is 500"},
      {"mamba2-f16-mamba-ssm", [](nlohmann::json& c) { c["ssm_cfg"]["headdim"] = 8; }, "ssm_cfg.headdim is 8"},
      {"mamba2-f16-mamba-ssm", [](nlohmann::json& c) { c["ssm_cfg"]["d_state"] = 8; }, "ssm_cfg.d_state is 8"},
      {"mamba2-f16-mamba-ssm", [](nlohmann::json& c) { c["n_layer"] = 2; }, "n_layer is 2"},
  };
  for (const auto& cs : cases) {
    test::TempDir td;
    const std::string dir = edited_copy(td, cs.fixture, cs.edit);
    const std::string err = load_error(dir);
    EXPECT_NE(err.find(cs.expect), std::string::npos) << "got: '" << err << "', want '" << cs.expect << "'";
    EXPECT_NE(err.find("config.json"), std::string::npos) << err;
  }
  // The unedited copy loads (the cases above fail for their edit, not for the copy).
  test::TempDir td;
  EXPECT_EQ(load_error(edited_copy(td, "mamba2-f32-safetensors", [](nlohmann::json&) {})), "");
}

TEST(Mamba2Model, UnknownSsmLayerAndModelType) {
  test::TempDir td;
  const std::string dir = edited_copy(td, "mamba2-f16-mamba-ssm", [](nlohmann::json& c) { c["ssm_cfg"]["layer"] = "Mamba3"; });
  EXPECT_NE(load_error(dir).find("Mamba3"), std::string::npos);
  test::TempDir td2;
  const std::string dir2 = edited_copy(td2, "mamba2-f32-safetensors", [](nlohmann::json& c) { c["model_type"] = "mamba3"; });
  EXPECT_NE(load_error(dir2).find("mamba2"), std::string::npos);  // the message lists the supported types
}

TEST(Mamba2Model, ScanMatchesNaiveDoubleRecurrence) {
  const int64_t T = 37, H = 6, P = 5, G = 3, N = 7, ldx = H * P + 3, ldbc = 2 * G * N + 1;
  std::vector<float> x = test::random_normal(T * ldx, 1), bc = test::random_normal(T * ldbc, 2),
                     dr = test::random_normal(T * H, 3), A = test::random_normal(H, 4);
  std::vector<float> delta(size_t(T * H));
  for (size_t k = 0; k < delta.size(); ++k) delta[k] = std::exp(dr[k] - 2.0f);
  for (float& a : A) a = -std::exp(a);
  std::vector<float> got(size_t(T * H * P));
  mamba2_scan(got.data(), x.data(), ldx, delta.data(), A.data(), bc.data(), bc.data() + G * N, ldbc, T, H, P, G, N);
  std::vector<double> want(size_t(T * H * P));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / G);
    std::vector<double> S(size_t(P * N), 0.0);
    for (int64_t t = 0; t < T; ++t) {
      const double d = delta[t * H + h], a = std::exp(d * A[h]);
      for (int64_t p = 0; p < P; ++p) {
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          double& s = S[p * N + n];
          s = a * s + d * x[t * ldx + h * P + p] * bc[t * ldbc + g * N + n];
          acc += s * bc[t * ldbc + G * N + g * N + n];
        }
        want[t * H * P + h * P + p] = acc;
      }
    }
  }
  EXPECT_LE(test::parity_error(got, want), 1e-5);
  double mx = 0;
  for (double v : want) mx = std::max(mx, std::abs(v));
  EXPECT_GT(mx, 0.5);  // not trivially zero
}

TEST(Mamba2Model, OneAndTwoThreadsGiveBitwiseIdenticalLogits) {
  Checkpoint ck = open_checkpoint(fixture("mamba2-bf16-bias-clamp"));
  auto m = load_causal_lm(ck);
  std::vector<int32_t> ids;
  for (int i = 0; i < 300; ++i) ids.push_back((i * 37 + 5) % 509);
  set_num_threads(1);
  ForwardResult a = m->forward(ids, {});
  set_num_threads(2);
  ForwardResult b = m->forward(ids, {});
  set_num_threads(0);
  ASSERT_EQ(a.logits.shape, b.logits.shape);
  EXPECT_EQ(0, std::memcmp(a.logits.ptr(), b.logits.ptr(), size_t(a.logits.numel()) * 4));
}

TEST(Mamba2Model, RejectsOutOfRangeTokenIds) {
  Checkpoint ck = open_checkpoint(fixture("mamba2-f32-safetensors"));
  auto m = load_causal_lm(ck);
  EXPECT_THROW(m->forward({1, 2, int32_t(m->vocab_size())}, {}), Error);
}

TEST(Mamba2Model, ConfigWithPythonInfinityLoads) {
  // transformers writes time_step_limit = [0.0, Infinity] (Python's json for float('inf')).
  test::TempDir td;
  const std::string dir = edited_copy(td, "mamba2-f32-safetensors", [](nlohmann::json& c) { c["time_step_limit"] = "@@"; });
  std::string text = test::read_file(td.file("config.json"));
  const size_t at = text.find("\"@@\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 4, "[0.02, Infinity]");
  test::write_file(td.file("config.json"), text);
  Checkpoint ck = open_checkpoint(dir);
  auto m = Mamba2Model::load(ck);
  EXPECT_FLOAT_EQ(m->config().dt_min, 0.02f);
  EXPECT_TRUE(std::isinf(m->config().dt_max));
  // Still invalid JSON elsewhere is an error naming the file.
  test::write_file(td.file("config.json"), "{\"model_type\": Infinityx}");
  EXPECT_NE(load_error(dir).find("config.json"), std::string::npos);
}

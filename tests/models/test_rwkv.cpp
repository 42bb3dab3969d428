// RWKV-4 forward against the PyTorch reference fixtures (scripts/make_rwkv_fixtures.py): every layout and dtype,
// the rescale_every case, config mismatch errors, the WKV kernel against the naive formula, thread invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "../test_util.h"
#include "core/error.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/rwkv.h"
#include "models/rwkv_random.h"

using namespace ssmx;

namespace {

constexpr double kTol = 1e-4;  // max |a - b| <= 1e-4 · max(1, max |b|)

std::map<std::string, RawTensor> read_ref(const std::string& path, SafetensorsFile& keep) {
  keep = read_safetensors(path);
  return std::map<std::string, RawTensor>(keep.tensors.begin(), keep.tensors.end());
}

class RwkvFixture : public ::testing::TestWithParam<const char*> {};

}  // namespace

TEST_P(RwkvFixture, MatchesPyTorchReference) {
  const std::string dir = test::data_dir() + "/models/" + GetParam();
  SCOPED_TRACE(dir);
  ASSERT_TRUE(std::filesystem::exists(dir + "/reference.safetensors")) << "missing fixture " << dir;
  Checkpoint ck = open_checkpoint(dir);
  auto model = load_causal_lm(ck);
  EXPECT_EQ(model->info().family, "rwkv");
  EXPECT_EQ(model->info().architecture, "RwkvForCausalLM");
  SafetensorsFile sf;
  auto r = read_ref(dir + "/reference.safetensors", sf);
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
  EXPECT_EQ(compared, 3 + 12 * L);  // logits, pre_ln, norm_f and 12 per layer
  EXPECT_EQ(out.acts.size(), size_t(2 + 12 * L));
  // Last-position logits equal the last row of the full logits; the layer hook sees the same activations.
  ForwardOptions last;
  last.all_logits = false;
  int64_t hooked = 0;
  last.layer_hook = [&](int64_t layer, const std::map<std::string, Tensor>& acts) {
    EXPECT_EQ(layer, hooked++);
    const std::string wn = "layers." + std::to_string(layer) + ".wkv";
    ASSERT_TRUE(acts.count(wn));
    EXPECT_EQ(0, std::memcmp(acts.at(wn).ptr(), out.acts.at(wn).ptr(), acts.at(wn).data.size() * 4));
  };
  ForwardResult lo = model->forward(ids, last);
  EXPECT_EQ(hooked, L);
  const int64_t V = lo.logits.dim(1);
  EXPECT_EQ(0, std::memcmp(lo.logits.ptr(), out.logits.ptr() + (out.logits.dim(0) - 1) * V, size_t(V) * 4));
}

INSTANTIATE_TEST_SUITE_P(AllLayoutsAndDtypes, RwkvFixture,
                         ::testing::Values("rwkv-f32-safetensors", "rwkv-f32-rescale", "rwkv-bf16-bin",
                                           "rwkv-f16-safetensors"));

TEST(RwkvModel, DimensionsAndRescaleFromConfig) {
  Checkpoint ck = open_checkpoint(test::data_dir() + "/models/rwkv-f32-safetensors");
  auto m = RwkvModel::load(ck);
  EXPECT_EQ(m->config().hidden, 16);
  EXPECT_EQ(m->config().att, 12);  // attention_hidden_size differs from hidden_size in this fixture
  EXPECT_EQ(m->config().ffn, 40);
  EXPECT_EQ(m->config().n_layer, 3);
  EXPECT_EQ(m->config().rescale_every, 6);
  Checkpoint re = open_checkpoint(test::data_dir() + "/models/rwkv-f32-rescale");
  EXPECT_EQ(RwkvModel::load(re)->config().rescale_every, 2);
}

TEST(RwkvModel, RescalingHalvesTheResidualStreamButBarelyMovesLogits) {
  // The fixture has rescale_every 2 over 4 blocks: block 2's residual input is half of what it is without
  // rescaling (up to LayerNorm eps), and the logits differ only through eps.
  const std::string dir = test::data_dir() + "/models/rwkv-f32-rescale";
  Checkpoint ck = open_checkpoint(dir);
  auto scaled = RwkvModel::load(ck);
  ck.config["rescale_every"] = 0;
  auto plain = RwkvModel::load(ck);
  std::vector<int32_t> ids = {5, 17, 200, 3, 99, 42, 7};
  ForwardOptions opt;
  opt.keep_activations = true;
  ForwardResult a = scaled->forward(ids, opt), b = plain->forward(ids, opt);
  const Tensor& ha = a.acts.at("layers.2.residual_in");
  const Tensor& hb = b.acts.at("layers.2.residual_in");
  std::vector<float> half(hb.data);
  for (float& x : half) x *= 0.5f;
  EXPECT_LE(test::parity_error(ha.ptr(), half.data(), ha.numel()), 1e-3);
  EXPECT_GT(test::parity_error(ha.ptr(), hb.ptr(), ha.numel()), 0.1);  // really scaled
  const double dl = test::parity_error(a.logits.ptr(), b.logits.ptr(), a.logits.numel());
  EXPECT_LE(dl, 1e-2);
}

TEST(RwkvModel, ConfigMismatchesNameTheConfig) {
  const std::string src = test::data_dir() + "/models/rwkv-f32-safetensors";
  for (auto [key, value, what] : {std::tuple{"hidden_size", 32, "hidden_size is 32"},
                                  std::tuple{"attention_hidden_size", 16, "attention_hidden_size is 16"},
                                  std::tuple{"intermediate_size", 41, "intermediate_size is 41"},
                                  std::tuple{"num_hidden_layers", 4, "num_hidden_layers is 4"},
                                  std::tuple{"vocab_size", 50277, "vocab_size is 50277"}}) {
    Checkpoint ck = open_checkpoint(src);
    ck.config[key] = value;
    try {
      RwkvModel::load(ck);
      ADD_FAILURE() << key << " mismatch not detected";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << msg;
    }
  }
  Checkpoint ck = open_checkpoint(src);
  ck.config["rescale_every"] = -1;
  EXPECT_THROW(RwkvModel::load(ck), Error);
}

TEST(RwkvModel, MissingHeadAndBadShapesAreErrors) {
  Checkpoint ck = open_checkpoint(test::data_dir() + "/models/rwkv-f32-safetensors");
  Checkpoint no_head = ck;
  no_head.tensors.erase("head.weight");
  try {
    RwkvModel::load(no_head);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head.weight"), std::string::npos);
  }
  Checkpoint bad = ck;
  bad.tensors["rwkv.blocks.1.attention.value.weight"].shape = {16, 12};
  try {
    RwkvModel::load(bad);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention.value.weight"), std::string::npos) << e.what();
  }
}

TEST(RwkvModel, DetectedByTensorsWithoutModelType) {
  Checkpoint ck = open_checkpoint(test::data_dir() + "/models/rwkv-bf16-bin");
  ck.config.erase("model_type");
  ck.config_path.clear();
  EXPECT_EQ(detect_family(ck), "rwkv");
}

TEST(RwkvWkv, StableRecurrenceEqualsNaiveSumsEvenForLargeKeys) {
  const int64_t T = 40, A = 37;  // A not a multiple of the 16-channel block
  std::vector<float> k = test::random_normal(T * A, 3, 2.0f), v = test::random_normal(T * A, 4);
  std::vector<float> td = test::random_normal(A, 5), u = test::random_normal(A, 6), wneg(A);
  for (int64_t c = 0; c < A; ++c) wneg[c] = -std::exp(td[c]);
  for (int64_t t = 0; t < T; ++t) k[t * A + 1] += 60.0f;  // exp(60+) overflows f32: the naive form would give inf/inf
  std::vector<float> out(T * A), logz(T * A);
  rwkv_wkv_forward(out.data(), logz.data(), k.data(), v.data(), wneg.data(), u.data(), T, A);
  double worst = 0, worst_z = 0;
  for (int64_t c = 0; c < A; ++c)
    for (int64_t t = 0; t < T; ++t) {
      // naive in long double with a shift
      long double num = 0, den = 0;
      const long double shift = 70;
      for (int64_t j = 0; j <= t; ++j) {
        const long double e = j == t ? std::exp((long double)u[c] + k[t * A + c] - shift)
                                     : std::exp((long double)wneg[c] * (t - 1 - j) + k[j * A + c] - shift);
        num += e * v[j * A + c];
        den += e;
      }
      worst = std::max(worst, double(std::fabs(num / den - out[t * A + c])));
      worst_z = std::max(worst_z, double(std::fabs(std::log(den) + shift - logz[t * A + c])) / std::max(1.0, std::fabs(double(std::log(den) + shift))));
      ASSERT_TRUE(std::isfinite(out[t * A + c]));
    }
  EXPECT_LE(worst, 2e-5);
  EXPECT_LE(worst_z, 1e-6);
}

TEST(RwkvModel, OneAndTwoThreadsGiveBitwiseIdenticalLogits) {
  test::TempDir td;
  RwkvConfig c;
  c.n_layer = 2, c.hidden = 192, c.att = 160, c.ffn = 384, c.vocab = 1000, c.rescale_every = 1;
  write_random_rwkv(td.path(), c, 21);
  Checkpoint ck = open_checkpoint(td.path());
  auto m = load_causal_lm(ck);
  EXPECT_EQ(m->info().family, "rwkv");
  std::vector<int32_t> ids;
  for (int i = 0; i < 300; ++i) ids.push_back((i * 37 + 5) % 1000);
  set_num_threads(1);
  ForwardResult a = m->forward(ids, {});
  set_num_threads(2);
  ForwardResult b = m->forward(ids, {});
  set_num_threads(0);
  ASSERT_EQ(a.logits.shape, b.logits.shape);
  EXPECT_EQ(0, std::memcmp(a.logits.ptr(), b.logits.ptr(), size_t(a.logits.numel()) * 4));
}

TEST(RwkvModel, RejectsOutOfRangeTokenIds) {
  Checkpoint ck = open_checkpoint(test::data_dir() + "/models/rwkv-f32-safetensors");
  auto m = load_causal_lm(ck);
  EXPECT_THROW(m->forward({1, 2, int32_t(m->vocab_size())}, {}), Error);
  EXPECT_THROW(m->forward({}, {}), Error);
}

// Griffin implicit attention: the PyTorch reference matrices, the reconstruction identity of every recurrent layer's
// linear_out input, row / reduction modes against the full matrices, thread invariance.
#include <gtest/gtest.h>

#include <cmath>

#include "../test_util.h"
#include "attribution/griffin_attention.h"
#include "core/error.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/griffin.h"

using namespace ssmx;

namespace {

struct Run {
  Checkpoint ck;
  std::unique_ptr<GriffinModel> model;
  ForwardResult out;
  std::vector<int32_t> ids;
};

std::unique_ptr<Run> run_fixture(const std::string& name, int64_t T = 0) {
  auto r = std::make_unique<Run>();
  const std::string dir = test::data_dir() + "/models/" + name;
  r->ck = open_checkpoint(dir);
  r->model = GriffinModel::load(r->ck);
  SafetensorsFile ref = read_safetensors(dir + "/reference.safetensors");
  for (const auto& [n, t] : ref.tensors)
    if (n == "input_ids")
      for (float v : to_f32(t)) r->ids.push_back(int32_t(v));
  if (T > 0) {
    r->ids.clear();
    for (int64_t i = 0; i < T; ++i) r->ids.push_back(int32_t((i * 53 + 5) % 509));
  }
  ForwardOptions opt;
  opt.keep_activations = true;
  r->out = r->model->forward(r->ids, opt);
  return r;
}

GriffinTrace trace_of(const Run& r, int64_t layer) {
  const GriffinLayer& ly = r.model->layer(layer);
  return griffin_trace(r.out.acts, layer, ly.conv_w.p, ly.conv_b.p, r.model->config().conv_width);
}

}  // namespace

TEST(GriffinAttention, MatchesPyTorchReference) {
  auto r = run_fixture("griffin-f32");
  SafetensorsFile ref = read_safetensors(test::data_dir() + "/models/griffin-f32/attention.safetensors");
  int checked = 0;
  for (const auto& [name, t] : ref.tensors) {
    const int64_t layer = std::stoll(name.substr(7, name.find('.', 7) - 7));
    const bool compat = name.find("compat") != std::string::npos;
    GriffinAttnOptions o;
    o.compat = compat;
    GriffinTrace tr = trace_of(*r, layer);
    Tensor got = griffin_attention_full(tr, o, 0, tr.W);
    ASSERT_EQ(got.shape, t.shape) << name;
    std::vector<float> want = to_f32(t);
    EXPECT_LE(test::parity_error(got.ptr(), want.data(), got.numel()), 1e-4) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 4);
  // The compat matrices (no sqrt(1 - a²)) really differ from the exact ones.
  GriffinTrace tr = trace_of(*r, 0);
  GriffinAttnOptions c;
  c.compat = true;
  Tensor ex = griffin_attention_full(tr, {}, 0, tr.W), co = griffin_attention_full(tr, c, 0, tr.W);
  EXPECT_GT(test::parity_error(co.ptr(), ex.data.data(), ex.numel()), 1e-2);
}

// gated[i,c] = Σ_j Â_c[i,j]·x[j,c] + y[i,c]·b_c·Σ_j α_c[i,j] for every recurrent layer, to float precision.
TEST(GriffinAttention, ReconstructsTheRecurrentBlockOutput) {
  for (const char* fx : {"griffin-f32", "griffin-bf16"}) {
    auto r = run_fixture(fx);
    const GriffinConfig& cfg = r->model->config();
    int layers = 0;
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
      if (!cfg.recurrent[size_t(l)]) continue;
      SCOPED_TRACE(std::string(fx) + " layer " + std::to_string(l));
      GriffinTrace tr = trace_of(*r, l);
      const int64_t T = tr.T, W = tr.W;
      Tensor A = griffin_attention_full(tr, {}, 0, W);
      GriffinAttnOptions bare;
      bare.gate = false, bare.conv = false;
      Tensor alpha = griffin_attention_full(tr, bare, 0, W);
      const Tensor& gated = r->out.acts.at("layers." + std::to_string(l) + ".gated");
      std::vector<double> rec(size_t(T * W));
      for (int64_t c = 0; c < W; ++c)
        for (int64_t i = 0; i < T; ++i) {
          double s = 0, sa = 0;
          for (int64_t j = 0; j <= i; ++j) {
            s += double(A.data[size_t((c * T + i) * T + j)]) * tr.x[j * W + c];
            sa += alpha.data[size_t((c * T + i) * T + j)];
          }
          rec[size_t(i * W + c)] = s + double(tr.y[i * W + c]) * tr.conv_b[c] * sa;
        }
      std::vector<float> g(gated.data.begin(), gated.data.end());
      EXPECT_LE(test::parity_error(g, rec), 2e-6);
      ++layers;
    }
    EXPECT_GE(layers, 2);
  }
}

TEST(GriffinAttention, RowAndReductionsAgreeWithFullMatrices) {
  auto r = run_fixture("griffin-f32", 70);
  GriffinTrace tr = trace_of(*r, 1);
  const int64_t T = tr.T, W = tr.W;
  Tensor full = griffin_attention_full(tr, {}, 0, W);
  for (int64_t i : {int64_t(0), int64_t(5), T - 1}) {
    Tensor row = griffin_attention_row(tr, {}, i, 0, W);
    for (int64_t c = 0; c < W; ++c)
      for (int64_t j = 0; j < T; ++j) ASSERT_EQ(row.data[size_t(c * T + j)], full.data[size_t((c * T + i) * T + j)]);
  }
  // A channel sub-range.
  Tensor sub = griffin_attention_full(tr, {}, 10, 20);
  for (int64_t k = 0; k < 10 * T * T; ++k) ASSERT_EQ(sub.data[size_t(k)], full.data[size_t(10 * T * T + k)]);
  for (AttnReduce red : {AttnReduce::Mean, AttnReduce::AbsMean, AttnReduce::Max}) {
    Tensor got = griffin_attention_reduce(tr, {}, red, 0, W);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j) {
        double acc = red == AttnReduce::Max ? -INFINITY : 0.0;
        for (int64_t c = 0; c < W; ++c) {
          const double v = full.data[size_t((c * T + i) * T + j)];
          acc = red == AttnReduce::Mean ? acc + v : red == AttnReduce::AbsMean ? acc + std::fabs(v) : std::max(acc, v);
        }
        if (red != AttnReduce::Max) acc /= double(W);
        ASSERT_NEAR(got.data[size_t(i * T + j)], acc, 1e-6 * std::max(1.0, std::fabs(acc))) << i << "," << j;
      }
  }
}

TEST(GriffinAttention, ThreadCountDoesNotChangeResults) {
  auto r = run_fixture("griffin-f32", 150);
  GriffinTrace tr = trace_of(*r, 0);
  set_num_threads(1);
  Tensor f1 = griffin_attention_full(tr, {}, 0, tr.W), r1 = griffin_attention_row(tr, {}, 149, 0, tr.W),
         m1 = griffin_attention_reduce(tr, {}, AttnReduce::AbsMean, 0, tr.W);
  set_num_threads(2);
  Tensor f2 = griffin_attention_full(tr, {}, 0, tr.W), r2 = griffin_attention_row(tr, {}, 149, 0, tr.W),
         m2 = griffin_attention_reduce(tr, {}, AttnReduce::AbsMean, 0, tr.W);
  set_num_threads(0);
  EXPECT_EQ(f1.data, f2.data);
  EXPECT_EQ(r1.data, r2.data);
  EXPECT_EQ(m1.data, m2.data);
}

TEST(GriffinAttention, NotARecurrentLayer) {
  auto r = run_fixture("griffin-f32");
  EXPECT_THROW(trace_of(*r, 2), Error);
}

// The local attention layer's softmax weights: rows sum to 1 inside the causal window (i − j ≤ window), zero outside,
// and Σ_j P[h,i,j]·v[j] reproduces the layer's attention output for every head (T = 12 > window 4).
TEST(GriffinAttention, LocalAttentionReconstructsTheAttentionOutput) {
  auto r = run_fixture("griffin-f32", 12);
  const GriffinConfig& cfg = r->model->config();
  ASSERT_EQ(cfg.window, 4);
  int layers = 0;
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    if (cfg.recurrent[size_t(l)]) continue;
    SCOPED_TRACE("layer " + std::to_string(l));
    const Tensor P = griffin_local_attention(r->out.acts, l, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.window);
    const int64_t T = 12, H = cfg.heads, KV = cfg.kv_heads, hd = cfg.head_dim;
    ASSERT_EQ(P.shape, (std::vector<int64_t>{H, T, T}));
    const Tensor& v = r->out.acts.at("layers." + std::to_string(l) + ".v");
    const Tensor& attn = r->out.acts.at("layers." + std::to_string(l) + ".attn");
    std::vector<double> rec(size_t(T * H * hd), 0.0);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        double sum = 0;
        for (int64_t j = 0; j < T; ++j) {
          const float w = P.ptr()[(h * T + i) * T + j];
          if (j > i || i - j > cfg.window) EXPECT_EQ(w, 0.0f) << "h " << h << " i " << i << " j " << j;
          else EXPECT_GT(w, 0.0f) << "h " << h << " i " << i << " j " << j;
          sum += w;
          for (int64_t d = 0; d < hd; ++d) rec[size_t((i * H + h) * hd + d)] += double(w) * v.ptr()[(j * KV + h / (H / KV)) * hd + d];
        }
        EXPECT_NEAR(sum, 1.0, 1e-6);
      }
    EXPECT_LE(test::parity_error(std::vector<float>(attn.data.begin(), attn.data.end()), rec), 1e-5);
    ++layers;
  }
  EXPECT_GE(layers, 1);
  EXPECT_THROW(griffin_local_attention(r->out.acts, 0, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.window), Error);
}

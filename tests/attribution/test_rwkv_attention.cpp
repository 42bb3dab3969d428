// RWKV-4 implicit attention: the matrices reproduce each layer's r⊙wkv from the values, rows sum to one before the
// gate, the row and reduced modes agree with the full matrices, and the thread count changes nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../test_util.h"
#include "attribution/rwkv_attention.h"
#include "core/error.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "models/rwkv.h"
#include "models/rwkv_random.h"

using namespace ssmx;

namespace {

struct FixtureRun {
  std::unique_ptr<RwkvModel> model;
  ForwardResult res;
};

FixtureRun run_fixture(const std::string& name, std::vector<int32_t> ids) {
  Checkpoint ck = open_checkpoint(test::data_dir() + "/models/" + name);
  FixtureRun r;
  r.model = RwkvModel::load(ck);
  ForwardOptions opt;
  opt.keep_activations = true;
  r.res = r.model->forward(ids, opt);
  return r;
}

const std::vector<int32_t> kIds = {3, 77, 401, 12, 12, 250, 9, 500, 131, 64, 2, 300, 45, 188, 7, 99, 420};

}  // namespace

TEST(RwkvAttention, MatricesTimesValuesReproduceGatedWkvInEveryLayer) {
  for (const char* name : {"rwkv-f32-safetensors", "rwkv-f32-rescale", "rwkv-f16-safetensors"}) {
    SCOPED_TRACE(name);
    FixtureRun run = run_fixture(name, kIds);
    const int64_t T = int64_t(kIds.size());
    for (int64_t l = 0; l < run.model->config().n_layer; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      const Tensor& v = run.res.acts.at(p + "v");
      const Tensor& want = run.res.acts.at(p + "rwkv");
      const Tensor& wkv = run.res.acts.at(p + "wkv");
      const int64_t A = v.dim(1);
      std::vector<int64_t> all(static_cast<size_t>(A), 0);
      for (int64_t c = 0; c < A; ++c) all[size_t(c)] = c;
      Tensor gated = rwkv_attention_channels(rwkv_attn_input(*run.model, l, run.res.acts, true), all);
      Tensor plain = rwkv_attention_channels(rwkv_attn_input(*run.model, l, run.res.acts, false), all);
      ASSERT_EQ(gated.shape, (std::vector<int64_t>{A, T, T}));
      std::vector<float> got(size_t(T * A)), got_plain(size_t(T * A));
      double worst_rowsum = 0, upper = 0;
      for (int64_t c = 0; c < A; ++c)
        for (int64_t i = 0; i < T; ++i) {
          double s = 0, sp = 0, rs = 0;
          for (int64_t j = 0; j < T; ++j) {
            const float g = gated.ptr()[(c * T + i) * T + j], a = plain.ptr()[(c * T + i) * T + j];
            if (j > i) upper = std::max(upper, double(std::fabs(g)) + std::fabs(a));
            s += double(g) * v.ptr()[j * A + c];
            sp += double(a) * v.ptr()[j * A + c];
            rs += a;
          }
          got[size_t(i * A + c)] = float(s);
          got_plain[size_t(i * A + c)] = float(sp);
          worst_rowsum = std::max(worst_rowsum, std::fabs(rs - 1.0));
        }
      EXPECT_EQ(upper, 0.0) << "layer " << l << ": weights above the diagonal (causality)";
      EXPECT_LE(worst_rowsum, 1e-5) << "layer " << l;
      EXPECT_LE(test::parity_error(got.data(), want.ptr(), T * A), 1e-5) << "layer " << l << " r*wkv";
      EXPECT_LE(test::parity_error(got_plain.data(), wkv.ptr(), T * A), 1e-5) << "layer " << l << " wkv";
    }
  }
}

TEST(RwkvAttention, RowModeEqualsFullMatrixRowAndReductionsAgree) {
  FixtureRun run = run_fixture("rwkv-f32-safetensors", kIds);
  const int64_t T = int64_t(kIds.size());
  RwkvAttnInput in = rwkv_attn_input(*run.model, 1, run.res.acts, true);
  const int64_t A = in.A;
  std::vector<int64_t> all(static_cast<size_t>(A), 0);
  for (int64_t c = 0; c < A; ++c) all[size_t(c)] = c;
  Tensor full = rwkv_attention_channels(in, all);
  for (int64_t row : {int64_t(0), int64_t(5), T - 1}) {
    Tensor r = rwkv_attention_row(in, row);
    ASSERT_EQ(r.shape, (std::vector<int64_t>{A, T}));
    for (int64_t c = 0; c < A; ++c)
      EXPECT_EQ(0, std::memcmp(r.ptr() + c * T, full.ptr() + (c * T + row) * T, size_t(T) * 4)) << "row " << row << " channel " << c;
  }
  // A subset of channels gives the same matrices as the full set.
  Tensor sub = rwkv_attention_channels(in, {7, 2});
  EXPECT_EQ(0, std::memcmp(sub.ptr(), full.ptr() + 7 * T * T, size_t(T * T) * 4));
  EXPECT_EQ(0, std::memcmp(sub.ptr() + T * T, full.ptr() + 2 * T * T, size_t(T * T) * 4));
  // Reductions against the materialised matrices.
  Tensor mean = rwkv_attention_reduced(in, RwkvReduce::Mean), absmean = rwkv_attention_reduced(in, RwkvReduce::AbsMean),
         mx = rwkv_attention_reduced(in, RwkvReduce::Max);
  std::vector<double> wm(size_t(T * T), 0.0), wa(size_t(T * T), 0.0), wx(size_t(T * T), 0.0);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0, sa = 0, m = -1e30;
      for (int64_t c = 0; c < A; ++c) {
        const double g = full.ptr()[(c * T + i) * T + j];
        s += g, sa += std::fabs(g), m = std::max(m, g);
      }
      wm[size_t(i * T + j)] = s / double(A), wa[size_t(i * T + j)] = sa / double(A), wx[size_t(i * T + j)] = m;
    }
  EXPECT_LE(test::parity_error(std::vector<float>(mean.data), wm), 1e-6);
  EXPECT_LE(test::parity_error(std::vector<float>(absmean.data), wa), 1e-6);
  EXPECT_LE(test::parity_error(std::vector<float>(mx.data), wx), 1e-6);
  EXPECT_GT(mean.ptr()[(T - 1) * T + T - 1], 0.0f);
  EXPECT_THROW(rwkv_attention_row(in, T), Error);
  EXPECT_THROW(rwkv_attention_channels(in, {A}), Error);
  EXPECT_THROW(rwkv_attn_input(*run.model, 3, run.res.acts, true), Error);
}

TEST(RwkvAttention, LargeKeysStayFiniteAndNormalised) {
  // Keys of +-80 overflow a naive exp in f32; the log-space form keeps rows summing to one.
  const int64_t T = 30, A = 5;
  std::vector<float> k = test::random_normal(T * A, 8, 40.0f), wneg(A), u(A, 0.5f);
  for (int64_t c = 0; c < A; ++c) wneg[size_t(c)] = -0.1f * float(c + 1);
  RwkvAttnInput in;
  in.k = k.data(), in.wneg = wneg.data(), in.u = u.data(), in.T = T, in.A = A;
  Tensor m = rwkv_attention_channels(in, {0, 1, 2, 3, 4});
  for (int64_t c = 0; c < A; ++c)
    for (int64_t i = 0; i < T; ++i) {
      double s = 0;
      for (int64_t j = 0; j < T; ++j) {
        ASSERT_TRUE(std::isfinite(m.ptr()[(c * T + i) * T + j]));
        s += m.ptr()[(c * T + i) * T + j];
      }
      EXPECT_NEAR(s, 1.0, 1e-4);  // exponents of size ~100 carry an f32 rounding of ~1e-5 each
    }
}

TEST(RwkvAttention, OneAndTwoThreadsBitwiseIdentical) {
  test::TempDir td;
  RwkvConfig c;
  c.n_layer = 1, c.hidden = 64, c.att = 96, c.ffn = 128, c.vocab = 300;
  write_random_rwkv(td.path(), c, 5);
  Checkpoint ck = open_checkpoint(td.path());
  auto m = RwkvModel::load(ck);
  std::vector<int32_t> ids;
  for (int i = 0; i < 120; ++i) ids.push_back((i * 31 + 3) % 300);
  ForwardOptions opt;
  opt.keep_activations = true;
  ForwardResult res = m->forward(ids, opt);
  RwkvAttnInput in = rwkv_attn_input(*m, 0, res.acts, true);
  auto all = [&] {
    std::vector<Tensor> out;
    out.push_back(rwkv_attention_channels(in, {0, 50, 95}));
    out.push_back(rwkv_attention_row(in, 100));
    out.push_back(rwkv_attention_reduced(in, RwkvReduce::Mean));
    out.push_back(rwkv_attention_reduced(in, RwkvReduce::Max));
    return out;
  };
  set_num_threads(1);
  auto a = all();
  set_num_threads(2);
  auto b = all();
  set_num_threads(0);
  for (size_t q = 0; q < a.size(); ++q) {
    ASSERT_EQ(a[q].shape, b[q].shape);
    EXPECT_EQ(0, std::memcmp(a[q].ptr(), b[q].ptr(), size_t(a[q].numel()) * 4)) << q;
  }
}

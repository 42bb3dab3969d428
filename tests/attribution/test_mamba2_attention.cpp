// Mamba-2 implicit attention: the matrices reproduce each layer's SSM output (y − D·x) per head and channel, the row
// and reduced modes equal the full matrices, and any thread count gives bitwise identical results.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../test_util.h"
#include "attribution/mamba2_attention.h"
#include "core/error.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "models/mamba2.h"

using namespace ssmx;

namespace {

struct ModelRun {
  std::unique_ptr<Mamba2Model> model;
  ForwardResult out;
};

ModelRun run(const std::string& name, int T = 13) {
  Checkpoint ck = open_checkpoint(test::data_dir() + "/models/" + name);
  ModelRun r;
  r.model = Mamba2Model::load(ck);
  std::vector<int32_t> ids;
  for (int i = 0; i < T; ++i) ids.push_back((i * 53 + 7) % 509);
  ForwardOptions opt;
  opt.keep_activations = true;
  r.out = r.model->forward(ids, opt);
  return r;
}

class Mamba2Attention : public ::testing::TestWithParam<const char*> {};

}  // namespace

TEST_P(Mamba2Attention, ReconstructsTheSsmOutputOfEveryLayer) {
  ModelRun r = run(GetParam(), 29);
  const Mamba2Config& c = r.model->config();
  const int64_t H = c.n_heads, P = c.head_dim, Di = c.d_inner;
  std::vector<int64_t> heads;
  for (int64_t h = 0; h < H; ++h) heads.push_back(h);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    SCOPED_TRACE(l);
    Mamba2AttnInputs in = mamba2_attention_inputs(*r.model, l, r.out.acts);
    const int64_t T = in.T;
    std::vector<float> al(size_t(H * T * T));
    mamba2_attention_full(al.data(), in, heads);
    const std::string p = "layers." + std::to_string(l) + ".";
    const Tensor& x = r.out.acts.at(p + "x");
    const Tensor& y = r.out.acts.at(p + "y");
    const Tensor& ssm = r.out.acts.at(p + "ssm");
    // y − D·x, from the engine's own y and the stored D.
    std::vector<float> want(size_t(T * Di));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < Di; ++k)
        want[size_t(t * Di + k)] = y.ptr()[t * Di + k] - r.model->layer(l).D.p[k / P] * x.ptr()[t * Di + k];
    std::vector<double> rec(size_t(T * Di), 0.0);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) {
          const double a = al[size_t((h * T + i) * T + j)];
          if (j > i) {
            ASSERT_EQ(a, 0.0);
            continue;
          }
          for (int64_t q = 0; q < P; ++q) rec[size_t(i * Di + h * P + q)] += a * x.ptr()[j * Di + h * P + q];
        }
    EXPECT_LE(test::parity_error(want, rec), 2e-5);
    EXPECT_LE(test::parity_error(std::vector<float>(ssm.ptr(), ssm.ptr() + T * Di), rec), 2e-5);
    double mx = 0;
    for (double v : rec) mx = std::max(mx, std::abs(v));
    EXPECT_GT(mx, 0.1);  // the SSM path is not negligible in these fixtures
  }
}

TEST_P(Mamba2Attention, RowAndReductionsEqualTheFullMatrices) {
  ModelRun r = run(GetParam(), 21);
  const Mamba2Config& c = r.model->config();
  const int64_t H = c.n_heads;
  Mamba2AttnInputs in = mamba2_attention_inputs(*r.model, c.n_layer - 1, r.out.acts);
  const int64_t T = in.T;
  std::vector<int64_t> heads;
  for (int64_t h = 0; h < H; ++h) heads.push_back(h);
  std::vector<float> full(size_t(H * T * T));
  mamba2_attention_full(full.data(), in, heads);
  for (int64_t i : {int64_t(0), int64_t(7), T - 1}) {
    std::vector<float> row(size_t(H * T));
    mamba2_attention_row(row.data(), in, i);
    for (int64_t h = 0; h < H; ++h)
      EXPECT_EQ(0, std::memcmp(row.data() + h * T, full.data() + (h * T + i) * T, size_t(T) * 4)) << "head " << h << " row " << i;
  }
  // Subset of heads in any order: the same matrices.
  std::vector<float> sub(size_t(2 * T * T));
  mamba2_attention_full(sub.data(), in, {H - 1, 0});
  EXPECT_EQ(0, std::memcmp(sub.data(), full.data() + (H - 1) * T * T, size_t(T * T) * 4));
  EXPECT_EQ(0, std::memcmp(sub.data() + T * T, full.data(), size_t(T * T) * 4));
  for (HeadReduce how : {HeadReduce::Mean, HeadReduce::AbsMean, HeadReduce::Max}) {
    std::vector<float> red(size_t(T * T));
    mamba2_attention_reduce(red.data(), in, how);
    double err = 0;
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j) {
        double want = how == HeadReduce::Max ? -1e300 : 0.0;
        for (int64_t h = 0; h < H; ++h) {
          const double v = full[size_t((h * T + i) * T + j)];
          if (how == HeadReduce::Mean) want += v / double(H);
          else if (how == HeadReduce::AbsMean) want += std::abs(v) / double(H);
          else want = std::max(want, v);
        }
        if (j > i) want = 0;
        err = std::max(err, std::abs(want - red[size_t(i * T + j)]));
      }
    EXPECT_LE(err, 1e-6) << int(how);
    std::vector<float> rr(static_cast<size_t>(T));
    mamba2_attention_reduce_row(rr.data(), in, T - 2, how);
    EXPECT_EQ(0, std::memcmp(rr.data(), red.data() + (T - 2) * T, size_t(T) * 4));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Mamba2Attention,
                         ::testing::Values("mamba2-f32-safetensors", "mamba2-bf16-bias-clamp", "mamba2-f16-mamba-ssm"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(Mamba2AttentionThreads, OneAndTwoThreadsBitwiseIdentical) {
  ModelRun r = run("mamba2-bf16-bias-clamp", 150);
  Mamba2AttnInputs in = mamba2_attention_inputs(*r.model, 1, r.out.acts);
  const int64_t T = in.T, H = in.H;
  std::vector<int64_t> heads;
  for (int64_t h = 0; h < H; ++h) heads.push_back(h);
  std::vector<float> f1(size_t(H * T * T)), f2(f1.size()), r1(size_t(T * T)), r2(r1.size()), w1(size_t(H * T)), w2(w1.size());
  set_num_threads(1);
  mamba2_attention_full(f1.data(), in, heads);
  mamba2_attention_reduce(r1.data(), in, HeadReduce::AbsMean);
  mamba2_attention_row(w1.data(), in, T - 1);
  set_num_threads(2);
  mamba2_attention_full(f2.data(), in, heads);
  mamba2_attention_reduce(r2.data(), in, HeadReduce::AbsMean);
  mamba2_attention_row(w2.data(), in, T - 1);
  set_num_threads(0);
  EXPECT_EQ(0, std::memcmp(f1.data(), f2.data(), f1.size() * 4));
  EXPECT_EQ(0, std::memcmp(r1.data(), r2.data(), r1.size() * 4));
  EXPECT_EQ(0, std::memcmp(w1.data(), w2.data(), w1.size() * 4));
}

TEST(Mamba2AttentionErrors, OutOfRange) {
  ModelRun r = run("mamba2-f32-safetensors");
  EXPECT_THROW(mamba2_attention_inputs(*r.model, 5, r.out.acts), Error);
  Mamba2AttnInputs in = mamba2_attention_inputs(*r.model, 0, r.out.acts);
  std::vector<float> buf(size_t(in.H * in.T * in.T));
  EXPECT_THROW(mamba2_attention_row(buf.data(), in, in.T), Error);
  EXPECT_THROW(mamba2_attention_full(buf.data(), in, {in.H}), Error);
}

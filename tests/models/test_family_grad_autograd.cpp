// The Mamba-2, RWKV-4 and RecurrentGemma gradient engines against PyTorch autograd in float64 through the reference
// forwards (tests/data/grad/<model>.safetensors, written by scripts/make_family_grad_fixtures.py): ∂f/∂embeds and f
// for f = head[target] · norm_f[position], at the last position and at T-4 (later tokens get zero gradient).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>

#include "../test_util.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/griffin.h"
#include "models/griffin_grad.h"
#include "models/mamba2.h"
#include "models/mamba2_grad.h"
#include "models/rwkv.h"
#include "models/rwkv_grad.h"

using namespace ssmx;

namespace {

struct Engines {
  std::function<GradResult(const GradRequest&)> f32;
  std::function<GradResultT<double>(const GradRequest&)> f64;
};

double rel_err(const std::vector<double>& got, const std::vector<double>& want) {
  double mx = 0, err = 0;
  for (double v : want) mx = std::max(mx, std::fabs(v));
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::fabs(got[i] - want[i]));
  return err / std::max(mx, 1e-300);
}

// tol64: the double engine's tolerance. It reads the model's float32 parameters; where the model precomputes a
// parameter function in float32 at load (RecurrentGemma's -8·softplus(Λ) and 1 + w of its norms, RWKV's decay, the
// norms' eps), the double engine uses those float32 values, so it differs from the all-double reference by their
// rounding: measured 1e-9–3e-9 (Mamba-2), 3e-8–4e-8 (RWKV), 4e-8–6e-8 (RecurrentGemma); f32 engines 2e-7–7e-7.
void check_against_autograd(const std::string& model, const Engines& e, double tol64) {
  const std::string path = test::data_dir() + "/grad/" + model + ".safetensors";
  ASSERT_TRUE(std::filesystem::exists(path)) << path;
  std::vector<int32_t> ids;
  std::map<std::string, int64_t> positions;
  for (const auto& [n, t] : read_safetensors(path).tensors) {
    if (n == "input_ids")
      for (float v : to_f32(t)) ids.push_back(int32_t(v));
    if (n.size() > 9 && n.substr(n.size() - 9) == ".position") positions[n.substr(0, n.size() - 9)] = int64_t(to_f32(t)[0]);
  }
  ASSERT_GE(ids.size(), 5u);
  const std::vector<double> seed = test::f64_tensor(path, "seed");
  for (const char* c : {"gradient", "gradient_mid"}) {
    SCOPED_TRACE(model + " " + c);
    GradRequest q;
    q.ids = ids;
    q.seed.assign(seed.begin(), seed.end());
    const std::vector<double> want = test::f64_tensor(path, std::string(c) + ".grad");
    const double f = test::f64_tensor(path, std::string(c) + ".f")[0];
    const int64_t Dm = int64_t(seed.size());
    ASSERT_TRUE(positions.count(c));
    q.position = positions[c];
    const GradResult g32 = e.f32(q);
    const GradResultT<double> g64 = e.f64(q);
    ASSERT_EQ(g64.grad.size(), want.size());
    const std::vector<double> got32(g32.grad.begin(), g32.grad.end());
    const double e64 = rel_err(g64.grad, want), e32 = rel_err(got32, want);
    EXPECT_LE(e64, tol64);
    EXPECT_LE(e32, 1e-4);
    EXPECT_NEAR(g64.f, f, tol64 * std::max(1.0, std::fabs(f)));
    EXPECT_NEAR(g32.f, f, 1e-5 * std::max(1.0, std::fabs(f)));
    for (size_t i = size_t((q.position + 1) * Dm); i < want.size(); ++i) ASSERT_EQ(want[i], 0.0);  // causal fixture
    std::printf("[autograd] %s %s: f %.6f, rel err f64 %.2e, f32 %.2e\n", model.c_str(), c, f, e64, e32);
  }
}

// Loads the fixture model and checks its f32 and double gradient engines (free functions (model, request)).
template <typename Model, typename G32, typename G64>
void check_family(const std::string& model, G32 g32, G64 g64, double tol64) {
  Checkpoint ck = open_checkpoint(test::data_dir() + "/models/" + model);
  auto m = Model::load(ck);
  check_against_autograd(model, {[&](const GradRequest& q) { return g32(*m, q); },
                                 [&](const GradRequest& q) { return g64(*m, q); }},
                         tol64);
}

}  // namespace

TEST(FamilyGradients, Mamba2MatchesPyTorchAutograd) {
  check_family<Mamba2Model>("mamba2-f32-safetensors", mamba2_gradient, mamba2_gradient_f64, 1e-8);
}

TEST(FamilyGradients, RwkvMatchesPyTorchAutograd) {
  check_family<RwkvModel>("rwkv-f32-rescale", rwkv_gradient, rwkv_gradient_f64, 1e-6);
}

// RecurrentGemma's input embeddings are embed()'s rows scaled by bf16(√Dm); the fixture's gradient is with respect
// to those. T = 11 > window 4: the banded local attention; position 7 as well. The double engine is within 6e-8 of
// the reference (float32 precomputed constants, see check_against_autograd).
TEST(FamilyGradients, GriffinMatchesPyTorchAutograd) {
  check_family<GriffinModel>("griffin-f32", griffin_gradient, griffin_gradient_f64, 1e-6);
}

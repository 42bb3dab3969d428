// Vision Mamba: the official .pth layout and safetensors load to the same model, whose logits and every named
// activation match the PyTorch reference (scripts/make_vim_fixtures.py); bad files fail with one-line errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "../test_util.h"
#include "core/error.h"
#include "core/runtime.h"
#include "io/checkpoint.h"
#include "io/pickle.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "models/mamba_grad.h"
#include "models/vim.h"

using namespace ssmx;
using namespace std::string_literals;

namespace {

const std::string kDir = test::data_dir() + "/vim";

struct Reference {
  SafetensorsFile f = read_safetensors(kDir + "/reference.safetensors");
  Tensor get(const std::string& name) const {
    for (const auto& e : f.tensors)
      if (e.first == name) return Tensor(e.second.shape, to_f32(e.second));
    ADD_FAILURE() << "no reference tensor " << name;
    return Tensor();
  }
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& e : f.tensors) n.push_back(e.first);
    return n;
  }
};

}  // namespace

TEST(Vim, MatchesTheReferenceFromPthAndSafetensors) {
  const Reference ref;
  const Tensor pixels = ref.get("pixels");
  std::vector<float> logits_pth;
  for (const char* file : {"vim-tiny-random.pth", "vim-tiny-random.safetensors"}) {
    const Checkpoint ck = open_checkpoint(kDir + "/" + file);
    EXPECT_EQ(detect_family(ck), "vim");
    EXPECT_THROW(load_causal_lm(ck), Error);
    auto m = VimModel::load(ck);
    const VimConfig& c = m->config();
    EXPECT_EQ(c.n_tokens, 17);
    EXPECT_EQ(c.cls_index, 8);
    EXPECT_EQ(c.img_h, 32);
    EXPECT_EQ(c.size, "custom");
    VimForwardOptions o;
    o.keep_activations = true;
    const VimForwardResult r = m->forward(pixels, o);
    const Tensor want = ref.get("logits");
    const double logit_err = test::parity_error(r.logits.ptr(), want.ptr(), want.numel());
    EXPECT_LT(logit_err, 1e-4) << file;
    double worst = 0.0;
    std::string worst_name;
    int compared = 0;
    for (const std::string& n : ref.names()) {
      if (n == "pixels" || n == "logits" || n.rfind("grad_", 0) == 0 || n.rfind("logit_", 0) == 0) continue;
      auto it = r.acts.find(n);
      ASSERT_NE(it, r.acts.end()) << "no activation " << n;
      const Tensor w = ref.get(n);
      ASSERT_EQ(it->second.numel(), w.numel()) << n;
      const double err = test::parity_error(it->second.ptr(), w.ptr(), w.numel());
      EXPECT_LT(err, 1e-4) << n << " from " << file;
      if (err > worst) worst = err, worst_name = n;
      ++compared;
    }
    std::printf("vim parity (%s): logits %.2e, worst of %d activations %.2e (%s)\n", file, logit_err, compared, worst,
                worst_name.c_str());
    EXPECT_GT(compared, 40);
    if (logits_pth.empty()) logits_pth = r.logits.data;
    else EXPECT_EQ(r.logits.data, logits_pth);  // both layouts hold the same f32 weights
  }
}

TEST(Vim, ThreadCountDoesNotChangeResults) {
  const Reference ref;
  const Checkpoint ck = open_checkpoint(kDir + "/vim-tiny-random.safetensors");
  auto m = VimModel::load(ck);
  const int before = num_threads();
  set_num_threads(1);
  const Tensor a = m->forward(ref.get("pixels")).logits;
  set_num_threads(2);
  const Tensor b = m->forward(ref.get("pixels")).logits;
  set_num_threads(before);
  EXPECT_EQ(a.data, b.data);
}

TEST(Vim, BadInputsGiveOneLineErrors) {
  const Reference ref;
  // A pickle naming os.system (in the 'args' entry) is refused before anything else happens.
  try {
    open_checkpoint(kDir + "/vim-evil.pth");
    FAIL() << "the evil checkpoint loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("system"), std::string::npos) << e.what();
  }
  const Checkpoint ck = open_checkpoint(kDir + "/vim-tiny-random.safetensors");
  auto m = VimModel::load(ck);
  EXPECT_THROW(m->forward(Tensor({3, 16, 16})), Error);
  EXPECT_THROW(m->forward_tokens(Tensor({5, 32})), Error);
  // A tensor of the wrong shape: rewrite the file with one transposed weight.
  test::TempDir td;
  std::vector<SafetensorsEntry> entries;
  std::vector<std::vector<float>> keep;
  for (const auto& [name, t] : ck.tensors) {
    keep.push_back(to_f32(t));
    std::vector<int64_t> shape = t.shape;
    if (name == "layers.1.mixer.x_proj_b.weight") std::swap(shape[0], shape[1]);
    entries.push_back(make_f32_entry(name, shape, keep.back().data()));
  }
  const std::string bad = td.file("bad.safetensors");
  write_safetensors(bad, entries);
  try {
    VimModel::load(open_checkpoint(bad));
    FAIL();
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("x_proj_b.weight"), std::string::npos) << w;
    EXPECT_NE(w.find("bad.safetensors"), std::string::npos) << w;
  }
  // A Mamba language model is not a Vim.
  EXPECT_FALSE(VimModel::detect(open_checkpoint(test::data_dir() + "/models/mamba-f32-safetensors")));
}

TEST(Vim, GradientMatchesAutograd) {
  // ∂ logit[3] / ∂ tokens from the gradient engine on the bidirectional stack vs PyTorch autograd (float64 reference).
  const Reference ref;
  const Checkpoint ck = open_checkpoint(kDir + "/vim-tiny-random.safetensors");
  auto m = VimModel::load(ck);
  const int64_t D = m->config().d_model;
  const Tensor tok = m->embed(ref.get("pixels"));
  GradRequest q;
  q.embeds = &tok;
  q.position = m->config().cls_index;
  q.seed.assign(m->head_w().p + 3 * D, m->head_w().p + 4 * D);
  const GradResult g = stack_gradient(grad_stack(*m), q);
  const Tensor want = ref.get("grad_tokens_class3");
  EXPECT_LT(test::parity_error(g.grad.data(), want.ptr(), want.numel()), 1e-4);
  EXPECT_NEAR(g.f + m->head_b().p[3], ref.get("logit_class3").data[0], 1e-4);
}

TEST(Vim, MirrorSymmetry) {
  // Reversing the tokens and swapping the two directions' parameters mirrors every hidden state; the middle class
  // token maps to itself, so the logits are unchanged.
  const Reference ref;
  const Checkpoint ck = open_checkpoint(kDir + "/vim-tiny-random.safetensors");
  auto m = VimModel::load(ck);
  test::TempDir td;
  std::vector<SafetensorsEntry> entries;
  std::vector<std::vector<float>> keep;
  auto swapped = [](const std::string& n) {
    static const std::pair<std::string, std::string> pairs[] = {
        {"mixer.conv1d.", "mixer.conv1d_b."}, {"mixer.x_proj.", "mixer.x_proj_b."},
        {"mixer.dt_proj.", "mixer.dt_proj_b."}, {"mixer.A_log", "mixer.A_b_log"}, {"mixer.D", "mixer.D_b"}};
    for (const auto& [a, b] : pairs) {
      if (n.size() >= b.size() && n.find(b) != std::string::npos) return std::string(n).replace(n.find(b), b.size(), a);
      if (n.find(a) != std::string::npos && (a != "mixer.D" || n.substr(n.find(a)) == a))
        return std::string(n).replace(n.find(a), a.size(), b);
    }
    return n;
  };
  for (const auto& [name, t] : ck.tensors) {
    keep.push_back(to_f32(t));
    entries.push_back(make_f32_entry(swapped(name), t.shape, keep.back().data()));
  }
  write_safetensors(td.file("swapped.safetensors"), entries);
  const Checkpoint ck2 = open_checkpoint(td.file("swapped.safetensors"));
  auto mirror = VimModel::load(ck2);
  const Tensor tok = m->embed(ref.get("pixels"));
  const int64_t T = tok.dim(0), D = tok.dim(1);
  Tensor rev({T, D});
  for (int64_t t = 0; t < T; ++t) std::copy(tok.ptr() + (T - 1 - t) * D, tok.ptr() + (T - t) * D, rev.ptr() + t * D);
  const VimForwardResult a = m->forward_tokens(tok), b = mirror->forward_tokens(rev);
  for (int64_t t = 0; t < T; ++t)
    EXPECT_LT(test::parity_error(b.final_hidden.ptr() + (T - 1 - t) * D, a.final_hidden.ptr() + t * D, D), 1e-5) << t;
  EXPECT_LT(test::parity_error(b.logits.ptr(), a.logits.ptr(), a.logits.numel()), 1e-5);
  // and the swap is not a no-op: the unreversed input gives other logits
  EXPECT_GT(test::parity_error(mirror->forward_tokens(tok).logits.ptr(), a.logits.ptr(), a.logits.numel()), 1e-4);
}

TEST(Vim, MissingTensorNamesTheTensorAndTheFile) {
  const Checkpoint ck = open_checkpoint(kDir + "/vim-tiny-random.safetensors");
  test::TempDir td;
  std::vector<SafetensorsEntry> entries;
  std::vector<std::vector<float>> keep;
  size_t dropped = 0;
  for (const auto& [name, t] : ck.tensors) {
    if (name == "layers.1.mixer.dt_proj_b.bias") {
      ++dropped;
      continue;
    }
    keep.push_back(to_f32(t));
    entries.push_back(make_f32_entry(name, t.shape, keep.back().data()));
  }
  ASSERT_EQ(dropped, 1u);
  const std::string bad = td.file("missing.safetensors");
  write_safetensors(bad, entries);
  const Checkpoint ckb = open_checkpoint(bad);
  EXPECT_TRUE(VimModel::detect(ckb));  // still looks like a Vim: the loader, not detection, must complain
  try {
    VimModel::load(ckb);
    FAIL() << "a Vim without layers.1.mixer.dt_proj_b.bias loaded";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("dt_proj_b.bias"), std::string::npos) << w;
    EXPECT_NE(w.find("missing.safetensors"), std::string::npos) << w;
  }
}

TEST(Vim, CallableInsideTheModelEntryIsRefused) {
  // {'model': os.system('ls'), 'args': argparse.Namespace(lr=0.5)} (protocol 2): the Namespace is an inert object,
  // the os.system global is refused when it is named, before anything could be called.
  const std::string evil = "\x80\x02}q\x00(X\x05\x00\x00\x00modelq\x01" "cos\nsystem\nq\x02X\x02\x00\x00\x00ls\x85R"
                           "X\x04\x00\x00\x00" "argsq\x03" "cargparse\nNamespace\nq\x04)Rq\x05}q\x06X\x02\x00\x00\x00lrG"
                           "?\xe0\x00\x00\x00\x00\x00\x00sbu."s;
  try {
    pickle::unpickle(reinterpret_cast<const uint8_t*>(evil.data()), evil.size(), "evil.pth");
    FAIL() << "os.system inside 'model' was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'os.system', which is not allowed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("evil.pth"), std::string::npos) << e.what();
  }
  // The same container with a plain tensor-free model entry and the Namespace loads: the refusal above is about
  // the callable, not the layout.
  const std::string ok = "\x80\x02}q\x00(X\x05\x00\x00\x00modelq\x01}X\x04\x00\x00\x00" "argsq\x03"
                         "cargparse\nNamespace\nq\x04)Rq\x05}q\x06X\x02\x00\x00\x00lrG"
                         "?\xe0\x00\x00\x00\x00\x00\x00sbu."s;
  const pickle::Unpickled u = pickle::unpickle(reinterpret_cast<const uint8_t*>(ok.data()), ok.size(), "ok.pth");
  ASSERT_NE(u.root, nullptr);
  ASSERT_NE(u.root->get("args"), nullptr);
  EXPECT_EQ(u.root->get("args")->qualified_name(), "argparse.Namespace");
  ASSERT_NE(u.root->get("model"), nullptr);
  EXPECT_EQ(u.root->get("model")->kind, pickle::Kind::Dict);
}

// The bundled Vision Mamba demo (models/colours-vim, scripts/make_demo_vim.py): it matches the PyTorch reference on a
// held-out image, classifies its held-out PNGs through the image loader as trained, and its MambaLRP maps point at
// the object.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "attribution/explain.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/vim.h"

using namespace ssmx;

namespace {
const std::string kDemo = std::string(SSMX_SOURCE_DIR) + "/models/colours-vim";
}

TEST(DemoVim, MatchesTheReferenceAndClassifiesTheHeldOutImages) {
  const Checkpoint ck = open_checkpoint(kDemo);
  auto m = VimModel::load(ck);
  EXPECT_EQ(m->config().n_classes, 4);
  EXPECT_EQ(m->config().grid_h, 8);
  const SafetensorsFile f = read_safetensors(test::data_dir() + "/vim/colours-reference.safetensors");
  Tensor px, logits;
  for (const auto& e : f.tensors) {
    if (e.first == "pixels") px = Tensor(e.second.shape, to_f32(e.second));
    if (e.first == "logits") logits = Tensor(e.second.shape, to_f32(e.second));
  }
  EXPECT_LT(test::parity_error(m->forward(px).logits.ptr(), logits.ptr(), logits.numel()), 1e-4);

  std::ifstream in(kDemo + "/heldout.jsonl");
  std::string line;
  int n = 0, correct = 0, pointing = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    const PreparedImage p = load_and_preprocess(kDemo + "/" + j["image"].get<std::string>(), ImageTransform::deit_eval(32));
    if (n == 0) {  // the PNG through the transform gives the fixture's pixels
      EXPECT_LT(test::parity_error(p.pixels.ptr(), px.ptr(), px.numel()), 1e-6);
    }
    const Tensor l = m->forward(p.pixels).logits;
    const int64_t pred = int64_t(std::max_element(l.data.begin(), l.data.end()) - l.data.begin());
    correct += pred == j["class"].get<int64_t>();
    if (n < 16) {  // does MambaLRP's most relevant patch overlap the object?
      ExplainOptions o;
      o.method = Method::MambaLrp;
      o.target.kind = Target::Kind::Class;
      const std::vector<float> map = patch_map(*m, explain_image(*m, p.pixels, o).relevance);
      const int64_t top = int64_t(std::max_element(map.begin(), map.end()) - map.begin());
      const Image mask = load_image_rgb(kDemo + "/" + j["mask"].get<std::string>());
      const int r0 = int(top / 8) * 4, c0 = int(top % 8) * 4;
      bool hit = false;
      for (int r = r0; r < r0 + 4; ++r)
        for (int c = c0; c < c0 + 4; ++c) hit = hit || mask.px[size_t((r * mask.w + c) * 3)] > 127;
      pointing += hit;
    }
    ++n;
  }
  EXPECT_EQ(n, 64);
  EXPECT_GE(correct, 61) << "held-out accuracy " << correct << "/64";
  EXPECT_GE(pointing, 12) << "MambaLRP's top patch on the object in " << pointing << " of 16";
}

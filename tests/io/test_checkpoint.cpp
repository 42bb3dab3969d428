// Model directories: discovery of layouts, and every bad-input case gives a one-line error naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "../test_util.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/mamba_random.h"
#include "models/model.h"

using namespace ssmx;
namespace fs = std::filesystem;

namespace {

MambaConfig small_config() {
  MambaConfig c;
  c.n_layer = 2, c.d_model = 16, c.d_inner = 32, c.d_state = 4, c.d_conv = 4, c.dt_rank = 2, c.vocab = 50;
  c.conv_bias = true;
  return c;
}

// Expects loading `dir` as a model to fail with a message that names `file` and contains `reason`.
void expect_load_error(const std::string& dir, const std::string& file, const std::string& reason) {
  try {
    Checkpoint ck = open_checkpoint(dir);
    auto m = load_causal_lm(ck);
    FAIL() << "no error; expected: " << reason;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(file), std::string::npos) << "message does not name " << file << ": " << msg;
    EXPECT_NE(msg.find(reason), std::string::npos) << "message: " << msg << "\nexpected: " << reason;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

void rewrite_without(const std::string& path, const std::string& drop, const std::vector<int64_t>* new_shape = nullptr) {
  SafetensorsFile f = read_safetensors(path);
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, t] : f.tensors) {
    if (name == drop && !new_shape) continue;
    std::vector<float> v = to_f32(t);
    std::vector<int64_t> shape = t.shape;
    if (name == drop) {
      shape = *new_shape;
      v.resize(size_t(Tensor::count(shape)), 0.5f);
    }
    entries.push_back(make_f32_entry(name, shape, v.data()));
  }
  f = SafetensorsFile{};
  write_safetensors(path, std::move(entries));
}

void edit_config(const std::string& dir, const std::string& key, const nlohmann::json& value) {
  std::ifstream in(dir + "/config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  j[key] = value;
  std::ofstream(dir + "/config.json") << j.dump(2);
}

}  // namespace

TEST(Checkpoint, RandomModelLoads) {
  test::TempDir td;
  write_random_mamba(td.path(), small_config(), 1);
  Checkpoint ck = open_checkpoint(td.path());
  EXPECT_EQ(ck.layout, "safetensors");
  auto m = load_causal_lm(ck);
  EXPECT_EQ(m->info().dim("d_inner"), 32);
  EXPECT_EQ(m->forward({1, 2, 3}, {}).logits.shape, (std::vector<int64_t>{3, 50}));
}

TEST(Checkpoint, MissingPathAndNoWeights) {
  test::TempDir td;
  expect_load_error(td.file("nope"), td.file("nope"), "no such file or directory");
  expect_load_error(td.path(), td.path(), "no weights found");
}

TEST(Checkpoint, MissingTensor) {
  test::TempDir td;
  write_random_mamba(td.path(), small_config(), 1);
  rewrite_without(td.file("model.safetensors"), "backbone.layers.1.mixer.D");
  expect_load_error(td.path(), td.file("model.safetensors"), "missing tensor 'backbone.layers.1.mixer.D'");
}

TEST(Checkpoint, TensorShapeDisagreesWithTheOthers) {
  test::TempDir td;
  write_random_mamba(td.path(), small_config(), 1);
  std::vector<int64_t> bad = {33};
  rewrite_without(td.file("model.safetensors"), "backbone.layers.0.mixer.D", &bad);
  expect_load_error(td.path(), td.file("model.safetensors"),
                    "tensor 'backbone.layers.0.mixer.D' has shape [33] but [32] is expected");
}

TEST(Checkpoint, UnknownModelType) {
  test::TempDir td;
  write_random_mamba(td.path(), small_config(), 1);
  edit_config(td.path(), "model_type", "llama");
  expect_load_error(td.path(), td.file("config.json"), "unknown model_type 'llama'");
}

TEST(Checkpoint, ConfigDisagreesWithTensorShapes) {
  test::TempDir td;
  write_random_mamba(td.path(), small_config(), 1);
  edit_config(td.path(), "hidden_size", 99);
  expect_load_error(td.path(), td.file("config.json"), "hidden_size is 99 but the embedding width gives 16");
  edit_config(td.path(), "hidden_size", 16);
  edit_config(td.path(), "use_bias", true);
  expect_load_error(td.path(), td.file("config.json"), "use_bias is true but in_proj.bias is absent");
}

TEST(Checkpoint, InvalidConfigJson) {
  test::TempDir td;
  write_random_mamba(td.path(), small_config(), 1);
  test::write_file(td.file("config.json"), "{\"model_type\": \"mamba\",, }");
  expect_load_error(td.path(), td.file("config.json"), "invalid JSON at byte");
}

TEST(Checkpoint, TruncatedWeights) {
  test::TempDir td;
  write_random_mamba(td.path(), small_config(), 1);
  std::string raw = test::read_file(td.file("model.safetensors"));
  for (size_t cut : {size_t(4), size_t(100), raw.size() / 2, raw.size() - 1}) {
    test::write_file(td.file("model.safetensors"), raw.substr(0, cut));
    try {
      Checkpoint ck = open_checkpoint(td.path());
      FAIL() << "cut at " << cut;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(td.file("model.safetensors")), std::string::npos) << e.what();
    }
  }
}

TEST(Checkpoint, ShardedIndexProblems) {
  test::TempDir td;
  write_random_mamba(td.path(), small_config(), 1);
  fs::rename(td.file("model.safetensors"), td.file("model-00001-of-00001.safetensors"));
  SafetensorsFile f = read_safetensors(td.file("model-00001-of-00001.safetensors"));
  nlohmann::json idx;
  idx["metadata"]["total_size"] = 0;
  for (const auto& [name, t] : f.tensors) idx["weight_map"][name] = "model-00001-of-00001.safetensors";
  f = SafetensorsFile{};
  idx["weight_map"]["backbone.extra.weight"] = "model-00002-of-00002.safetensors";
  test::write_file(td.file("model.safetensors.index.json"), idx.dump());
  expect_load_error(td.path(), td.file("model.safetensors.index.json"),
                    "shard 'model-00002-of-00002.safetensors' listed in weight_map does not exist");
  idx["weight_map"]["backbone.extra.weight"] = "../evil.safetensors";
  test::write_file(td.file("model.safetensors.index.json"), idx.dump());
  expect_load_error(td.path(), td.file("model.safetensors.index.json"), "invalid shard file");
  idx["weight_map"]["backbone.extra.weight"] = "model-00001-of-00001.safetensors";
  test::write_file(td.file("model.safetensors.index.json"), idx.dump());
  expect_load_error(td.path(), td.file("model.safetensors.index.json"),
                    "tensor 'backbone.extra.weight' is not in its shard");
}

TEST(Checkpoint, UntiedConfigWithoutHead) {
  test::TempDir td;
  write_random_mamba(td.path(), small_config(), 1);
  edit_config(td.path(), "tie_word_embeddings", false);
  expect_load_error(td.path(), td.file("model.safetensors"), "missing tensor 'lm_head.weight'");
}

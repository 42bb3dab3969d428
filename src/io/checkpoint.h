// ssmx/io/checkpoint.h — find and open a model's weights, whatever the layout.
//
// A model path is a directory (Hugging Face layout) or a single weights file. In a directory the first match wins:
//   1. model.safetensors
//   2. model.safetensors.index.json          (sharded safetensors; every shard in weight_map is loaded)
//   3. pytorch_model.bin
//   4. pytorch_model.bin.index.json          (sharded torch zip)
//   5. exactly one *.safetensors, *.pth, *.pt or *.bin file
// config.json and tokenizer.json are picked up when present. Every file is memory-mapped; tensors stay RawTensors
// until a model converts them.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/raw_tensor.h"

namespace ssmx {

struct Checkpoint {
  std::string path;              // what the user gave
  std::string dir;               // directory holding the files
  std::string layout;            // "safetensors", "sharded safetensors", "pytorch_model.bin", ...
  std::vector<std::string> files;
  std::string config_path;       // empty if none
  nlohmann::json config = nlohmann::json::object();
  std::string tokenizer_path;    // empty if none
  std::map<std::string, RawTensor> tensors;

  const RawTensor* find(const std::string& name) const;
  // Throws ssmx::Error(<weights file>, "missing tensor 'name'").
  const RawTensor& require(const std::string& name) const;
  // The file to blame in messages about the weights as a whole.
  std::string weights_where() const;
  // Dominant stored dtype ("F32", "BF16", ...; "mixed (...)" when several).
  std::string dtype_summary() const;
  int64_t total_bytes() const;
};

Checkpoint open_checkpoint(const std::string& path);

}  // namespace ssmx

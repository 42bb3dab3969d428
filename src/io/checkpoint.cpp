#include "io/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"

namespace fs = std::filesystem;

namespace ssmx {

namespace {

// Python's json module writes float('inf') and nan as the bare words Infinity, -Infinity and NaN (transformers'
// Mamba2Config has time_step_limit = [0.0, Infinity]). Outside strings, those words become null.
std::string nonfinite_to_null(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_str = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_str) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) out += text[++i];
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    bool replaced = false;
    for (const char* w : {"-Infinity", "Infinity", "NaN"}) {
      const size_t n = std::char_traits<char>::length(w);
      if (text.compare(i, n, w) == 0) {
        out += "null";
        i += n - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += c;
  }
  return out;
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) j = nlohmann::json::parse(nonfinite_to_null(text), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Re-parse with exceptions to get the byte position for the message.
    try {
      nlohmann::json again = nlohmann::json::parse(text);
      (void)again;
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(path, "invalid JSON at byte " + std::to_string(e.byte));
    }
    throw Error(path, "invalid JSON");
  }
  return j;
}

void add_tensors(Checkpoint& ck, std::vector<std::pair<std::string, RawTensor>> ts, const std::string& file) {
  for (auto& [name, t] : ts) {
    if (ck.tensors.count(name)) throw Error(file, "tensor '" + name + "' is also stored in another file of this checkpoint");
    ck.tensors.emplace(name, std::move(t));
  }
}

void load_file(Checkpoint& ck, const std::string& file) {
  const std::string ext = fs::path(file).extension().string();
  if (ext == ".safetensors") {
    add_tensors(ck, read_safetensors(file).tensors, file);
  } else {
    add_tensors(ck, load_torch_state_dict(file), file);
  }
  ck.files.push_back(file);
}

void load_index(Checkpoint& ck, const std::string& index_path) {
  nlohmann::json j = read_json_file(index_path);
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error(index_path, "index has no \"weight_map\" object");
  std::vector<std::string> shards;
  std::map<std::string, std::string> wanted;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) throw Error(index_path, "weight_map entry '" + it.key() + "' is not a file name");
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos || shard == "." ||
        shard == "..")
      throw Error(index_path, "weight_map names an invalid shard file '" + shard + "'");
    wanted[it.key()] = shard;
    if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
  }
  for (const auto& s : shards) {
    const std::string p = (fs::path(ck.dir) / s).string();
    if (!fs::exists(p)) throw Error(index_path, "shard '" + s + "' listed in weight_map does not exist");
    load_file(ck, p);
  }
  for (const auto& [name, shard] : wanted)
    if (!ck.tensors.count(name)) throw Error(index_path, "tensor '" + name + "' is not in its shard '" + shard + "'");
}

}  // namespace

const RawTensor* Checkpoint::find(const std::string& name) const {
  auto it = tensors.find(name);
  return it == tensors.end() ? nullptr : &it->second;
}

const RawTensor& Checkpoint::require(const std::string& name) const {
  const RawTensor* t = find(name);
  if (!t) throw Error(weights_where(), "missing tensor '" + name + "'");
  return *t;
}

std::string Checkpoint::weights_where() const {
  if (files.size() == 1) return files[0];
  if (layout.rfind("sharded", 0) == 0) {
    for (const char* idx : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
      fs::path p = fs::path(dir) / idx;
      if (fs::exists(p)) return p.string();
    }
  }
  return path;
}

std::string Checkpoint::dtype_summary() const {
  std::map<std::string, int64_t> bytes;
  for (const auto& [n, t] : tensors) bytes[dtype_name(t.dtype)] += t.numel() * int64_t(dtype_size(t.dtype));
  if (bytes.empty()) return "none";
  if (bytes.size() == 1) return bytes.begin()->first;
  std::string s = "mixed (";
  bool first = true;
  for (const auto& [k, v] : bytes) {
    s += (first ? "" : ", ") + k;
    first = false;
  }
  return s + ")";
}

int64_t Checkpoint::total_bytes() const {
  int64_t b = 0;
  for (const auto& [n, t] : tensors) b += t.numel() * int64_t(dtype_size(t.dtype));
  return b;
}

Checkpoint open_checkpoint(const std::string& path) {
  Checkpoint ck;
  ck.path = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path, "no such file or directory");
  if (fs::is_directory(path, ec)) {
    ck.dir = path;
    const fs::path d(path);
    if (fs::exists(d / "config.json")) {
      ck.config_path = (d / "config.json").string();
      ck.config = read_json_file(ck.config_path);
      if (!ck.config.is_object()) throw Error(ck.config_path, "config is not a JSON object");
    }
    if (fs::exists(d / "tokenizer.json")) ck.tokenizer_path = (d / "tokenizer.json").string();
    else if (fs::exists(d / "tokenizer.model")) ck.tokenizer_path = (d / "tokenizer.model").string();
    if (fs::exists(d / "model.safetensors")) {
      ck.layout = "safetensors";
      load_file(ck, (d / "model.safetensors").string());
    } else if (fs::exists(d / "model.safetensors.index.json")) {
      ck.layout = "sharded safetensors";
      load_index(ck, (d / "model.safetensors.index.json").string());
    } else if (fs::exists(d / "pytorch_model.bin")) {
      ck.layout = "pytorch_model.bin";
      load_file(ck, (d / "pytorch_model.bin").string());
    } else if (fs::exists(d / "pytorch_model.bin.index.json")) {
      ck.layout = "sharded pytorch_model.bin";
      load_index(ck, (d / "pytorch_model.bin.index.json").string());
    } else {
      std::vector<std::string> cands;
      for (const auto& e : fs::directory_iterator(d, ec)) {
        const std::string ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".safetensors" || ext == ".pth" || ext == ".pt" || ext == ".bin"))
          cands.push_back(e.path().string());
      }
      if (cands.empty())
        throw Error(path, "no weights found (expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or a .pth file)");
      if (cands.size() > 1) throw Error(path, "several weight files and no index; pass the file itself");
      ck.layout = fs::path(cands[0]).extension() == ".safetensors" ? "safetensors" : "torch zip";
      load_file(ck, cands[0]);
    }
  } else {
    ck.dir = fs::path(path).parent_path().string();
    if (ck.dir.empty()) ck.dir = ".";
    const fs::path d(ck.dir);
    if (fs::exists(d / "config.json")) {
      ck.config_path = (d / "config.json").string();
      ck.config = read_json_file(ck.config_path);
      if (!ck.config.is_object()) throw Error(ck.config_path, "config is not a JSON object");
    }
    if (fs::exists(d / "tokenizer.json")) ck.tokenizer_path = (d / "tokenizer.json").string();
    else if (fs::exists(d / "tokenizer.model")) ck.tokenizer_path = (d / "tokenizer.model").string();
    const std::string ext = fs::path(path).extension().string();
    if (fs::path(path).filename().string().size() > 11 && ext == ".json") {
      ck.layout = "sharded";
      load_index(ck, path);
    } else {
      ck.layout = ext == ".safetensors" ? "safetensors" : "torch zip";
      load_file(ck, path);
    }
  }
  if (ck.tensors.empty()) throw Error(ck.weights_where(), "checkpoint holds no tensors");
  return ck;
}

}  // namespace ssmx

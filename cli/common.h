// ssmx CLI — shared pieces of the subcommands: global options, model loading, input parsing, safe output.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/rgb_image.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"
#include "models/model.h"
#include "models/vim.h"

namespace ssmx::cli {

struct Globals {
  int threads = 0;
  bool verbose = false;
};

// A loaded model directory: weights, the model (a language model, or a Vision Mamba in `vim`), and the tokenizer if
// one ships with it.
struct Loaded {
  Checkpoint ck;
  std::unique_ptr<CausalLM> model;  // null for a Vision Mamba
  std::unique_ptr<VimModel> vim;    // set for a Vision Mamba
  std::optional<Tokenizer> tok;
  const ModelInfo& info() const { return vim ? vim->info() : model->info(); }
};
Loaded load_model(const std::string& path, bool need_model = true);

// Text or ids, as the user gave them.
struct InputSpec {
  std::string text;
  std::string ids;  // "1,2,3"
};
void add_input_options(CLI::App* sub, InputSpec& in);
// Token ids for the input; offsets filled when text was given.
std::vector<int32_t> resolve_input(const Loaded& m, const InputSpec& in, const std::string& model_path);

// Image input of the vision commands: a JPEG/PNG file (DeiT evaluation transform) or preprocessed pixels.
struct ImageSpec {
  std::string image;   // --image FILE
  std::string pixels;  // --pixels FILE.npy, float32 [3, H, W]
  std::string transform = "deit";  // deit (resize the shorter side to H/0.875, centre crop) or resize (to H×W, no crop)
  bool given() const { return !image.empty() || !pixels.empty(); }
};
void add_image_options(CLI::App* sub, ImageSpec& in);
// Pixels [3, H, W] for the model, and the (un-normalised) RGB crop they were made from (empty for --pixels).
struct LoadedImage {
  Tensor pixels;
  Image crop;
};
LoadedImage load_image_input(const ImageSpec& in, const VimModel& m);

// Parses "1,2,3" (spaces allowed); throws ssmx::Error on anything else.
std::vector<int32_t> parse_id_list(const std::string& s);

// Writes through a temporary file and renames, so a failure leaves no partial output.
void write_npy_atomic(const std::string& path, const float* data, const std::vector<int64_t>& shape);

// Printable form of a token (escapes control characters, shows spaces).
std::string printable_token(const std::string& s);

// Registration of subcommands (one file each).
void register_info(CLI::App& app, Globals& g);
void register_tokenize(CLI::App& app, Globals& g);
void register_predict(CLI::App& app, Globals& g);
void register_attention(CLI::App& app, Globals& g);
void register_explain(CLI::App& app, Globals& g);
void register_eval(CLI::App& app, Globals& g);
void register_eval_randomization(CLI::App& app, Globals& g);  // after register_eval
void register_eval_vision(CLI::App& app, Globals& g);         // after register_eval: perturbation, segmentation

// cmd_eval_vision.cpp: the image pointing game of `eval evidence` on a Vision Mamba, and the vision half of
// `eval merge` (returns false when the inputs hold flipping records).
void run_image_evidence(const Loaded& m, const std::string& model, const std::string& data, const std::string& methods,
                        int64_t limit, int64_t start_layer, const std::string& json, const Globals& g);
bool merge_vision(const std::vector<std::string>& inputs, const std::string& markdown, const std::string& csv,
                  const std::string& json, const std::string& plot);

}  // namespace ssmx::cli

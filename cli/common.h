// ssmx CLI — shared pieces of the subcommands: global options, model loading, input parsing, safe output.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/tokenizer.h"
#include "models/model.h"

namespace ssmx::cli {

struct Globals {
  int threads = 0;
  bool verbose = false;
};

// A loaded model directory: weights, the model, and the tokenizer if one ships with it.
struct Loaded {
  Checkpoint ck;
  std::unique_ptr<CausalLM> model;
  std::optional<Tokenizer> tok;
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

}  // namespace ssmx::cli

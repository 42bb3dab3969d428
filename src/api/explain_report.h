// ssmx/api/explain_report.h — one explanation request as a front end states it (the CLI's options, the Python
// keyword arguments), resolved and run into a Report. Both front ends call this, so they agree bit for bit.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "attribution/explain.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"
#include "models/mamba.h"
#include "render/report.h"

namespace ssmx {

struct ExplainSpec {
  std::vector<Method> methods = {Method::MambaLrp};
  std::string target;     // token id ("1234") or the text of one token (" positive"); empty: the predicted token
  std::string contrast;   // same forms; non-empty: explain logit(target) − logit(contrast)
  std::string cls;        // classification head class: index, label or "predicted"; excludes target/contrast
  int64_t position = -1;  // whose next-token logits; negative counts from the end
  ExplainOptions options; // method settings (rules, steps, baseline, ...); method and target are filled in here
  bool words = false;     // sum sub-word tokens into words in the report
  bool keep_maps = false; // keep per-layer maps for the HTML report
};

// "a,b,c" or "all" → methods; throws ssmx::Error("--method", …) on an unknown name.
std::vector<Method> parse_method_list(const std::string& s);

// "silu,ssm,gate,norm" (any subset, or "none") and "lrp0" | "epsilon" | "gamma" → rules.
LrpRules parse_lrp_rules(const std::string& rules, const std::string& linear_rule, double epsilon, double gamma);

// A token given as an id or as the text of exactly one token; `what` names the option in errors.
int32_t parse_token_arg(const Tokenizer* tok, const std::string& s, const std::string& what);

// Printable form of a token (control characters escaped).
std::string printable_token_text(const std::string& s);

// Runs every method of `spec` on `ids` (tokens of `text` when text is not empty) and returns the report. `ck` is
// read for a classification head.
Report explain_report(const CausalLM& model, const Checkpoint& ck, const Tokenizer* tok, const std::string& model_label,
                      const std::string& text, const std::vector<int32_t>& ids, const ExplainSpec& spec);

}  // namespace ssmx

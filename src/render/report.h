// ssmx/render/report.h — an explanation shown to a person: coloured terminal text, JSON, one self-contained HTML file.
//
// Colours follow the convention of Captum, LXT and the MambaLRP demo: a symmetric blue–white–red scale, red for
// relevance that speaks for the target, blue against it, each method normalised by its own max |R|.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "attribution/explain.h"

namespace ssmx {

struct ReportToken {
  int32_t id = 0;
  std::string text;           // decoded text of the token (for display)
  size_t begin = 0, end = 0;  // byte range in the input text (0, 0 when the input was ids)
};

struct Report {
  std::string model;                       // path as the user gave it
  std::string input_text;                  // empty when the input was ids
  std::vector<ReportToken> tokens;
  std::string target_label;                // "' positive' (id 40)" or "class 1 (positive)"
  std::string contrast_label;              // Contrast targets
  std::string prediction_label;            // the model's top prediction at the target position
  double prediction_prob = 0;
  double target_prob = 0;                  // probability of the target token / class
  std::vector<Explanation> explanations;   // one per method, same input and target
  bool words = false;                      // sum sub-word tokens into words
};

// The display units (tokens, or words when report.words) and their relevance for one explanation.
struct Units {
  std::vector<std::string> text;
  std::vector<std::pair<int64_t, int64_t>> token_span;  // [first, last) token of each unit
  std::vector<float> relevance;
};
Units report_units(const Report& r, const Explanation& e);

// Terminal text: with `color`, 24-bit ANSI backgrounds; without, a table of units × methods.
std::string render_terminal(const Report& r, bool color);

// JSON: model, text, tokens, ids, offsets, target, logit, prediction, and per method its relevance, settings,
// conservation numbers and timing (docs/formats.md "explain JSON").
nlohmann::json report_json(const Report& r);

// One self-contained HTML page: a token heatmap per method with hover values, the settings, the conservation
// numbers, and per-layer maps as embedded PNG images.
std::string render_html(const Report& r);

}  // namespace ssmx

// ssmx/eval/text_data.h — text classification data sets for the evaluation runner: CSV, TSV, JSONL.
//
//   CSV    RFC 4180: a header row, comma-separated, fields optionally in double quotes ("" inside a quoted field is
//          one quote; quoted fields may hold commas and newlines). A quote inside an unquoted field, an unterminated
//          quote or a row whose field count differs from the header's is an error naming the line.
//   TSV    a header row, tab-separated, no quoting (the GLUE SST-2 files: `sentence\tlabel`). A row with more fields
//          than the header (an embedded tab) or fewer is an error naming the line.
//   JSONL  one object per line; the text field (default "text") must be a string; "label" (string or number) and
//          "target" (the target token's text, e.g. " positive") are optional.
// The text column defaults to "sentence" when the header has it, else "text"; the label column to "label".
// Labels map to target tokens with a LabelMap ("0: negative,1: positive" — the text after the colon is kept as is,
// leading space included — or a JSON object file {"0": " negative", ...}); a template "review: {text} sentiment:"
// wraps each text.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ssmx {

enum class TextFormat { Csv, Tsv, Jsonl };
// "csv", "tsv" or "jsonl"; "" guesses from the file extension (.csv, .tsv, .jsonl/.json). Throws ssmx::Error.
TextFormat parse_text_format(const std::string& name, const std::string& path);

struct TextFields {
  std::string text;             // "" = "sentence" if present, else "text"
  std::string label = "label";
  std::string target = "target";  // JSONL only
};

struct TextRecord {
  int64_t line = 0;   // 1-based line where the record starts
  std::string text;
  std::string label;  // "" when absent
  std::string target; // "" when absent
};

std::vector<TextRecord> read_text_data(const std::string& path, TextFormat fmt, const TextFields& fields = {});

// Splits CSV/TSV content into rows of fields with the line each row starts on. `where` names the file in errors.
std::vector<std::pair<int64_t, std::vector<std::string>>> parse_csv(const std::string& content, const std::string& where);
std::vector<std::pair<int64_t, std::vector<std::string>>> parse_tsv(const std::string& content, const std::string& where);

// "0: negative,1: positive" or a path to a JSON object file (when the string names an existing file).
std::map<std::string, std::string> parse_label_map(const std::string& spec);

// Replaces every "{text}" in `tpl` by `text` ("" = no template). A template without {text} is an error.
std::string apply_template(const std::string& tpl, const std::string& text);

}  // namespace ssmx

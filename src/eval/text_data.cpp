#include "eval/text_data.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace ssmx {

namespace {

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  if (s.size() >= 3 && s.compare(0, 3, "\xEF\xBB\xBF") == 0) s.erase(0, 3);  // UTF-8 BOM
  return s;
}

std::string ends(const std::string& p) {
  const auto e = std::filesystem::path(p).extension().string();
  std::string l;
  for (char c : e) l += char(std::tolower(static_cast<unsigned char>(c)));
  return l;
}

}  // namespace

TextFormat parse_text_format(const std::string& name, const std::string& path) {
  std::string n = name;
  if (n.empty()) {
    const std::string e = ends(path);
    if (e == ".csv") return TextFormat::Csv;
    if (e == ".tsv") return TextFormat::Tsv;
    if (e == ".jsonl" || e == ".json") return TextFormat::Jsonl;
    throw Error(path, "cannot tell the format from the extension; give --format csv|tsv|jsonl");
  }
  if (n == "csv") return TextFormat::Csv;
  if (n == "tsv") return TextFormat::Tsv;
  if (n == "jsonl") return TextFormat::Jsonl;
  throw Error("--format", "unknown format '" + n + "' (csv, tsv or jsonl)");
}

std::vector<std::pair<int64_t, std::vector<std::string>>> parse_csv(const std::string& s, const std::string& where) {
  std::vector<std::pair<int64_t, std::vector<std::string>>> rows;
  int64_t line = 1;
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const int64_t row_line = line;
    std::vector<std::string> row;
    bool end_row = false;
    while (!end_row) {
      std::string f;
      if (i < n && s[i] == '"') {
        const int64_t qline = line;
        ++i;
        for (;;) {
          if (i >= n) throw Error(where + ":" + std::to_string(qline), "unterminated quoted field");
          if (s[i] == '"') {
            if (i + 1 < n && s[i + 1] == '"') {
              f += '"', i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (s[i] == '\n') ++line;
          f += s[i++];
        }
        if (i < n && s[i] != ',' && s[i] != '\n' && s[i] != '\r')
          throw Error(where + ":" + std::to_string(line), "text after the closing quote of a field");
      } else {
        while (i < n && s[i] != ',' && s[i] != '\n' && s[i] != '\r') {
          if (s[i] == '"') throw Error(where + ":" + std::to_string(line), "quote inside an unquoted field");
          f += s[i++];
        }
      }
      row.push_back(std::move(f));
      if (i >= n) {
        end_row = true;
      } else if (s[i] == ',') {
        ++i;
      } else {
        if (s[i] == '\r') ++i;
        if (i < n && s[i] == '\n') ++i;
        ++line;
        end_row = true;
      }
    }
    if (row.size() == 1 && row[0].empty()) continue;  // blank line
    rows.push_back({row_line, std::move(row)});
  }
  return rows;
}

std::vector<std::pair<int64_t, std::vector<std::string>>> parse_tsv(const std::string& s, const std::string& where) {
  (void)where;
  std::vector<std::pair<int64_t, std::vector<std::string>>> rows;
  std::istringstream in(s);
  std::string l;
  int64_t line = 0;
  while (std::getline(in, l)) {
    ++line;
    if (!l.empty() && l.back() == '\r') l.pop_back();
    if (l.empty()) continue;
    std::vector<std::string> row;
    size_t p = 0;
    for (;;) {
      const size_t q = l.find('\t', p);
      row.push_back(l.substr(p, q == std::string::npos ? std::string::npos : q - p));
      if (q == std::string::npos) break;
      p = q + 1;
    }
    rows.push_back({line, std::move(row)});
  }
  return rows;
}

std::vector<TextRecord> read_text_data(const std::string& path, TextFormat fmt, const TextFields& fields) {
  const std::string content = read_all(path);
  std::vector<TextRecord> out;
  if (fmt == TextFormat::Jsonl) {
    const std::string tf = fields.text.empty() ? "text" : fields.text;
    std::istringstream in(content);
    std::string l;
    int64_t line = 0;
    while (std::getline(in, l)) {
      ++line;
      if (l.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = path + ":" + std::to_string(line);
      nlohmann::json j = nlohmann::json::parse(l, nullptr, false);
      if (j.is_discarded() || !j.is_object()) throw Error(where, "not a JSON object");
      if (!j.contains(tf) || !j[tf].is_string()) throw Error(where, "missing string field '" + tf + "'");
      TextRecord r;
      r.line = line;
      r.text = j[tf].get<std::string>();
      if (j.contains(fields.label) && !j[fields.label].is_null()) {
        const auto& v = j[fields.label];
        if (v.is_string()) r.label = v.get<std::string>();
        else if (v.is_number_integer() || v.is_boolean()) r.label = v.dump();
        else throw Error(where, "field '" + fields.label + "' is neither a string nor an integer");
      }
      if (j.contains(fields.target) && !j[fields.target].is_null()) {
        if (!j[fields.target].is_string()) throw Error(where, "field '" + fields.target + "' is not a string");
        r.target = j[fields.target].get<std::string>();
      }
      out.push_back(std::move(r));
    }
  } else {
    const char* what = fmt == TextFormat::Csv ? "comma" : "tab";
    auto rows = fmt == TextFormat::Csv ? parse_csv(content, path) : parse_tsv(content, path);
    if (rows.empty()) throw Error(path, "empty file (a header row is required)");
    const auto& hdr = rows[0].second;
    auto col = [&](const std::string& name) -> int64_t {
      for (size_t i = 0; i < hdr.size(); ++i)
        if (hdr[i] == name) return int64_t(i);
      return -1;
    };
    std::string tname = fields.text;
    if (tname.empty()) tname = col("sentence") >= 0 ? "sentence" : "text";
    const int64_t tc = col(tname), lc = col(fields.label);
    if (tc < 0) throw Error(path + ":" + std::to_string(rows[0].first), "no column '" + tname + "' in the header");
    if (!fields.label.empty() && fields.label != "label" && lc < 0)
      throw Error(path + ":" + std::to_string(rows[0].first), "no column '" + fields.label + "' in the header");
    for (size_t k = 1; k < rows.size(); ++k) {
      const auto& [line, row] = rows[k];
      if (row.size() != hdr.size())
        throw Error(path + ":" + std::to_string(line),
                    std::to_string(row.size()) + " " + what + "-separated fields where the header has " +
                        std::to_string(hdr.size()) + (fmt == TextFormat::Tsv && row.size() > hdr.size()
                                                          ? " (a tab inside a field is not allowed)"
                                                          : ""));
      TextRecord r;
      r.line = line;
      r.text = row[size_t(tc)];
      if (lc >= 0) r.label = row[size_t(lc)];
      out.push_back(std::move(r));
    }
  }
  if (out.empty()) throw Error(path, "no examples");
  return out;
}

std::map<std::string, std::string> parse_label_map(const std::string& spec) {
  std::map<std::string, std::string> m;
  std::error_code ec;
  if (!spec.empty() && std::filesystem::is_regular_file(spec, ec)) {
    nlohmann::json j = nlohmann::json::parse(read_all(spec), nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error(spec, "not a JSON object mapping labels to target tokens");
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!it.value().is_string()) throw Error(spec, "the target of label '" + it.key() + "' is not a string");
      m[it.key()] = it.value().get<std::string>();
    }
  } else {
    size_t p = 0;
    while (p <= spec.size()) {
      size_t e = spec.find(',', p);
      if (e == std::string::npos) e = spec.size();
      const std::string item = spec.substr(p, e - p);
      const size_t c = item.find(':');
      if (c == std::string::npos || c == 0 || c + 1 >= item.size())
        throw Error("--labels", "'" + item + "' is not LABEL:TARGET (e.g. \"0: negative,1: positive\")");
      const std::string k = item.substr(0, c);
      if (m.count(k)) throw Error("--labels", "label '" + k + "' given twice");
      m[k] = item.substr(c + 1);
      p = e + 1;
    }
  }
  if (m.empty()) throw Error("--labels", "no labels");
  return m;
}

std::string apply_template(const std::string& tpl, const std::string& text) {
  if (tpl.empty()) return text;
  if (tpl.find("{text}") == std::string::npos) throw Error("--template", "has no {text}");
  std::string out;
  size_t p = 0;
  for (;;) {
    const size_t q = tpl.find("{text}", p);
    if (q == std::string::npos) break;
    out += tpl.substr(p, q - p);
    out += text;
    p = q + 6;
  }
  return out + tpl.substr(p);
}

}  // namespace ssmx

#include "render/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "render/image.h"

namespace ssmx {

namespace {

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

// Control characters made visible; the text stays UTF-8.
std::string visible(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c == '\n') o += "\\n";
    else if (c == '\t') o += "\\t";
    else if (c == '\r') o += "\\r";
    else if (c < 0x20 || c == 0x7f) {
      o += "\\x";
      o += "0123456789abcdef"[c >> 4];
      o += "0123456789abcdef"[c & 15];
    }
    else o += char(c);
  }
  return o;
}

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v)
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  return m;
}

// Black or white text, whichever reads better on the background.
bool dark(Rgb c) { return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b < 128; }

std::string hex(Rgb c) {
  char b[8];
  std::snprintf(b, sizeof b, "#%02x%02x%02x", c.r, c.g, c.b);
  return b;
}

std::string conservation_line(const Explanation& e) {
  if (!e.has_conservation) return "";
  const bool ig = e.method == "integrated-gradients";
  std::string s = "sum R = " + fmt("%.6g", e.relevance_sum) + (ig ? ", f(x) - f(baseline) = " : ", f = ") +
                  fmt("%.6g", e.reference_value);
  if (!ig) s += ", absorbed by biases = " + fmt("%.6g", e.bias_absorbed);
  const double gap = e.relevance_sum + (ig ? 0.0 : e.bias_absorbed) - e.reference_value;
  s += ", gap = " + fmt("%.3g", gap);
  if (ig && std::fabs(gap) > 0.05 * std::max(1.0, std::fabs(e.reference_value)))
    s += " (not converged: raise --steps, or use --baseline token:ID — see docs/methods.md)";
  return s;
}

}  // namespace

Units report_units(const Report& r, const Explanation& e) {
  Units u;
  const int64_t T = int64_t(r.tokens.size());
  std::vector<std::pair<int64_t, int64_t>> spans;
  if (r.words) {
    std::vector<std::string> texts;
    for (const auto& t : r.tokens) texts.push_back(t.text);
    spans = word_spans(texts);
  } else {
    for (int64_t t = 0; t < T; ++t) spans.push_back({t, t + 1});
  }
  for (const auto& [a, b] : spans) {
    std::string text;
    double rel = 0;
    for (int64_t t = a; t < b; ++t) {
      text += r.tokens[size_t(t)].text;
      if (t < int64_t(e.relevance.size())) rel += e.relevance[size_t(t)];
    }
    u.text.push_back(text);
    u.token_span.push_back({a, b});
    u.relevance.push_back(float(rel));
  }
  return u;
}

std::string render_terminal(const Report& r, bool color) {
  std::string o;
  o += "prediction: " + visible(r.prediction_label) + "  p=" + fmt("%.4f", r.prediction_prob) + "\n";
  o += "target:     " + visible(r.target_label);
  if (!r.contrast_label.empty()) o += " minus " + visible(r.contrast_label);
  if (!r.explanations.empty()) {
    const Explanation& e0 = r.explanations[0];
    o += " at position " + std::to_string(e0.target.position) + ", value " + fmt("%.6g", e0.target_value);
    const std::string note = e0.settings.value("target_value", std::string());
    if (r.contrast_label.empty()) o += " (" + (note.empty() ? "" : note + "; ") + "p=" + fmt("%.4f", r.target_prob) + ")";
    else if (!note.empty()) o += " (" + note + ")";
  }
  o += "\n";
  size_t name_w = 0;
  for (const auto& e : r.explanations) name_w = std::max(name_w, e.method.size());
  if (color) {
    for (const auto& e : r.explanations) {
      const Units u = report_units(r, e);
      const float m = max_abs(u.relevance);
      o += "\n" + e.method + std::string(name_w - e.method.size() + 2, ' ');
      for (size_t k = 0; k < u.text.size(); ++k) {
        const float v = m > 0 ? u.relevance[k] / m : 0.0f;
        const Rgb c = colormap_diverging(std::clamp(v, -1.0f, 1.0f));
        o += "\x1b[48;2;" + std::to_string(c.r) + ";" + std::to_string(c.g) + ";" + std::to_string(c.b) + "m" +
             (dark(c) ? "\x1b[97m" : "\x1b[30m") + visible(u.text[k]) + "\x1b[0m";
      }
      o += "\n";
      const std::string cons = conservation_line(e);
      if (!cons.empty()) o += std::string(name_w + 2, ' ') + cons + "\n";
    }
    o += "\n(red: for the target, blue: against; each method scaled by its max |R|)\n";
    return o;
  }
  // Plain table: one row per unit, one column per method.
  std::vector<Units> us;
  for (const auto& e : r.explanations) us.push_back(report_units(r, e));
  if (us.empty()) return o;
  size_t text_w = 5;
  for (const auto& t : us[0].text) text_w = std::max(text_w, visible(t).size() + 2);
  text_w = std::min<size_t>(text_w, 32);
  const size_t col_w = std::max<size_t>(name_w + 2, 12);
  o += "\n" + std::string(6, ' ') + "unit" + std::string(text_w > 4 ? text_w - 4 : 1, ' ');
  for (const auto& e : r.explanations) o += std::string(col_w - e.method.size(), ' ') + e.method;
  o += "\n";
  for (size_t k = 0; k < us[0].text.size(); ++k) {
    std::string idx = std::to_string(k);
    std::string t = "'" + visible(us[0].text[k]) + "'";
    o += std::string(5 - std::min<size_t>(5, idx.size()), ' ') + idx + " " + t +
         std::string(t.size() < text_w ? text_w - t.size() : 1, ' ');
    for (const auto& u : us) {
      std::string v = fmt("%.5g", u.relevance[k]);
      o += std::string(col_w > v.size() ? col_w - v.size() : 1, ' ') + v;
    }
    o += "\n";
  }
  for (const auto& e : r.explanations) {
    const std::string cons = conservation_line(e);
    if (!cons.empty()) o += e.method + ": " + cons + "\n";
  }
  return o;
}

nlohmann::json report_json(const Report& r) {
  using nlohmann::json;
  json j;
  j["model"] = r.model;
  if (!r.input_text.empty()) j["text"] = r.input_text;
  json toks = json::array(), ids = json::array(), offs = json::array();
  for (const auto& t : r.tokens) {
    toks.push_back(t.text);
    ids.push_back(t.id);
    offs.push_back({t.begin, t.end});
  }
  j["tokens"] = toks;
  j["ids"] = ids;
  j["offsets"] = offs;
  j["prediction"] = {{"label", r.prediction_label}, {"probability", r.prediction_prob}};
  if (!r.explanations.empty()) {
    const Explanation& e0 = r.explanations[0];
    json t;
    switch (e0.target.kind) {
      case Target::Kind::Token: t["kind"] = "token"; break;
      case Target::Kind::Contrast: t["kind"] = "contrast"; break;
      case Target::Kind::Class: t["kind"] = "class"; break;
    }
    t["position"] = e0.target.position;
    if (e0.target.kind == Target::Kind::Class) {
      t["class"] = e0.target.cls;
    } else {
      t["token"] = e0.target.token;
      if (e0.target.kind == Target::Kind::Contrast) t["contrast"] = e0.target.contrast;
    }
    t["label"] = r.target_label;
    if (!r.contrast_label.empty()) t["contrast_label"] = r.contrast_label;
    t["probability"] = r.target_prob;
    j["target"] = t;
    j["logit"] = e0.target_value;
  }
  json ms = json::array();
  for (const auto& e : r.explanations) {
    json m;
    m["method"] = e.method;
    m["settings"] = e.settings;
    m["relevance"] = e.relevance;
    if (r.words) {
      const Units u = report_units(r, e);
      json w = json::array();
      for (size_t k = 0; k < u.text.size(); ++k)
        w.push_back({{"text", u.text[k]}, {"tokens", {u.token_span[k].first, u.token_span[k].second}},
                     {"relevance", u.relevance[k]}});
      m["words"] = w;
    }
    if (!e.layer_relevance.empty()) {
      m["layer_relevance"] = e.layer_relevance;
      m["layer_relevance_is"] = e.layer_relevance_what;
    }
    if (e.has_conservation) {
      m["conservation"] = {{"relevance_sum", e.relevance_sum},
                           {"target_value", e.reference_value},  // f, or f(x) − f(baseline) for integrated gradients
                           {"bias_absorbed", e.bias_absorbed},
                           {"gap", e.relevance_sum + (e.method == "integrated-gradients" ? 0.0 : e.bias_absorbed) -
                                       e.reference_value}};
    }
    m["seconds"] = e.seconds;
    ms.push_back(m);
  }
  j["explanations"] = ms;
  return j;
}

std::string render_html(const Report& r) {
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>ssmx explanation</title>\n<style>\n"
       "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;max-width:1200px;color:#222}\n"
       "h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}\n"
       ".tokens{line-height:2.2em;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:1.05em}\n"
       ".tok{padding:.15em .05em;border-radius:3px;white-space:pre;cursor:default}\n"
       ".tok:hover{outline:2px solid #333}\n"
       "table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .8em;border:1px solid #ddd;text-align:left}\n"
       ".bar{display:inline-block;width:220px;height:12px;background:linear-gradient(to right,"
    + hex(colormap_diverging(-1)) + "," + hex(colormap_diverging(0)) + "," + hex(colormap_diverging(1)) +
       ");vertical-align:middle}\n"
       ".maps img{margin:4px;border:1px solid #ccc;image-rendering:pixelated}\n"
       ".muted{color:#777;font-size:.9em}\n</style></head><body>\n";
  h += "<h1>Why did the model predict that?</h1>\n<table>\n";
  h += "<tr><th>model</th><td>" + html_escape(r.model) + "</td></tr>\n";
  if (!r.input_text.empty()) h += "<tr><th>input</th><td>" + html_escape(r.input_text) + "</td></tr>\n";
  h += "<tr><th>prediction</th><td>" + html_escape(visible(r.prediction_label)) + " (p = " +
       fmt("%.4f", r.prediction_prob) + ")</td></tr>\n";
  if (!r.explanations.empty()) {
    const Explanation& e0 = r.explanations[0];
    std::string t = html_escape(visible(r.target_label));
    if (!r.contrast_label.empty()) t += " minus " + html_escape(visible(r.contrast_label));
    h += "<tr><th>target</th><td>" + t + " at position " + std::to_string(e0.target.position) + "; value " +
         fmt("%.6g", e0.target_value) + "</td></tr>\n";
  }
  h += "<tr><th>tokens</th><td>" + std::to_string(r.tokens.size()) + (r.words ? " (shown as words)" : "") +
       "</td></tr>\n</table>\n";
  h += "<p class=\"muted\">Colour: <span class=\"bar\"></span> against the target &larr; 0 &rarr; for the target; "
       "each method is scaled by its own max |R|. Hover a token for its value.</p>\n";

  for (const auto& e : r.explanations) {
    const Units u = report_units(r, e);
    const float m = max_abs(u.relevance);
    h += "<h2>" + html_escape(e.method) + "</h2>\n<div class=\"tokens\">";
    for (size_t k = 0; k < u.text.size(); ++k) {
      const float v = m > 0 ? u.relevance[k] / m : 0.0f;
      const Rgb c = colormap_diverging(std::clamp(v, -1.0f, 1.0f));
      std::string title = "R = " + fmt("%.6g", u.relevance[k]);
      if (u.token_span[k].second - u.token_span[k].first > 1)
        title += " (tokens " + std::to_string(u.token_span[k].first) + "-" + std::to_string(u.token_span[k].second - 1) + ")";
      else
        title += " (token " + std::to_string(u.token_span[k].first) + ", id " +
                 std::to_string(r.tokens[size_t(u.token_span[k].first)].id) + ")";
      h += "<span class=\"tok\" style=\"background:" + hex(c) + ";color:" + (dark(c) ? "#fff" : "#000") +
           "\" title=\"" + html_escape(title) + "\">" + html_escape(visible(u.text[k])) + "</span>";
    }
    h += "</div>\n<table>\n";
    h += "<tr><th>method</th><td>" + html_escape(e.method) + "</td></tr>\n";
    for (const auto& [k, v] : e.settings.items())
      h += "<tr><th>" + html_escape(k) + "</th><td>" + html_escape(v.dump()) + "</td></tr>\n";
    if (e.has_conservation) {
      const bool ig = e.method == "integrated-gradients";
      h += "<tr><th>sum of relevance</th><td>" + fmt("%.6g", e.relevance_sum) + "</td></tr>\n";
      h += std::string("<tr><th>") + (ig ? "f(x) &minus; f(baseline)" : "target value f") + "</th><td>" +
           fmt("%.6g", e.reference_value) + "</td></tr>\n";
      if (!ig) h += "<tr><th>absorbed by biases</th><td>" + fmt("%.6g", e.bias_absorbed) + "</td></tr>\n";
      h += "<tr><th>gap</th><td>" +
           fmt("%.3g", e.relevance_sum + (ig ? 0.0 : e.bias_absorbed) - e.reference_value) + "</td></tr>\n";
    }
    h += "<tr><th>time</th><td>" + fmt("%.3f s", e.seconds) + "</td></tr>\n</table>\n";

    // Per-layer pictures.
    const int64_t T = int64_t(r.tokens.size());
    std::vector<std::string> labels;
    if (T <= 48)
      for (const auto& t : r.tokens) labels.push_back(visible(t.text));
    if (!e.layer_relevance.empty() && T > 0) {
      const int64_t rows = int64_t(e.layer_relevance.size());
      std::vector<float> mtx(size_t(rows * T), 0.0f);
      for (int64_t l = 0; l < rows; ++l)
        for (int64_t t = 0; t < T && t < int64_t(e.layer_relevance[size_t(l)].size()); ++t)
          mtx[size_t(l * T + t)] = e.layer_relevance[size_t(l)][size_t(t)];
      HeatmapStyle st;
      st.absolute = false;
      st.title = "per layer (rows) x token (columns)";
      st.col_labels = labels;
      for (int64_t l = 0; l < rows; ++l) st.row_labels.push_back(std::to_string(l));
      h += "<p class=\"muted\">Per layer: " + html_escape(e.layer_relevance_what) +
           " (min-max normalised).</p>\n<div class=\"maps\"><img alt=\"per-layer relevance\" src=\"" +
           png_data_uri(render_heatmap(mtx.data(), rows, T, st)) + "\"></div>\n";
    }
    if (!e.maps.empty() && T <= 256) {
      h += "<p class=\"muted\">Channel-mean attention maps |mean_e &alpha;| used by the method, per layer from the "
           "start layer (each min-max normalised).</p>\n<div class=\"maps\">";
      const int64_t start = e.settings.value("start_layer", int64_t(0));
      for (size_t k = 0; k < e.maps.size() && k < 64; ++k) {
        HeatmapStyle st;
        st.title = "layer " + std::to_string(start + int64_t(k));
        st.row_labels = labels;
        st.col_labels = labels;
        h += "<img alt=\"layer " + std::to_string(start + int64_t(k)) + "\" src=\"" +
             png_data_uri(render_heatmap(e.maps[k].ptr(), T, T, st)) + "\">";
      }
      h += "</div>\n";
    }
  }
  h += "<p class=\"muted\">Made by ssmx " SSMX_VERSION ". Methods: docs/methods.md.</p>\n</body></html>\n";
  return h;
}

}  // namespace ssmx

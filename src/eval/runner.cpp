#include "eval/runner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "render/image.h"

namespace ssmx {

int32_t target_token(const Tokenizer& tok, const std::string& text, const std::string& where) {
  if (auto id = tok.token_to_id(text)) return *id;
  const std::vector<int32_t> ids = tok.encode_ids(text);
  if (ids.size() != 1) throw Error(where, "target '" + text + "' is not a single token");
  return ids[0];
}

std::vector<FlipExample> prepare_examples(const Tokenizer& tok, const std::vector<TextRecord>& recs,
                                          const std::string& path, const std::string& tpl,
                                          const std::map<std::string, std::string>& labels,
                                          std::vector<int32_t>& classes) {
  auto add_class = [&](int32_t id) {
    if (std::find(classes.begin(), classes.end(), id) == classes.end()) classes.push_back(id);
  };
  for (const auto& [k, v] : labels) add_class(target_token(tok, v, "--labels"));
  std::vector<FlipExample> out;
  for (size_t i = 0; i < recs.size(); ++i) {
    const TextRecord& r = recs[i];
    const std::string where = path + ":" + std::to_string(r.line);
    FlipExample ex;
    ex.index = int64_t(i);
    ex.line = r.line;
    ex.text = apply_template(tpl, r.text);
    ex.ids = tok.encode_ids(ex.text);
    if (ex.ids.empty()) throw Error(where, "the text encodes to no tokens");
    if (!r.target.empty()) {
      ex.target = target_token(tok, r.target, where);
      add_class(ex.target);
    } else if (!r.label.empty() && !labels.empty()) {
      auto it = labels.find(r.label);
      if (it == labels.end()) throw Error(where, "label '" + r.label + "' is not in the label map");
      ex.target = target_token(tok, it->second, where);
    }
    out.push_back(std::move(ex));
  }
  return out;
}

nlohmann::json flip_record(const CausalLM& m, const FlipExample& ex, Method method, const ExplainOptions& base,
                           const FlipOptions& fo) {
  int32_t target = ex.target;
  if (target < 0) {  // the prediction, among the class tokens when known
    const std::vector<float> lg = masked_logits(m, ex.ids, std::vector<bool>(ex.ids.size(), false), fo);
    if (fo.classes.empty()) {
      target = int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
    } else {
      target = fo.classes[0];
      for (int32_t c : fo.classes)
        if (lg[size_t(c)] > lg[size_t(target)]) target = c;
    }
  }
  ExplainOptions o = base;
  o.method = method;
  o.target = Target{};
  o.target.token = target;
  o.seed = base.seed + uint64_t(ex.index);
  const Explanation e = explain(m, nullptr, ex.ids, o);
  const FlipCurves c = flip_curves(m, ex.ids, target, e.relevance, fo);
  nlohmann::json j;
  j["index"] = ex.index;
  j["line"] = ex.line;
  j["method"] = method_name(method);
  j["target"] = target;
  j["tokens"] = ex.ids.size();
  j["mask"] = mask_name(fo);
  j["full"] = c.full;
  j["a_morf"] = c.a_morf;
  j["a_lerf"] = c.a_lerf;
  j["delta_af"] = c.delta_af;
  j["auac"] = c.auac;
  j["a_ins_lerf"] = c.a_ins_lerf;
  j["delta_ai"] = c.delta_ai;
  j["au_mse"] = c.au_mse;
  j["x"] = c.x;
  j["morf"] = c.morf;
  j["lerf"] = c.lerf;
  j["act"] = c.act;
  j["act_lerf"] = c.act_lerf;
  j["prune_mse"] = c.prune_mse;
  j["order"] = c.morf_order;
  j["relevance"] = e.relevance;
  return j;
}

namespace {

std::string key_of(const nlohmann::json& j) {
  return std::to_string(j.at("index").get<int64_t>()) + "/" + j.at("method").get<std::string>();
}

bool complete_record(const nlohmann::json& j) {
  return j.is_object() && j.contains("index") && j["index"].is_number_integer() && j.contains("method") &&
         j["method"].is_string() && j.contains("delta_af");
}

// A record that resume may count as done: a flipping record, or a vision record (eval/vision_runner.h).
bool resumable_record(const nlohmann::json& j) {
  if (complete_record(j)) return true;
  return j.is_object() && j.contains("index") && j["index"].is_number_integer() && j.contains("method") &&
         j["method"].is_string() && j.contains("kind") &&
         (j["kind"] == "perturbation" || j["kind"] == "segmentation");
}

}  // namespace

std::set<std::string> completed_records(const std::string& path) {
  std::set<std::string> done;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return done;
  std::string content;
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(path, "cannot open");
    std::stringstream ss;
    ss << f.rdbuf();
    content = ss.str();
  }
  size_t p = 0, good_end = 0;
  int64_t line = 0;
  while (p < content.size()) {
    const size_t nl = content.find('\n', p);
    ++line;
    const bool last = nl == std::string::npos;
    const std::string l = content.substr(p, last ? std::string::npos : nl - p);
    nlohmann::json j = nlohmann::json::parse(l, nullptr, false);
    if (last || j.is_discarded() || !resumable_record(j)) {
      if (!last && content.find('\n', nl + 1) != std::string::npos)
        throw Error(path + ":" + std::to_string(line), "not a complete result record (only the last line may be cut off)");
      if (last && !j.is_discarded() && resumable_record(j)) {  // complete but without its newline
        done.insert(key_of(j));
        good_end = content.size();
        std::ofstream f(path, std::ios::app);
        f << "\n";
      }
      break;
    }
    done.insert(key_of(j));
    good_end = nl + 1;
    p = nl + 1;
  }
  if (good_end < content.size()) std::filesystem::resize_file(path, good_end);
  return done;
}

std::vector<nlohmann::json> run_flipping(const CausalLM& m, const std::vector<FlipExample>& data, const RunSpec& spec,
                                         const std::function<void()>& on_example) {
  if (spec.shards < 1 || spec.shard < 0 || spec.shard >= spec.shards)
    throw Error("--shard", "needs I/N with 0 <= I < N");
  std::set<std::string> done;
  std::ofstream out;
  if (!spec.out.empty()) {
    if (spec.resume) done = completed_records(spec.out);
    out.open(spec.out, spec.resume ? std::ios::app : std::ios::trunc);
    if (!out) throw Error(spec.out, "cannot write");
  }
  std::vector<nlohmann::json> recs;
  for (const FlipExample& ex : data) {
    if (ex.index % spec.shards != spec.shard) continue;
    for (Method meth : spec.methods) {
      if (done.count(std::to_string(ex.index) + "/" + method_name(meth))) continue;
      nlohmann::json j = flip_record(m, ex, meth, spec.base, spec.flip);
      if (out.is_open()) {
        out << j.dump() << "\n";
        out.flush();
        if (!out) throw Error(spec.out, "cannot write");
      }
      recs.push_back(std::move(j));
    }
    if (on_example) on_example();
  }
  return recs;
}

std::vector<nlohmann::json> read_records(const std::vector<std::string>& paths) {
  std::map<std::pair<int64_t, std::string>, nlohmann::json> by_key;
  for (const auto& path : paths) {
    std::ifstream f(path);
    if (!f) throw Error(path, "cannot open");
    std::string l;
    int64_t line = 0;
    while (std::getline(f, l)) {
      ++line;
      if (l.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j = nlohmann::json::parse(l, nullptr, false);
      if (j.is_discarded() || !complete_record(j))
        throw Error(path + ":" + std::to_string(line), "not a flipping result record");
      const auto k = std::make_pair(j["index"].get<int64_t>(), j["method"].get<std::string>());
      auto it = by_key.find(k);
      if (it != by_key.end()) {
        if (it->second["delta_af"] != j["delta_af"] || it->second["au_mse"] != j["au_mse"])
          throw Error(path + ":" + std::to_string(line), "example " + std::to_string(k.first) + " / " + k.second +
                                                             " differs from an earlier record of it");
        continue;
      }
      by_key.emplace(k, std::move(j));
    }
  }
  std::vector<nlohmann::json> out;
  for (auto& [k, j] : by_key) out.push_back(std::move(j));  // ordered by example index, then method
  return out;
}

namespace {

std::vector<double> resample(const std::vector<double>& x, const std::vector<double>& y, const std::vector<double>& g) {
  std::vector<double> out;
  for (double v : g) {
    size_t i = 1;
    while (i + 1 < x.size() && x[i] < v) ++i;
    if (x.size() < 2) {
      out.push_back(y.empty() ? 0 : y[0]);
      continue;
    }
    const double t = x[i] == x[i - 1] ? 0 : (v - x[i - 1]) / (x[i] - x[i - 1]);
    out.push_back(y[i - 1] + std::clamp(t, 0.0, 1.0) * (y[i] - y[i - 1]));
  }
  return out;
}

}  // namespace

std::vector<FlipSummary> summarize(const std::vector<nlohmann::json>& records) {
  std::vector<FlipSummary> out;
  std::vector<double> grid;
  for (int i = 0; i <= 20; ++i) grid.push_back(i / 20.0);
  auto find = [&](const std::string& m) -> FlipSummary& {
    for (auto& s : out)
      if (s.method == m) return s;
    FlipSummary s;
    s.method = m;
    s.grid = grid;
    s.morf = s.lerf = s.act = s.prune = std::vector<double>(grid.size(), 0.0);
    out.push_back(s);
    return out.back();
  };
  for (const auto& j : records) {
    FlipSummary& s = find(j["method"].get<std::string>());
    s.examples++;
    s.a_morf += j["a_morf"].get<double>();
    s.a_lerf += j["a_lerf"].get<double>();
    s.delta_af += j["delta_af"].get<double>();
    s.auac += j["auac"].get<double>();
    s.a_ins_lerf += j["a_ins_lerf"].get<double>();
    s.delta_ai += j["delta_ai"].get<double>();
    s.au_mse += j["au_mse"].get<double>();
    const auto x = j["x"].get<std::vector<double>>();
    auto add = [&](std::vector<double>& acc, const char* name) {
      const auto r = resample(x, j[name].get<std::vector<double>>(), grid);
      for (size_t i = 0; i < acc.size(); ++i) acc[i] += r[i];
    };
    add(s.morf, "morf");
    add(s.lerf, "lerf");
    add(s.act, "act");
    add(s.prune, "prune_mse");
  }
  for (auto& s : out) {
    const double n = double(std::max<int64_t>(s.examples, 1));
    for (double* v : {&s.a_morf, &s.a_lerf, &s.delta_af, &s.auac, &s.a_ins_lerf, &s.delta_ai, &s.au_mse}) *v /= n;
    for (auto* c : {&s.morf, &s.lerf, &s.act, &s.prune})
      for (double& v : *c) v /= n;
  }
  return out;
}

std::string summary_markdown(const std::vector<FlipSummary>& s) {
  std::string o = "| method | A_MoRF | A_LeRF | ΔA_F ↑ | AUAC ↑ | ΔA_I ↑ | AU-MSE ↓ | examples |\n|---|---|---|---|---|---|---|---|\n";
  char buf[512];
  for (const auto& r : s) {
    std::snprintf(buf, sizeof buf, "| %s | %.4f | %.4f | %.4f | %.4f | %.4f | %.6f | %lld |\n", r.method.c_str(),
                  r.a_morf, r.a_lerf, r.delta_af, r.auac, r.delta_ai, r.au_mse, (long long)r.examples);
    o += buf;
  }
  return o;
}

std::string summary_csv(const std::vector<FlipSummary>& s) {
  std::string o = "method,a_morf,a_lerf,delta_af,auac,a_ins_lerf,delta_ai,au_mse,examples\n";
  char buf[512];
  for (const auto& r : s) {
    std::snprintf(buf, sizeof buf, "%s,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%lld\n", r.method.c_str(), r.a_morf,
                  r.a_lerf, r.delta_af, r.auac, r.a_ins_lerf, r.delta_ai, r.au_mse, (long long)r.examples);
    o += buf;
  }
  return o;
}

nlohmann::json summary_json(const std::vector<FlipSummary>& s) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : s)
    j.push_back({{"method", r.method}, {"a_morf", r.a_morf}, {"a_lerf", r.a_lerf}, {"delta_af", r.delta_af},
                 {"auac", r.auac}, {"a_ins_lerf", r.a_ins_lerf}, {"delta_ai", r.delta_ai}, {"au_mse", r.au_mse},
                 {"examples", r.examples}, {"curve_x", r.grid}, {"curve_morf", r.morf}, {"curve_lerf", r.lerf},
                 {"curve_activation", r.act}, {"curve_pruning", r.prune}});
  return j;
}

namespace {

const Rgb kColors[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189}, {140, 86, 75},
                       {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}, {0, 0, 0}};

void line_px(Image& img, int x0, int y0, int x1, int y1, Rgb c) {
  const int n = std::max(std::abs(x1 - x0), std::abs(y1 - y0)) + 1;
  for (int i = 0; i <= n; ++i) {
    const int x = x0 + (x1 - x0) * i / n, y = y0 + (y1 - y0) * i / n;
    img.set(x, y, c), img.set(x, y + 1, c);
  }
}

}  // namespace

void plot_series(const std::vector<PlotSeries>& s, const std::string& title, const std::string& xlabel,
                 const std::string& ylabel, const std::string& base) {
  double lo = 1e300, hi = -1e300;
  for (const auto& r : s)
    for (double v : r.y) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!(hi > lo)) hi = lo + 1;
  const int W = 560, H = 360, L = 60, R = 150, Tp = 30, B = 40, pw = W - L - R, ph = H - Tp - B;
  auto px = [&](double x) { return L + int(std::lround(x * pw)); };
  auto py = [&](double y) { return Tp + int(std::lround((hi - y) / (hi - lo) * ph)); };
  Image img(W, H);
  line_px(img, L, Tp + ph, L + pw, Tp + ph, {0, 0, 0});
  line_px(img, L, Tp, L, Tp + ph, {0, 0, 0});
  draw_text(img, L, 8, title, {0, 0, 0}, 2);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", hi);
  draw_text(img, 4, Tp, buf, {0, 0, 0});
  std::snprintf(buf, sizeof buf, "%.3g", lo);
  draw_text(img, 4, Tp + ph - 6, buf, {0, 0, 0});
  draw_text(img, L, Tp + ph + 8, "0", {0, 0, 0});
  draw_text(img, L + pw - 6, Tp + ph + 8, "1", {0, 0, 0});
  draw_text(img, L + pw / 2 - 40, Tp + ph + 20, xlabel, {0, 0, 0});
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << L << "\" y=\"20\" font-size=\"15\">" << title << "</text>\n"
      << "<line x1=\"" << L << "\" y1=\"" << Tp + ph << "\" x2=\"" << L + pw << "\" y2=\"" << Tp + ph << "\" stroke=\"black\"/>\n"
      << "<line x1=\"" << L << "\" y1=\"" << Tp << "\" x2=\"" << L << "\" y2=\"" << Tp + ph << "\" stroke=\"black\"/>\n"
      ;
  std::snprintf(buf, sizeof buf, "%.3g", hi);
  svg << "<text x=\"4\" y=\"" << Tp + 10 << "\">" << buf << "</text>\n";
  std::snprintf(buf, sizeof buf, "%.3g", lo);
  svg << "<text x=\"4\" y=\"" << Tp + ph << "\">" << buf << "</text>\n"
      << "<text x=\"" << L + pw / 2 - 50 << "\" y=\"" << H - 6 << "\">" << xlabel << "</text>\n"
      << "<text x=\"12\" y=\"" << Tp + ph / 2 << "\" transform=\"rotate(-90 12 " << Tp + ph / 2 << ")\">" << ylabel << "</text>\n";
  for (size_t k = 0; k < s.size(); ++k) {
    const Rgb c = kColors[k % (sizeof kColors / sizeof kColors[0])];
    const auto& y = s[k].y;
    const auto& x = s[k].x;
    if (x.size() != y.size()) throw Error(base, "plot series " + s[k].name + " has unequal x and y");
    for (size_t i = 1; i < y.size(); ++i)
      line_px(img, px(x[i - 1]), py(y[i - 1]), px(x[i]), py(y[i]), c);
    img.fill_rect(L + pw + 10, Tp + 14 * int(k), 10, 8, c);
    draw_text(img, L + pw + 24, Tp + 14 * int(k), s[k].name, {0, 0, 0});
    char col[16];
    std::snprintf(col, sizeof col, "#%02x%02x%02x", c.r, c.g, c.b);
    svg << "<polyline fill=\"none\" stroke=\"" << col << "\" stroke-width=\"2\" points=\"";
    for (size_t i = 0; i < y.size(); ++i) svg << px(x[i]) << "," << py(y[i]) << (i + 1 < y.size() ? " " : "");
    svg << "\"/>\n<rect x=\"" << L + pw + 10 << "\" y=\"" << Tp + 14 * int(k) << "\" width=\"10\" height=\"8\" fill=\"" << col
        << "\"/><text x=\"" << L + pw + 24 << "\" y=\"" << Tp + 14 * int(k) + 8 << "\">" << s[k].name << "</text>\n";
  }
  svg << "</svg>\n";
  write_png(base + ".png", img);
  std::ofstream f(base + ".svg");
  f << svg.str();
  if (!f) throw Error(base + ".svg", "cannot write");
}

namespace {

void plot_one(const std::vector<FlipSummary>& s, const std::string& title, const std::string& ylabel,
              std::vector<double> FlipSummary::*curve, const std::string& base) {
  std::vector<PlotSeries> ps;
  for (const auto& r : s) ps.push_back({r.method, r.grid, r.*curve});
  plot_series(ps, title, "fraction of tokens", ylabel, base);
}

}  // namespace

void plot_curves(const std::vector<FlipSummary>& s, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(dir, "cannot create: " + ec.message());
  plot_one(s, "MoRF deletion", "target logit", &FlipSummary::morf, dir + "/flipping_morf");
  plot_one(s, "LeRF deletion", "target logit", &FlipSummary::lerf, dir + "/flipping_lerf");
  plot_one(s, "activation (insert MoRF)", "target logit", &FlipSummary::act, dir + "/flipping_activation");
  plot_one(s, "pruning (LeRF)", "MSE vs full output", &FlipSummary::prune, dir + "/flipping_pruning");
}

}  // namespace ssmx

// ssmx info | tokenize | predict
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>

#include "common.h"
#include "core/error.h"
#include "core/runtime.h"
#include "api/image_report.h"
#include "models/imagenet_classes.h"

namespace ssmx::cli {

namespace {

void apply_globals(const Globals& g) {
  set_verbose(g.verbose);
  set_num_threads(g.threads);
  log_verbose(blas_core_reason());
  log_verbose("threads: " + std::to_string(num_threads()));
}

std::string human_bytes(int64_t b) {
  char buf[32];
  if (b >= (int64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(int64_t(1) << 30));
  else if (b >= (1 << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", double(b) / double(1 << 20));
  else if (b >= (1 << 10)) std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / 1024.0);
  else std::snprintf(buf, sizeof buf, "%lld B", (long long)b);
  return buf;
}

std::string human_count(int64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", double(n) / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2fM", double(n) / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.1fK", double(n) / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", (long long)n);
  return buf;
}

// Top-k classes of a Vision Mamba (ImageNet names when the head has 1000 classes).
void predict_image(const Loaded& m, const ImageSpec& img, int top_k, const std::string& logits_out,
                   const std::string& model) {
  if (!img.given()) throw Error("predict", model + " is a Vision Mamba: give --image FILE or --pixels FILE.npy");
  const LoadedImage in = load_image_input(img, *m.vim);
  const auto t0 = std::chrono::steady_clock::now();
  const VimForwardResult r = m.vim->forward(in.pixels);
  log_verbose("forward: " + std::to_string(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count()) + " ms");
  const int64_t C = r.logits.numel();
  const float* l = r.logits.ptr();
  double mx = -INFINITY, z = 0.0;
  for (int64_t c = 0; c < C; ++c) mx = std::max(mx, double(l[c]));
  for (int64_t c = 0; c < C; ++c) z += std::exp(double(l[c]) - mx);
  std::vector<int32_t> order(static_cast<size_t>(C));
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = std::min<int64_t>(top_k, C);
  const std::vector<std::string> names = read_class_names(m.ck, C);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
  if (!logits_out.empty()) write_npy_atomic(logits_out, l, r.logits.shape);
  std::printf("input:  %s (%lldx%lld)\n", (img.image.empty() ? img.pixels : img.image).c_str(),
              (long long)m.vim->config().img_w, (long long)m.vim->config().img_h);
  std::printf("top %lld of %lld classes:\n", (long long)k, (long long)C);
  for (int64_t i = 0; i < k; ++i) {
    const int32_t c = order[size_t(i)];
    const std::string name = names[size_t(c)];
    std::printf("  %2lld. class %-5d %-28s p=%.4f  logit=%.4f\n", (long long)(i + 1), c,
                name.empty() ? "" : ("\"" + name + "\"").c_str(), std::exp(double(l[c]) - mx) / z, l[c]);
  }
  if (!logits_out.empty()) std::printf("logits [%lld] written to %s\n", (long long)C, logits_out.c_str());
}

}  // namespace

void register_info(CLI::App& app, Globals& g) {
  auto* sub = app.add_subcommand("info", "Show a model's family, sizes, dtype, parameter count, tokenizer and files");
  auto* model = new std::string;
  auto* as_json = new bool(false);
  sub->add_option("MODEL", *model, "Model directory or weights file")->required();
  sub->add_flag("--json", *as_json, "Print JSON instead of text");
  sub->callback([&g, model, as_json] {
    apply_globals(g);
    Loaded m = load_model(*model);
    const ModelInfo& info = m.info();
    nlohmann::ordered_json j;
    j["path"] = *model;
    j["family"] = info.family;
    j["architecture"] = info.architecture;
    for (const auto& [k, v] : info.dims) j["dims"][k] = v;
    j["parameters"] = info.n_params;
    j["tied_head"] = info.tied_head;
    j["dtype"] = m.ck.dtype_summary();
    j["layout"] = m.ck.layout;
    j["files"] = m.ck.files;
    j["weights_bytes"] = m.ck.total_bytes();
    j["config"] = m.ck.config_path.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(m.ck.config_path);
    j["tokenizer"] = m.tok ? nlohmann::ordered_json(m.tok->summary()) : nlohmann::ordered_json(nullptr);
    j["notes"] = info.notes;
    if (*as_json) {
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("model:        %s\n", model->c_str());
    std::printf("family:       %s (%s)\n", info.family.c_str(), info.architecture.c_str());
    std::string dims;
    for (const auto& [k, v] : info.dims) dims += (dims.empty() ? "" : ", ") + k + " " + std::to_string(v);
    std::printf("sizes:        %s\n", dims.c_str());
    std::printf("parameters:   %s (%lld)%s\n", human_count(info.n_params).c_str(), (long long)info.n_params,
                m.vim ? ", class head with bias" : info.tied_head ? ", head tied to the embedding" : ", untied head");
    std::printf("dtype:        %s (computed in float32)\n", m.ck.dtype_summary().c_str());
    std::printf("layout:       %s, %zu file%s, %s\n", m.ck.layout.c_str(), m.ck.files.size(), m.ck.files.size() == 1 ? "" : "s",
                human_bytes(m.ck.total_bytes()).c_str());
    for (const auto& f : m.ck.files) std::printf("              %s\n", f.c_str());
    std::printf("config:       %s\n", m.ck.config_path.empty() ? "(none)" : m.ck.config_path.c_str());
    std::printf("tokenizer:    %s\n", m.tok ? (m.ck.tokenizer_path + " (" + m.tok->summary() + ")").c_str() : "(none)");
    for (const auto& n : info.notes) std::printf("note:         %s\n", n.c_str());
  });
}

void register_tokenize(CLI::App& app, Globals& g) {
  auto* sub = app.add_subcommand("tokenize", "Encode text with the model's tokenizer.json and print the ids");
  auto* model = new std::string;
  auto* text = new std::string;
  auto* as_json = new bool(false);
  sub->add_option("MODEL", *model, "Model directory (or a tokenizer.json file)")->required();
  sub->add_option("--text", *text, "Text to encode")->required();
  sub->add_flag("--json", *as_json, "Print ids, tokens and byte offsets as JSON");
  sub->callback([&g, model, text, as_json] {
    apply_globals(g);
    std::optional<Tokenizer> tok;
    if (model->size() >= 5 && model->substr(model->size() - 5) == ".json") {
      tok = Tokenizer::from_file(*model);
    } else {
      Loaded m = load_model(*model, /*need_model=*/false);
      if (!m.tok) throw Error(*model, "no tokenizer.json in the model directory");
      tok = std::move(m.tok);
    }
    Encoding enc = tok->encode(*text);
    if (*as_json) {
      nlohmann::ordered_json j;
      j["ids"] = enc.ids;
      nlohmann::ordered_json toks = nlohmann::ordered_json::array(), offs = nlohmann::ordered_json::array();
      for (size_t i = 0; i < enc.ids.size(); ++i) {
        toks.push_back(tok->id_to_token(enc.ids[i]));
        offs.push_back({enc.offsets[i].first, enc.offsets[i].second});
      }
      j["tokens"] = toks;
      j["offsets"] = offs;
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      return;
    }
    std::string line;
    for (size_t i = 0; i < enc.ids.size(); ++i) line += (i ? " " : "") + std::to_string(enc.ids[i]);
    std::printf("%s\n", line.c_str());
    if (g.verbose) {
      for (size_t i = 0; i < enc.ids.size(); ++i)
        std::printf("%6zu  %8d  [%zu, %zu)  %s\n", i, enc.ids[i], enc.offsets[i].first, enc.offsets[i].second,
                    printable_token(tok->token_text(enc.ids[i])).c_str());
    }
  });
}

void register_predict(CLI::App& app, Globals& g) {
  auto* sub = app.add_subcommand("predict", "Run the model and print the most likely next tokens");
  struct Opts {
    std::string model;
    InputSpec in;
    int top_k = 5;
    std::string logits_out;
    ImageSpec img;
  };
  auto* o = new Opts;
  sub->add_option("MODEL", o->model, "Model directory or weights file")->required();
  add_input_options(sub, o->in);
  add_image_options(sub, o->img);
  sub->add_option("-k,--top-k", o->top_k, "How many next tokens to show")->check(CLI::Range(1, 1000))->capture_default_str();
  sub->add_option("--logits-out", o->logits_out, "Write float32 logits of shape [T, V] to this .npy file");
  sub->callback([&g, o] {
    apply_globals(g);
    Loaded m = load_model(o->model);
    if (m.vim) {
      predict_image(m, o->img, o->top_k, o->logits_out, o->model);
      return;
    }
    if (o->img.given()) throw Error("--image", o->model + " is a language model; give --text or --ids");
    if (o->in.text.empty() && o->in.ids.empty()) throw Error("predict", "give --text STR or --ids 1,2,3");
    std::vector<int32_t> ids = resolve_input(m, o->in, o->model);
    ForwardOptions fo;
    fo.all_logits = !o->logits_out.empty();
    const auto t0 = std::chrono::steady_clock::now();
    ForwardResult r = m.model->forward(ids, fo);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    log_verbose("forward over " + std::to_string(ids.size()) + " tokens: " + std::to_string(ms) + " ms");
    const int64_t V = r.logits.dim(1);
    const float* last = r.logits.ptr() + (r.logits.dim(0) - 1) * V;
    // Softmax in double over the last position.
    double mx = -INFINITY;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(last[v]));
    double z = 0.0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(double(last[v]) - mx);
    std::vector<int32_t> order(static_cast<size_t>(V));
    std::iota(order.begin(), order.end(), 0);
    const int64_t k = std::min<int64_t>(o->top_k, V);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) { return last[a] > last[b] || (last[a] == last[b] && a < b); });
    if (!o->logits_out.empty()) write_npy_atomic(o->logits_out, r.logits.ptr(), r.logits.shape);
    std::string shown;
    if (m.tok && ids.size() <= 64) {
      for (int32_t id : ids) shown += m.tok->token_text(id);
      std::printf("input:  \"%s\" (%zu tokens)\n", printable_token(shown).c_str(), ids.size());
    } else {
      std::printf("input:  %zu tokens\n", ids.size());
    }
    std::printf("next-token prediction (top %lld of %lld):\n", (long long)k, (long long)V);
    for (int64_t i = 0; i < k; ++i) {
      const int32_t id = order[size_t(i)];
      const double p = std::exp(double(last[id]) - mx) / z;
      std::string tok = m.tok ? "\"" + printable_token(m.tok->token_text(id)) + "\"" : "";
      std::printf("  %2lld. %-24s id %-7d p=%.4f  logit=%.4f\n", (long long)(i + 1), tok.c_str(), id, p, last[id]);
    }
    if (!o->logits_out.empty())
      std::printf("logits [%lld, %lld] written to %s\n", (long long)r.logits.dim(0), (long long)V, o->logits_out.c_str());
  });
}

}  // namespace ssmx::cli

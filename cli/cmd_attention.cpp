// ssmx attention — hidden (implicit) attention matrices of every family's layers (Mamba, Falcon-Mamba, Vision Mamba,
// Mamba-2, RWKV-4, RecurrentGemma), as .npy files, index.json and PNG heatmaps.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <cmath>
#include <set>

#include "attribution/hidden_attention.h"
#include "attribution/bidirectional.h"
#include "attribution/family_attention.h"
#include "attribution/mamba_trace.h"
#include "attribution/vim_trace.h"
#include "common.h"
#include "core/error.h"
#include "core/runtime.h"
#include "models/mamba.h"
#include "progress.h"
#include "render/image.h"

namespace fs = std::filesystem;

namespace ssmx::cli {

namespace {

struct AttnOpts {
  std::string model;
  InputSpec in;
  std::string layers, kind = "s6", channels, reduce = "none", compat = "none", out;
  ImageSpec img;
  bool class_row = false;
  int64_t row = 0;
  bool row_set = false, full = false, log_scale = false, no_png = false, terms = false;
  double max_memory_gb = 0.0;
};

std::vector<int64_t> parse_layers(const std::string& s, int64_t n_layer) {
  std::vector<int64_t> out;
  if (s.empty() || s == "all") {
    for (int64_t i = 0; i < n_layer; ++i) out.push_back(i);
    return out;
  }
  for (int32_t v : parse_id_list(s)) {
    if (v >= n_layer) throw Error("--layers", "layer " + std::to_string(v) + " does not exist (the model has " + std::to_string(n_layer) + " layers, 0.." + std::to_string(n_layer - 1) + ")");
    out.push_back(v);
  }
  std::set<int64_t> uniq(out.begin(), out.end());
  return std::vector<int64_t>(uniq.begin(), uniq.end());
}

std::pair<int64_t, int64_t> parse_channels(const std::string& s, int64_t E) {
  if (s.empty() || s == "all" || s == ":") return {0, E};
  const size_t colon = s.find(':');
  auto num = [&](const std::string& t, int64_t def) -> int64_t {
    if (t.empty()) return def;
    if (t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos)
      throw Error("--channels", "'" + s + "' is not a channel range (expected a:b, a: or a single channel)");
    return std::stoll(t);
  };
  int64_t a, b;
  if (colon == std::string::npos) {
    a = num(s, 0);
    b = a + 1;
  } else {
    a = num(s.substr(0, colon), 0);
    b = num(s.substr(colon + 1), E);
  }
  if (a >= b || b > E)
    throw Error("--channels", "range " + s + " is empty or beyond the " + std::to_string(E) + " channels of the model");
  return {a, b};
}

int64_t available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return int64_t(8) << 30;
}

std::string gib(double bytes) {
  char b[32];
  if (bytes >= double(int64_t(1) << 30)) std::snprintf(b, sizeof b, "%.2f GiB", bytes / double(int64_t(1) << 30));
  else if (bytes >= double(1 << 20)) std::snprintf(b, sizeof b, "%.1f MiB", bytes / double(1 << 20));
  else std::snprintf(b, sizeof b, "%.0f KiB", bytes / 1024.0);
  return b;
}

// The row --row asks for (negative counts from the end), or -1 for full matrices.
int64_t query_row(const AttnOpts& o, int64_t T) {
  if (!o.row_set) return -1;
  const int64_t qrow = o.row < 0 ? T + o.row : o.row;
  if (qrow < 0 || qrow >= T) throw Error("--row", "row " + std::to_string(o.row) + " is outside the " + std::to_string(T) + " tokens");
  return qrow;
}

// Bytes of one layer's output: full (channels, T, T) or (T, T) reduced; a row (channels, T) or (T).
double output_bytes(const AttnOpts& o, int64_t T, int64_t channels) {
  const bool reduce = o.reduce != "none";
  return o.row_set ? (reduce ? double(T) : double(channels) * T) * 4.0
                   : (reduce ? double(T) * T : double(channels) * T * T) * 4.0;
}

// Refuses work whose estimate `need` does not fit in --max-memory (default: the memory available now).
void check_memory(const AttnOpts& o, double need, double out_bytes) {
  const double limit = o.max_memory_gb > 0 ? o.max_memory_gb * double(int64_t(1) << 30) : double(available_memory_bytes());
  log_verbose("memory estimate: " + gib(need) + " (output " + gib(out_bytes) + " per layer), limit " + gib(limit));
  if (need > limit)
    throw Error("attention", "this request needs about " + gib(need) + " (" + gib(out_bytes) + " per layer for the output) but " +
                                 gib(limit) + " is available; ask for less: --row I, --reduce mean, fewer --channels, or fewer --layers");
}

// The options a language model of a family without Mamba's extras (class token, --terms) cannot take.
void check_language_input(const AttnOpts& o) {
  if (o.img.given()) throw Error("--image", o.model + " is a language model; give --text or --ids");
  if (o.class_row) throw Error("--class-row", o.model + " has no class token (a language model): use --row I");
  if (o.terms) throw Error("--terms", "the unified identity's extra terms are written for Mamba layers only");
  if (o.in.text.empty() && o.in.ids.empty()) throw Error("attention", "give --text STR or --ids 1,2,3");
}

std::vector<std::string> token_texts(const Loaded& m, const std::vector<int32_t>& ids) {
  std::vector<std::string> tokens;
  for (int32_t id : ids) tokens.push_back(m.tok ? m.tok->token_text(id) : std::to_string(id));
  return tokens;
}

// What every family writes: one .npy (and PNG) per layer named layerNN.KIND.{full|rowI}[.REDUCE], index.json
// describing the run and each file, and overview.png when more than one layer has a single-picture result.
class AttentionWriter {
 public:
  // ids: the input ids (empty for images); tokens: one label per position.
  AttentionWriter(const AttnOpts& o, const Loaded& m, AttnKind kind, const std::vector<int32_t>& ids,
                  std::vector<std::string> tokens, int64_t c0, int64_t c1, int64_t qrow)
      : o_(o), kind_(attn_kind_name(kind)), tokens_(std::move(tokens)), T_(int64_t(tokens_.size())), qrow_(qrow) {
    fs::create_directories(o.out);
    index_["model"] = o.model;
    index_["family"] = m.info().family;
    index_["ids"] = ids;
    index_["tokens"] = tokens_;
    index_["kind"] = kind_;
    index_["mode"] = row_mode() ? "row" : "full";
    index_["row"] = row_mode() ? nlohmann::ordered_json(qrow) : nlohmann::ordered_json(nullptr);
    index_["reduce"] = o.reduce;
    index_["channels"] = {c0, c1};
    index_["compat"] = o.compat;
    index_["files"] = nlohmann::ordered_json::array();
  }
  nlohmann::ordered_json& index() { return index_; }

  // Writes layer l's result: full (n, T, T), or (T, T) reduced; a row (n, T), or (T) reduced. `kind` names the
  // operator in the file name and entry (the run's kind unless a layer has its own, e.g. a softmax layer), channels
  // [a, b) are those of the result's leading axis and `axis` says what they are (PNG titles: "channel", "head").
  // Returns the index entry so a family can add fields.
  nlohmann::ordered_json& add(int64_t l, const Tensor& res, const std::string& kind, int64_t a, int64_t b,
                              const std::string& axis = "channel") {
    const bool reduce = o_.reduce != "none";
    char base[128];
    std::snprintf(base, sizeof base, "layer%02lld.%s.%s%s%s", (long long)l, kind.c_str(),
                  row_mode() ? ("row" + std::to_string(qrow_)).c_str() : "full", reduce ? "." : "", reduce ? o_.reduce.c_str() : "");
    const std::string npy = std::string(base) + ".npy";
    write_npy_atomic((fs::path(o_.out) / npy).string(), res.ptr(), res.shape);
    nlohmann::ordered_json entry = {{"file", npy},
                                    {"layer", l},
                                    {"kind", kind},
                                    {"channels", {a, b}},
                                    {"mode", row_mode() ? "row" : "full"},
                                    {"row", row_mode() ? nlohmann::ordered_json(qrow_) : nlohmann::ordered_json(nullptr)},
                                    {"reduce", o_.reduce},
                                    {"compat", o_.compat},
                                    {"shape", res.shape},
                                    {"dtype", "float32"}};
    if (!o_.no_png) {
      const int64_t T = T_, n = b - a;
      const bool labels = T <= 48;
      HeatmapStyle st;
      st.log_scale = o_.log_scale;
      st.absolute = true;
      Image pic;
      if (!row_mode() && !reduce) {  // a grid over (up to 16) channels, each min-max normalised
        std::vector<Image> tiles;
        for (int64_t k = 0; k < std::min<int64_t>(n, 16); ++k) {
          st.title = "layer " + std::to_string(l) + " " + axis + " " + std::to_string(a + k);
          if (labels) st.row_labels = st.col_labels = tokens_;
          st.cell = 0;
          tiles.push_back(render_heatmap(res.ptr() + k * T * T, T, T, st));
        }
        pic = image_grid(tiles, 4);
      } else {
        const int64_t rows = row_mode() ? (reduce ? 1 : n) : T;
        st.title = "layer " + std::to_string(l) + " " + kind + (reduce ? " " + o_.reduce : "");
        if (labels) {
          st.col_labels = tokens_;
          if (!row_mode()) st.row_labels = tokens_;
        }
        if (row_mode()) st.cell = std::max(2, int(480 / std::max<int64_t>(T, 1)));
        pic = render_heatmap(res.ptr(), rows, T, st);
        overview_.push_back(pic);
      }
      const std::string png = std::string(base) + ".png";
      write_png((fs::path(o_.out) / png).string(), pic);
      entry["png"] = png;
    }
    index_["files"].push_back(entry);
    return index_["files"].back();
  }

  // overview.png, index.json and the one-line summary ("wrote N layers of KIND attention (...) to OUT").
  void finish() {
    if (overview_.size() > 1) {
      write_png((fs::path(o_.out) / "overview.png").string(), image_grid(overview_, 4));
      index_["overview"] = "overview.png";
    }
    std::ofstream(fs::path(o_.out) / "index.json") << index_.dump(2) << "\n";
    const size_t n = index_["files"].size();
    std::printf("wrote %zu layer%s of %s attention (%s) to %s\n", n, n == 1 ? "" : "s", kind_.c_str(),
                row_mode() ? ("row " + std::to_string(qrow_)).c_str() : "full matrices", o_.out.c_str());
  }

 private:
  bool row_mode() const { return qrow_ >= 0; }
  const AttnOpts& o_;
  std::string kind_;
  std::vector<std::string> tokens_;
  int64_t T_, qrow_;
  nlohmann::ordered_json index_;
  std::vector<Image> overview_;
};

// Mamba-2, RWKV-4 and RecurrentGemma: attribution/family_attention.h computes each layer (per-family kinds, compat
// modes, Griffin's local attention layers as softmax weights per head); this writes the files.
void run_family_attention(const AttnOpts& o, const Globals& g, const Loaded& m, AttnKind kind) {
  check_language_input(o);
  const CausalLM& lm = *m.model;
  const std::vector<int32_t> ids = resolve_input(m, o.in, o.model);
  const FamilyAttnShape shape = family_attention_shape(lm);
  const int64_t T = int64_t(ids.size()), C = shape.channels, heads = shape.heads;
  const std::vector<int64_t> layers = parse_layers(o.layers, shape.layers);
  const auto [c0, c1] = parse_channels(o.channels, C);
  FamilyAttnRequest req;
  req.kind = kind;
  req.compat = o.compat;
  req.c0 = c0, req.c1 = c1;
  req.row = query_row(o, T);
  req.reduce = o.reduce != "none";
  if (req.reduce) req.red = parse_attn_reduce(o.reduce);
  // One layer at a time: its output, the activations the forward keeps (about 20 (T, C) buffers) and per-thread rows;
  // a local attention layer also holds its (heads, T, T) weights.
  const double out_bytes = std::max(output_bytes(o, T, c1 - c0), output_bytes(o, T, heads));
  check_memory(o, out_bytes + double(heads) * T * T * 4.0 + 20.0 * double(T) * double(C) * 4.0 +
                      2.0 * double(C) * T * 4.0 * double(num_threads()) + double(m.ck.total_bytes()),
               out_bytes);
  AttentionWriter out(o, m, kind, ids, token_texts(m, ids), c0, c1, req.row);
  Progress prog("attention", int64_t(layers.size()), g.verbose);
  family_attention(lm, ids, layers, req, [&](const FamilyAttnLayer& r) {
    nlohmann::ordered_json& entry = out.add(r.layer, r.result, r.kind, r.a, r.b, r.axis);
    entry["operator"] = r.op;
    if (m.info().family == "rwkv") out.index()["operator"] = r.op;
    prog.step();
  });
  prog.done();
  out.finish();
}

}  // namespace

void register_attention(CLI::App& app, Globals& g) {
  auto* sub = app.add_subcommand(
      "attention",
      "Hidden (implicit) attention matrices of each layer (S6 or unified; Mamba, Mamba-2, RWKV-4, RecurrentGemma, "
      "Vision Mamba), as .npy + index.json + PNG heatmaps");
  auto* o = new AttnOpts;
  sub->add_option("MODEL", o->model, "Model directory or weights file")->required();
  add_input_options(sub, o->in);
  sub->add_option("--layers", o->layers, "Layers, comma-separated (default: all)");
  sub->add_option("--kind", o->kind, "s6 | unified | unified-noconv | unified-nogate | unified-noact")->capture_default_str();
  sub->add_option("--channels", o->channels, "Channel range a:b (default: all channels)");
  auto* row = sub->add_option("--row", o->row, "Only query row I (negative counts from the end: -1 = last token)");
  auto* full = sub->add_flag("--full", o->full, "Full T×T matrices (the default when --row is not given)");
  row->excludes(full);
  sub->add_option("--reduce", o->reduce, "Reduce over channels: none | mean | absmean | max")->capture_default_str();
  sub->add_option("--compat", o->compat,
                  "Reproduce published code: none | hiddenattn-row (Ali et al.'s class-token row; needs --row); Vision "
                  "Mamba: none | stitched | hiddenattn-stitched; RecurrentGemma: none | tracing (no sqrt(1 - a^2))")
      ->capture_default_str();
  add_image_options(sub, o->img);
  sub->add_flag("--class-row", o->class_row, "Vision Mamba: the class token's row (same as --row at its index)");
  sub->add_flag("--log", o->log_scale, "Log colour scale in the PNG heatmaps");
  sub->add_flag("--no-png", o->no_png, "Write only .npy files and index.json");
  sub->add_flag("--terms", o->terms, "Also write the D-skip and conv-bias terms of the unified identity, [T, E] per layer");
  sub->add_option("--max-memory", o->max_memory_gb, "Refuse work that needs more than this many GiB (default: available memory)");
  sub->add_option("-o,--out", o->out, "Output directory")->required();
  sub->callback([&g, o, row] {
    set_verbose(g.verbose);
    set_num_threads(g.threads);
    log_verbose(blas_core_reason());
    o->row_set = row->count() > 0;
    const AttnKind kind = parse_attn_kind(o->kind);
    const bool reduce = o->reduce != "none";
    const AttnReduce red = reduce ? parse_attn_reduce(o->reduce) : AttnReduce::Mean;
    Loaded m = load_model(o->model);
    if (m.model && has_family_attention(*m.model)) return run_family_attention(*o, g, m, kind);
    const bool vim = bool(m.vim);
    const AttnCompat compat = vim ? AttnCompat::None : parse_attn_compat(o->compat);
    const BidirCompat bcompat = vim ? parse_bidir_compat(o->compat) : BidirCompat::None;
    if (o->class_row) {
      if (!vim) throw Error("--class-row", o->model + " has no class token (a language model): use --row I");
      if (o->row_set) throw Error("--class-row", "give either --row I or --class-row");
      o->row = m.vim->config().cls_index, o->row_set = true;
    }
    if ((compat != AttnCompat::None || bcompat != BidirCompat::None) && !o->row_set)
      throw Error("--compat", o->compat + " applies to a row: add --row I" + std::string(vim ? " or --class-row" : ""));
    const MambaModel* mamba = vim ? nullptr : dynamic_cast<const MambaModel*>(m.model.get());
    if (!vim && !mamba) throw Error(o->model, "hidden attention is available for mamba, falcon_mamba, mamba2, rwkv, recurrent_gemma and vim models");
    std::vector<int32_t> ids;
    LoadedImage image;
    int64_t T = 0, E = 0, n_layer = 0, d_state = 0;
    if (vim) {
      if (!o->in.text.empty() || !o->in.ids.empty()) throw Error("--text", o->model + " is a Vision Mamba: give --image or --pixels");
      image = load_image_input(o->img, *m.vim);
      const VimConfig& vc = m.vim->config();
      T = vc.n_tokens, E = vc.d_inner, n_layer = vc.n_layer, d_state = vc.d_state;
    } else {
      if (o->img.given()) throw Error("--image", o->model + " is a language model; give --text or --ids");
      if (o->in.text.empty() && o->in.ids.empty()) throw Error("attention", "give --text STR or --ids 1,2,3");
      ids = resolve_input(m, o->in, o->model);
      const MambaConfig& mc = mamba->config();
      T = int64_t(ids.size()), E = mc.d_inner, n_layer = mc.n_layer, d_state = mc.d_state;
    }
    if (vim && o->terms) throw Error("--terms", "the unified identity's extra terms are written for Mamba layers only");
    const std::vector<int64_t> layers = parse_layers(o->layers, n_layer);
    const auto [c0, c1] = parse_channels(o->channels, E);
    const int64_t nc = c1 - c0;
    const int64_t qrow = query_row(*o, T);

    // Memory: one layer's activations and result at a time.
    const double out_bytes = output_bytes(*o, T, nc);
    const double work = (o->row_set ? double(nc) * T * 4.0 * 2 : (2.0 * nc * T + double(num_threads()) * (d_state + 3) * T) * 4.0) *
                        (vim ? 2.0 : 1.0);
    const double acts = 16.0 * double(T) * double(E) * 4.0;
    check_memory(*o, out_bytes + work + acts + double(m.ck.total_bytes()), out_bytes);

    std::vector<std::string> tokens = token_texts(m, ids);
    if (vim)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t ci = m.vim->config().cls_index;
        tokens.push_back(t == ci ? "cls" : "p" + std::to_string(t < ci ? t : t - 1));
      }
    AttentionWriter out(*o, m, kind, ids, tokens, c0, c1, qrow);
    if (vim) out.index()["class_token"] = m.vim->config().cls_index;

    const std::set<int64_t> want(layers.begin(), layers.end());
    Progress prog("attention", int64_t(layers.size()), g.verbose);
    ForwardOptions fo;
    fo.all_logits = false;
    fo.layer_hook = [&](int64_t l, const std::map<std::string, Tensor>& acts) {
      if (!want.count(l)) return;
      MixerTrace tr;
      VimLayerTrace vt;
      Tensor res;
      if (vim) {
        make_vim_trace(vt, *m.vim, acts, l);
        if (o->row_set)
          res = reduce ? bidir_attention_row_reduce(vt.bt, kind, red, qrow, c0, c1, bcompat)
                       : bidir_attention_row(vt.bt, kind, qrow, c0, c1, bcompat);
        else
          res = reduce ? bidir_attention_reduce(vt.bt, kind, red, c0, c1) : bidir_attention_full(vt.bt, kind, c0, c1);
      } else {
        tr = make_mixer_trace(*mamba, acts, l);
        if (o->row_set)
          res = reduce ? hidden_attention_row_reduce(tr, kind, red, qrow, c0, c1, compat)
                       : hidden_attention_row(tr, kind, qrow, c0, c1, compat);
        else
          res = reduce ? hidden_attention_reduce(tr, kind, red, c0, c1) : hidden_attention_full(tr, kind, c0, c1);
      }
      nlohmann::ordered_json& entry = out.add(l, res, attn_kind_name(kind), c0, c1);
      if (o->terms) {
        Tensor dt, bt;
        hidden_attention_extra_terms(tr, &dt, &bt);
        char layer[16];
        std::snprintf(layer, sizeof layer, "layer%02lld", (long long)l);
        const std::string dn = std::string(layer) + ".d_term.npy", bn = std::string(layer) + ".bias_term.npy";
        write_npy_atomic((fs::path(o->out) / dn).string(), dt.ptr(), dt.shape);
        write_npy_atomic((fs::path(o->out) / bn).string(), bt.ptr(), bt.shape);
        entry["d_term"] = dn;
        entry["bias_term"] = bn;
      }
      prog.step();
    };
    if (vim) {
      VimForwardOptions vfo;
      vfo.layer_hook = fo.layer_hook;
      m.vim->forward(image.pixels, vfo);
    } else {
      m.model->forward(ids, fo);
    }
    prog.done();
    out.finish();
  });
}

}  // namespace ssmx::cli

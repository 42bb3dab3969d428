// ssmx._ssmx — the Python extension module: the C++ library behind ssmx/__init__.py.
//
// Arrays leave as NumPy float32 arrays that own the library's buffers (no copy: the Tensor's storage is moved into
// a capsule). The GIL is released while the library computes. ssmx::Error becomes ssmx.Error (a ValueError) with
// the CLI's one-line message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "api/explain_report.h"
#include "api/image_report.h"
#include "attribution/backend.h"
#include "attribution/bidirectional.h"
#include "attribution/vim_trace.h"
#include "io/image.h"
#include "models/vim.h"
#include "attribution/family_attention.h"
#include "attribution/hidden_attention.h"
#include "attribution/mamba_trace.h"
#include "core/error.h"
#include "core/runtime.h"
#include "eval/evidence.h"
#include "eval/randomization.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"
#include "models/mamba.h"
#include "models/model.h"
#include "render/image.h"
#include "render/report.h"

namespace py = pybind11;
using namespace ssmx;

// The evaluation runners (eval_flipping, eval_perturbation, eval_segmentation), defined at the end of this file.
void register_eval_bindings(py::module_& mod);

namespace {

// A float32 array that takes over `v` (no copy).
py::array_t<float> to_numpy(std::vector<float>&& v, const std::vector<int64_t>& shape) {
  auto* owner = new std::vector<float>(std::move(v));
  py::capsule free_when_done(owner, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  std::vector<py::ssize_t> sh(shape.begin(), shape.end()), strides(shape.size());
  py::ssize_t st = sizeof(float);
  for (size_t k = shape.size(); k-- > 0;) strides[k] = st, st *= py::ssize_t(shape[k]);
  return py::array_t<float>(sh, strides, owner->data(), free_when_done);
}
py::array_t<float> to_numpy(Tensor&& t) {
  const std::vector<int64_t> shape = t.shape;
  return to_numpy(std::move(t.data), shape);
}

struct Model {
  std::string path;
  Checkpoint ck;
  std::unique_ptr<CausalLM> model;  // language models
  std::unique_ptr<VimModel> vim;    // Vision Mamba
  std::optional<Tokenizer> tok;

  const ModelInfo& info() const { return vim ? vim->info() : model->info(); }
  const VimModel& vision(const char* what) const {
    if (!vim) throw Error(path, std::string(what) + ": image input needs a Vision Mamba; this model takes text");
    return *vim;
  }

  const MambaModel& mamba(const char* what) const {
    if (vim) throw Error(path, std::string(what) + ": this is a Vision Mamba; give image= or pixels=");
    const auto* m = dynamic_cast<const MambaModel*>(model.get());
    if (!m) throw Error(path, std::string(what) + " supports the Mamba and Falcon-Mamba families so far");
    return *m;
  }
  const CausalLM& lm(const char* what) const {
    if (vim) throw Error(path, std::string(what) + ": this is a Vision Mamba; give image= or pixels=");
    return *model;
  }
  const Tokenizer* tokenizer() const { return tok ? &*tok : nullptr; }

  // Token ids of the input: exactly one of text and ids.
  std::vector<int32_t> input(const std::optional<std::string>& text, const std::optional<std::vector<int64_t>>& ids) const {
    if (vim) throw Error(path, "this is a Vision Mamba; give image= or pixels=");
    if (text.has_value() == ids.has_value()) throw Error("input", "give exactly one of text= and ids=");
    std::vector<int32_t> out;
    if (ids) {
      for (int64_t v : *ids) {
        if (v < 0 || v >= model->vocab_size())
          throw Error("ids", "token id " + std::to_string(v) + " is outside the vocabulary (0.." +
                                 std::to_string(model->vocab_size() - 1) + ")");
        out.push_back(int32_t(v));
      }
    } else {
      if (!tok) throw Error(path, "no tokenizer.json next to the weights; pass ids=");
      out = tok->encode_ids(*text);
    }
    if (out.empty()) throw Error("input", "the input has no tokens");
    return out;
  }
};

std::shared_ptr<Model> py_load(const std::string& path, int threads) {
  if (threads < 0) throw Error("threads", "must be 0 (all cores) or positive");
  auto m = std::make_shared<Model>();
  py::gil_scoped_release nogil;
  set_num_threads(threads);
  m->path = path;
  m->ck = open_checkpoint(path);
  if (!m->ck.tokenizer_path.empty()) m->tok = Tokenizer::from_file(m->ck.tokenizer_path);
  if (detect_family(m->ck) == "vim") m->vim = VimModel::load(m->ck);
  else m->model = load_causal_lm(m->ck);
  return m;
}

py::dict py_info(const Model& m) {
  const ModelInfo& in = m.info();
  py::dict d, dims;
  d["path"] = m.path;
  d["family"] = in.family;
  d["architecture"] = in.architecture;
  for (const auto& [k, v] : in.dims) dims[py::str(k)] = v;
  d["dims"] = dims;
  d["parameters"] = in.n_params;
  d["tied_head"] = in.tied_head;
  d["dtype"] = m.ck.dtype_summary();
  d["layout"] = m.ck.layout;
  d["files"] = m.ck.files;
  d["weights_bytes"] = m.ck.total_bytes();
  d["tokenizer"] = m.tok ? py::object(py::str(m.tok->summary())) : py::object(py::none());
  d["notes"] = in.notes;
  return d;
}

py::dict py_tokenize(const Model& m, const std::string& text) {
  if (!m.tok) throw Error(m.path, "no tokenizer.json next to the weights");
  const Encoding enc = m.tok->encode(text);
  std::vector<std::string> tokens, texts;
  std::vector<std::pair<size_t, size_t>> offsets = enc.offsets;
  for (int32_t id : enc.ids) tokens.push_back(m.tok->id_to_token(id)), texts.push_back(m.tok->token_text(id));
  py::dict d;
  d["ids"] = enc.ids;
  d["tokens"] = tokens;  // vocabulary strings, as `ssmx tokenize --json` ("Ġthe")
  d["texts"] = texts;    // what each token stands for (" the")
  d["offsets"] = offsets;
  return d;
}

py::array_t<float> py_predict(const Model& m, const std::optional<std::string>& text,
                           const std::optional<std::vector<int64_t>>& ids, bool last_only) {
  const std::vector<int32_t> in = m.input(text, ids);
  Tensor logits;
  {
    py::gil_scoped_release nogil;
    ForwardOptions fo;
    fo.all_logits = !last_only;
    logits = m.model->forward(in, fo).logits;
  }
  if (last_only) logits.shape = {logits.shape.back()};
  return to_numpy(std::move(logits));
}

// Mamba-2, RWKV-4, RecurrentGemma: attribution/family_attention.h, the same results as `ssmx attention`'s files
// (RecurrentGemma's local attention layers: softmax weights per query head).
py::dict py_attention_family(const Model& m, const std::optional<std::string>& text,
                             const std::optional<std::vector<int64_t>>& ids, const std::optional<std::vector<int64_t>>& layers,
                             const std::string& kind_s, const std::optional<std::pair<int64_t, int64_t>>& channels,
                             const std::optional<int64_t>& row, bool full, const std::string& reduce_s,
                             const std::string& compat_s) {
  const CausalLM& lm = m.lm("attention");
  if (row && full) throw Error("full", "give either row= or full=True");
  const std::vector<int32_t> in = m.input(text, ids);
  const int64_t T = int64_t(in.size());
  const FamilyAttnShape shape = family_attention_shape(lm);
  FamilyAttnRequest req;
  req.kind = parse_attn_kind(kind_s);
  req.compat = compat_s;
  if (channels) req.c0 = channels->first, req.c1 = channels->second;
  req.reduce = reduce_s != "none";
  if (req.reduce) req.red = parse_attn_reduce(reduce_s);
  if (row) {
    req.row = *row < 0 ? T + *row : *row;
    if (req.row < 0 || req.row >= T) throw Error("row", "row " + std::to_string(*row) + " is outside the " + std::to_string(T) + " tokens");
  }
  std::vector<int64_t> want;
  if (layers) {
    std::set<int64_t> u;
    for (int64_t l : *layers) {
      if (l < 0 || l >= shape.layers)
        throw Error("layers", "layer " + std::to_string(l) + " does not exist (0.." + std::to_string(shape.layers - 1) + ")");
      u.insert(l);
    }
    want.assign(u.begin(), u.end());
  } else {
    for (int64_t l = 0; l < shape.layers; ++l) want.push_back(l);
  }
  // Refuse what cannot fit: the result of every requested layer is kept.
  const int64_t n = std::max(channels ? req.c1 - req.c0 : shape.channels, shape.heads);
  const double per_layer = row ? (req.reduce ? double(T) : double(n) * T) : (req.reduce ? double(T) * T : double(n) * T * T);
  if (per_layer * 4.0 * double(want.size()) > double(int64_t(64) << 30))
    throw Error("attention", "the request needs more than 64 GiB; ask for less: row=I, reduce='mean', fewer channels or layers");
  std::map<int64_t, Tensor> res;
  {
    py::gil_scoped_release nogil;
    family_attention(lm, in, want, req, [&](const FamilyAttnLayer& r) { res[r.layer] = r.result; });
  }
  py::dict out;
  for (auto& [l, t] : res) out[py::int_(l)] = to_numpy(std::move(t));
  return out;
}

py::dict py_attention(const Model& m, const std::optional<std::string>& text, const std::optional<std::vector<int64_t>>& ids,
                   const std::optional<std::vector<int64_t>>& layers, const std::string& kind_s,
                   const std::optional<std::pair<int64_t, int64_t>>& channels, const std::optional<int64_t>& row,
                   bool full, const std::string& reduce_s, const std::string& compat_s) {
  if (!m.vim && !dynamic_cast<const MambaModel*>(m.model.get()))
    return py_attention_family(m, text, ids, layers, kind_s, channels, row, full, reduce_s, compat_s);
  const MambaModel& mm = m.mamba("attention");
  const std::vector<int32_t> in = m.input(text, ids);
  const int64_t T = int64_t(in.size()), E = mm.config().d_inner, L = mm.config().n_layer;
  const AttnKind kind = parse_attn_kind(kind_s);
  const bool reduce = reduce_s != "none";
  const AttnReduce red = reduce ? parse_attn_reduce(reduce_s) : AttnReduce::Mean;
  const AttnCompat compat = parse_attn_compat(compat_s);
  if (row && full) throw Error("full", "give either row= or full=True");
  if (compat != AttnCompat::None && !row) throw Error("compat", "hiddenattn-row applies to a row: give row=I");
  int64_t qrow = -1;
  if (row) {
    qrow = *row < 0 ? T + *row : *row;
    if (qrow < 0 || qrow >= T) throw Error("row", "row " + std::to_string(*row) + " is outside the " + std::to_string(T) + " tokens");
  }
  int64_t c0 = 0, c1 = E;
  if (channels) {
    c0 = channels->first, c1 = channels->second;
    if (c0 < 0 || c0 >= c1 || c1 > E)
      throw Error("channels", "range (" + std::to_string(c0) + ", " + std::to_string(c1) + ") is empty or beyond the " +
                                  std::to_string(E) + " channels");
  }
  std::set<int64_t> want;
  if (layers) {
    for (int64_t l : *layers) {
      if (l < 0 || l >= L) throw Error("layers", "layer " + std::to_string(l) + " does not exist (0.." + std::to_string(L - 1) + ")");
      want.insert(l);
    }
  } else {
    for (int64_t l = 0; l < L; ++l) want.insert(l);
  }
  // Refuse what cannot fit: the result of every requested layer is kept.
  const double per_layer = row ? (reduce ? double(T) : double(c1 - c0) * T) : (reduce ? double(T) * T : double(c1 - c0) * T * T);
  if (per_layer * 4.0 * double(want.size()) > double(int64_t(64) << 30))
    throw Error("attention", "the request needs more than 64 GiB; ask for less: row=I, reduce='mean', fewer channels or layers");
  std::map<int64_t, Tensor> res;
  {
    py::gil_scoped_release nogil;
    ForwardOptions fo;
    fo.all_logits = false;
    fo.layer_hook = [&](int64_t l, const std::map<std::string, Tensor>& acts) {
      if (!want.count(l)) return;
      const MixerTrace tr = make_mixer_trace(mm, acts, l);
      if (row)
        res[l] = reduce ? hidden_attention_row_reduce(tr, kind, red, qrow, c0, c1, compat)
                        : hidden_attention_row(tr, kind, qrow, c0, c1, compat);
      else
        res[l] = reduce ? hidden_attention_reduce(tr, kind, red, c0, c1) : hidden_attention_full(tr, kind, c0, c1);
    };
    mm.forward(in, fo);
  }
  py::dict out;
  for (auto& [l, t] : res) out[py::int_(l)] = to_numpy(std::move(t));
  return out;
}

// An explanation report: one input, one target, one or several methods.
struct PyReport {
  Report rep;
};

std::shared_ptr<PyReport> py_explain(const Model& m, const std::optional<std::string>& text,
                                  const std::optional<std::vector<int64_t>>& ids, const std::vector<std::string>& methods,
                                  const std::string& target, const std::string& contrast, const std::string& cls,
                                  int64_t position, const std::string& lrp_rules, const std::string& linear_rule,
                                  double epsilon, double gamma, int steps, const std::string& baseline, int samples,
                                  double noise, uint64_t seed, int64_t start_layer, const std::string& compat,
                                  bool zero_biases, bool words, bool keep_maps) {
  const CausalLM& mm = m.lm("explain");
  const std::vector<int32_t> in = m.input(text, ids);
  ExplainSpec spec;
  spec.methods.clear();
  for (const std::string& s : methods)
    for (Method me : parse_method_list(s)) spec.methods.push_back(me);
  spec.target = target, spec.contrast = contrast, spec.cls = cls, spec.position = position;
  spec.words = words, spec.keep_maps = keep_maps && in.size() <= 256;
  ExplainOptions& eo = spec.options;
  eo.rules = parse_lrp_rules(lrp_rules, linear_rule, epsilon, gamma);
  eo.zero_biases = zero_biases;
  eo.ig_steps = steps, eo.ig_baseline = baseline;
  eo.sg_samples = samples, eo.sg_noise = noise, eo.seed = seed;
  eo.start_layer = start_layer, eo.compat = compat;
  auto r = std::make_shared<PyReport>();
  py::gil_scoped_release nogil;
  r->rep = explain_report(mm, m.ck, m.tokenizer(), m.path, text ? *text : "", in, spec);
  return r;
}

py::list py_eval_evidence(const Model& m, const std::string& data, const std::vector<std::string>& methods, int top_k,
                       int skip_first, int skip_last, bool contrast, int64_t limit, int64_t start_layer) {
  const CausalLM& mm = m.lm("eval");
  if (!m.tok) throw Error(m.path, "no tokenizer.json next to the weights (the data is text)");
  if (top_k < 1) throw Error("top_k", "must be at least 1");
  std::vector<EvidenceExample> ex = read_evidence_jsonl(data);
  if (limit > 0 && int64_t(ex.size()) > limit) ex.resize(size_t(limit));
  std::vector<Method> ms;
  for (const std::string& s : methods)
    for (Method me : parse_method_list(s)) ms.push_back(me);
  ExplainOptions base;
  base.start_layer = start_layer;
  std::vector<EvidenceScores> sc;
  {
    py::gil_scoped_release nogil;
    sc = evaluate_evidence(mm, *m.tok, ex, ms, base, {top_k, skip_first, skip_last, contrast});
  }
  py::list out;
  for (const auto& s : sc) {
    py::dict d;
    d["method"] = s.method;
    d["examples"] = s.examples;
    d["pointing_game"] = s.pointing;
    d["recall_at_E"] = s.recall;
    d["hit_at_k"] = s.hit_at_k;
    d["seconds"] = s.seconds;
    out.append(d);
  }
  return out;
}

py::dict py_eval_randomization(const Model& m, const std::string& data, const std::vector<std::string>& methods,
                               int64_t limit, uint64_t seed, int64_t start_layer) {
  if (!m.tok) throw Error(m.path, "no tokenizer.json next to the weights (the data is text)");
  std::vector<TextExample> ex = read_text_jsonl(data);
  if (limit > 0 && int64_t(ex.size()) > limit) ex.resize(size_t(limit));
  std::vector<Method> ms;
  for (const std::string& s : methods)
    for (Method me : parse_method_list(s)) ms.push_back(me);
  ExplainOptions base;
  base.start_layer = start_layer;
  base.seed = seed;
  RandomizationScores sc;
  {
    py::gil_scoped_release nogil;
    sc = evaluate_randomization(m.ck, *m.tok, ex, ms, base, seed);
  }
  py::dict d, sp, spa;
  d["stages"] = sc.stages;
  d["examples"] = sc.examples;
  for (size_t k = 0; k < sc.methods.size(); ++k) {
    sp[py::str(sc.methods[k])] = sc.rho[k];
    spa[py::str(sc.methods[k])] = sc.rho_abs[k];
  }
  d["spearman"] = sp;
  d["spearman_abs"] = spa;
  return d;
}

// Pixels for a Vision Mamba: an image file through the transform, or a float32 [3, H, W] array; plus the crop.
struct ImageIn {
  Tensor pixels;
  Image crop;
  std::string label;
};
ImageIn image_input(const VimModel& vm, const std::optional<std::string>& image,
                    const std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>>& pixels,
                    const std::string& transform) {
  const VimConfig& c = vm.config();
  if (image.has_value() == pixels.has_value()) throw Error("input", "give exactly one of image= and pixels=");
  ImageIn in;
  if (pixels) {
    const auto& a = *pixels;
    if (a.ndim() != 3 || a.shape(0) != 3 || a.shape(1) != c.img_h || a.shape(2) != c.img_w)
      throw Error("pixels", "expected a float32 array of shape (3, " + std::to_string(c.img_h) + ", " +
                                std::to_string(c.img_w) + ")");
    in.pixels = Tensor({3, c.img_h, c.img_w}, std::vector<float>(a.data(), a.data() + a.size()));
    in.label = "pixels";
    return in;
  }
  ImageTransform t;
  if (transform == "deit") t = ImageTransform::deit_eval(int(c.img_h));
  else if (transform != "resize") throw Error("transform", "unknown transform '" + transform + "' (deit or resize)");
  if (transform == "resize") {
    Image sized = resize_bicubic_pil(load_image_rgb(*image), int(c.img_w), int(c.img_h));
    in.pixels = image_to_tensor(sized, t.mean, t.std);
    in.crop = std::move(sized);
  } else {
    PreparedImage p = load_and_preprocess(*image, t);
    in.pixels = std::move(p.pixels);
    in.crop = std::move(p.crop);
  }
  if (in.pixels.shape != std::vector<int64_t>{3, c.img_h, c.img_w})
    throw Error(*image, "the transform gave " + shape_str(in.pixels.shape) + ", not the model's input size; use transform='resize'");
  in.label = *image;
  return in;
}

py::array_t<uint8_t> image_to_numpy(const Image& img) {
  auto* owner = new std::vector<uint8_t>(img.px);
  py::capsule free_when_done(owner, [](void* p) { delete static_cast<std::vector<uint8_t>*>(p); });
  return py::array_t<uint8_t>({py::ssize_t(img.h), py::ssize_t(img.w), py::ssize_t(3)}, owner->data(), free_when_done);
}

py::array_t<float> py_predict_image(const Model& m, const std::optional<std::string>& image,
                                    const std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>>& pixels,
                                    const std::string& transform) {
  const VimModel& vm = m.vision("predict");
  ImageIn in = image_input(vm, image, pixels, transform);
  Tensor logits;
  {
    py::gil_scoped_release nogil;
    logits = vm.forward(in.pixels).logits;
  }
  return to_numpy(std::move(logits));
}

struct PyImageReport {
  ImageReport rep;
};

std::shared_ptr<PyImageReport> py_explain_image(
    const Model& m, const std::optional<std::string>& image,
    const std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>>& pixels, const std::string& transform,
    const std::vector<std::string>& methods, int64_t cls, const std::string& lrp_rules, const std::string& linear_rule,
    double epsilon, double gamma, int steps, const std::string& baseline, int samples, double noise, uint64_t seed,
    int64_t start_layer, const std::string& compat, bool zero_biases) {
  const VimModel& vm = m.vision("explain");
  ImageIn in = image_input(vm, image, pixels, transform);
  ImageExplainSpec spec;
  spec.methods.clear();
  for (const std::string& s : methods)
    for (Method me : parse_method_list(s)) spec.methods.push_back(me);
  spec.cls = cls;
  spec.class_names = read_class_names(m.ck, vm.config().n_classes);
  ExplainOptions& eo = spec.options;
  eo.rules = parse_lrp_rules(lrp_rules, linear_rule, epsilon, gamma);
  eo.zero_biases = zero_biases;
  eo.ig_steps = steps, eo.ig_baseline = baseline;
  eo.sg_samples = samples, eo.sg_noise = noise, eo.seed = seed;
  eo.compat = compat;
  spec.start_layer_set = start_layer >= 0;
  eo.start_layer = std::max<int64_t>(start_layer, 0);
  auto r = std::make_shared<PyImageReport>();
  py::gil_scoped_release nogil;
  r->rep = explain_image_report(vm, in.pixels, in.crop, m.path, in.label, spec);
  return r;
}

py::dict py_attention_image(const Model& m, const std::optional<std::string>& image,
                            const std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>>& pixels,
                            const std::string& transform, const std::optional<std::vector<int64_t>>& layers,
                            const std::string& kind_s, const std::optional<std::pair<int64_t, int64_t>>& channels,
                            const std::optional<int64_t>& row, bool class_row, bool full, const std::string& reduce_s,
                            const std::string& compat_s) {
  const VimModel& vm = m.vision("attention");
  const VimConfig& c = vm.config();
  ImageIn in = image_input(vm, image, pixels, transform);
  const int64_t T = c.n_tokens, E = c.d_inner, L = c.n_layer;
  const AttnKind kind = parse_attn_kind(kind_s);
  const bool reduce = reduce_s != "none";
  const AttnReduce red = reduce ? parse_attn_reduce(reduce_s) : AttnReduce::Mean;
  const BidirCompat compat = parse_bidir_compat(compat_s);
  if ((row || class_row) && full) throw Error("full", "give either a row or full=True");
  if (row && class_row) throw Error("class_row", "give either row= or class_row=True");
  const bool is_row = row.has_value() || class_row;
  int64_t q = class_row ? c.cls_index : -1;
  if (row) {
    q = *row < 0 ? T + *row : *row;
    if (q < 0 || q >= T) throw Error("row", "row " + std::to_string(*row) + " is outside the " + std::to_string(T) + " tokens");
  }
  if (compat != BidirCompat::None && !is_row) throw Error("compat", compat_s + " applies to a row: give row= or class_row=True");
  int64_t c0 = 0, c1 = E;
  if (channels) {
    c0 = channels->first, c1 = channels->second;
    if (c0 < 0 || c0 >= c1 || c1 > E) throw Error("channels", "range is empty or beyond the " + std::to_string(E) + " channels");
  }
  std::set<int64_t> want;
  if (layers) {
    for (int64_t l : *layers) {
      if (l < 0 || l >= L) throw Error("layers", "layer " + std::to_string(l) + " does not exist (0.." + std::to_string(L - 1) + ")");
      want.insert(l);
    }
  } else {
    for (int64_t l = 0; l < L; ++l) want.insert(l);
  }
  std::map<int64_t, Tensor> res;
  {
    py::gil_scoped_release nogil;
    VimForwardOptions fo;
    fo.layer_hook = [&](int64_t l, const std::map<std::string, Tensor>& acts) {
      if (!want.count(l)) return;
      VimLayerTrace vt;
      make_vim_trace(vt, vm, acts, l);
      if (is_row)
        res[l] = reduce ? bidir_attention_row_reduce(vt.bt, kind, red, q, c0, c1, compat)
                        : bidir_attention_row(vt.bt, kind, q, c0, c1, compat);
      else
        res[l] = reduce ? bidir_attention_reduce(vt.bt, kind, red, c0, c1) : bidir_attention_full(vt.bt, kind, c0, c1);
    };
    vm.forward(in.pixels, fo);
  }
  py::dict out;
  for (auto& [l, t] : res) out[py::int_(l)] = to_numpy(std::move(t));
  return out;
}

}  // namespace

PYBIND11_MODULE(_ssmx, mod) {
  mod.doc() = "ssmx C++ core (use the ssmx package, not this module)";
  static py::exception<Error> err(mod, "Error", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      err(e.what());
    }
  });
  mod.attr("__version__") = SSMX_VERSION;
  mod.def("blas_core", &blas_core_reason);
  register_eval_bindings(mod);

  py::class_<Model, std::shared_ptr<Model>>(mod, "Model")
      .def_readonly("path", &Model::path)
      .def("info", &py_info)
      .def("tokenize", &py_tokenize, py::arg("text"))
      .def("predict", &py_predict, py::arg("text") = py::none(), py::arg("ids") = py::none(), py::arg("last_only") = false)
      .def("attention", &py_attention, py::arg("text") = py::none(), py::arg("ids") = py::none(),
           py::arg("layers") = py::none(), py::arg("kind") = "s6", py::arg("channels") = py::none(),
           py::arg("row") = py::none(), py::arg("full") = false, py::arg("reduce") = "none", py::arg("compat") = "none")
      .def("explain", &py_explain, py::arg("text") = py::none(), py::arg("ids") = py::none(), py::arg("methods"),
           py::arg("target") = "", py::arg("contrast") = "", py::arg("cls") = "", py::arg("position") = -1,
           py::arg("lrp_rules") = "silu,ssm,gate,norm", py::arg("linear_rule") = "lrp0", py::arg("epsilon") = 1e-6,
           py::arg("gamma") = 0.25, py::arg("steps") = 32, py::arg("baseline") = "zero", py::arg("samples") = 16,
           py::arg("noise") = 0.1, py::arg("seed") = 0, py::arg("start_layer") = 0, py::arg("compat") = "none",
           py::arg("zero_biases") = false, py::arg("words") = false, py::arg("keep_maps") = false)
      .def("eval_evidence", &py_eval_evidence, py::arg("data"), py::arg("methods"), py::arg("top_k") = 3,
           py::arg("skip_first") = 0, py::arg("skip_last") = 0, py::arg("contrast") = false, py::arg("limit") = 0,
           py::arg("start_layer") = 0)
      .def("eval_randomization", &py_eval_randomization, py::arg("data"), py::arg("methods"), py::arg("limit") = 20,
           py::arg("seed") = 0, py::arg("start_layer") = 0);
  mod.def("load", &py_load, py::arg("path"), py::arg("threads") = 0);
  mod.def("is_vision", [](const Model& m) { return bool(m.vim); });
  mod.def("vision_config", [](const Model& m) {
    const VimConfig& c = m.vision("vision_config").config();
    py::dict d;
    d["grid"] = py::make_tuple(c.grid_h, c.grid_w);
    d["image"] = py::make_tuple(c.img_h, c.img_w);
    d["class_token"] = c.cls_index;
    d["classes"] = c.n_classes;
    d["size"] = c.size;
    return d;
  });
  mod.def("predict_image", &py_predict_image, py::arg("model"), py::arg("image") = py::none(),
          py::arg("pixels") = py::none(), py::arg("transform") = "deit");
  mod.def("explain_image", &py_explain_image, py::arg("model"), py::arg("image") = py::none(),
          py::arg("pixels") = py::none(), py::arg("transform") = "deit", py::arg("methods"), py::arg("cls") = -1,
          py::arg("lrp_rules") = "silu,ssm,gate,norm", py::arg("linear_rule") = "lrp0", py::arg("epsilon") = 1e-6,
          py::arg("gamma") = 0.25, py::arg("steps") = 32, py::arg("baseline") = "zero", py::arg("samples") = 16,
          py::arg("noise") = 0.1, py::arg("seed") = 0, py::arg("start_layer") = -1, py::arg("compat") = "none",
          py::arg("zero_biases") = false);
  mod.def("attention_image", &py_attention_image, py::arg("model"), py::arg("image") = py::none(),
          py::arg("pixels") = py::none(), py::arg("transform") = "deit", py::arg("layers") = py::none(),
          py::arg("kind") = "s6", py::arg("channels") = py::none(), py::arg("row") = py::none(),
          py::arg("class_row") = false, py::arg("full") = false, py::arg("reduce") = "none", py::arg("compat") = "none");
  py::class_<PyImageReport, std::shared_ptr<PyImageReport>>(mod, "ImageReport")
      .def("json", [](const PyImageReport& r) { return image_report_json(r.rep).dump(1); })
      .def("html", [](const PyImageReport& r) { return image_report_html(r.rep); })
      .def("terminal", [](const PyImageReport& r) { return image_report_terminal(r.rep); })
      .def("patch_maps", [](const PyImageReport& r) {
        std::vector<float> all;
        for (const auto& mp : r.rep.maps) all.insert(all.end(), mp.second.begin(), mp.second.end());
        const int64_t M = int64_t(r.rep.maps.size());
        return M == 1 ? to_numpy(std::move(all), {r.rep.grid_h, r.rep.grid_w})
                      : to_numpy(std::move(all), {M, r.rep.grid_h, r.rep.grid_w});
      })
      .def("token_relevance", [](const PyImageReport& r) {
        std::vector<float> all;
        for (const auto& e : r.rep.explanations) all.insert(all.end(), e.relevance.begin(), e.relevance.end());
        const int64_t M = int64_t(r.rep.explanations.size()), T = int64_t(r.rep.explanations[0].relevance.size());
        return M == 1 ? to_numpy(std::move(all), {T}) : to_numpy(std::move(all), {M, T});
      })
      .def("overlay", [](const PyImageReport& r, size_t k) { return image_to_numpy(image_report_overlay(r.rep, k)); },
           py::arg("method") = 0)
      .def("figure", [](const PyImageReport& r) { return image_to_numpy(image_report_figure(r.rep)); })
      .def("image", [](const PyImageReport& r) { return image_to_numpy(r.rep.crop); })
      .def("save_png", [](const PyImageReport& r, const std::string& path, bool figure) {
        write_png(path, figure ? image_report_figure(r.rep) : image_report_overlay(r.rep, 0));
      });

  py::class_<PyReport, std::shared_ptr<PyReport>>(mod, "Report")
      .def("json", [](const PyReport& r) { return report_json(r.rep).dump(1); })
      .def("html", [](const PyReport& r) { return render_html(r.rep); })
      .def("terminal", [](const PyReport& r, bool color) { return render_terminal(r.rep, color); }, py::arg("color") = false)
      .def("relevance", [](const PyReport& r) {
        const size_t M = r.rep.explanations.size(), T = r.rep.tokens.size();
        std::vector<float> all;
        for (const auto& e : r.rep.explanations) all.insert(all.end(), e.relevance.begin(), e.relevance.end());
        return M == 1 ? to_numpy(std::move(all), {int64_t(T)}) : to_numpy(std::move(all), {int64_t(M), int64_t(T)});
      });
}

// ---- the data set evaluations: the runners of `ssmx eval flipping | perturbation | segmentation` ----
#include "eval/runner.h"
#include "eval/text_data.h"
#include "eval/vision_runner.h"

namespace {

py::array_t<double> to_numpy_f64(const std::vector<double>& v) {
  py::array_t<double> a(py::ssize_t(v.size()));
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

std::vector<Method> method_list(const std::vector<std::string>& methods) {
  std::vector<Method> ms;
  for (const std::string& s : methods)
    for (Method me : parse_method_list(s)) ms.push_back(me);
  if (ms.empty()) throw Error("method", "no method given");
  return ms;
}

void shard_of(const std::pair<int64_t, int64_t>& shard, int64_t& si, int64_t& sn) {
  si = shard.first, sn = shard.second;
  if (sn < 1 || si < 0 || si >= sn) throw Error("shard", "expected (I, N) with 0 <= I < N");
}

py::dict py_eval_flipping(const Model& m, const std::string& data, const std::vector<std::string>& methods,
                          const std::string& format, const std::string& text_field, const std::string& label_field,
                          const std::string& labels, const std::string& tpl, const std::string& mask, int steps,
                          int skip_first, int skip_last, bool abs, int64_t limit, uint64_t seed, int64_t start_layer,
                          std::pair<int64_t, int64_t> shard, const std::string& out, bool resume) {
  const CausalLM& mm = m.lm("eval_flipping");
  if (!m.tok) throw Error(m.path, "no tokenizer.json next to the weights (the data is text)");
  if (resume && out.empty()) throw Error("resume", "needs out=");
  if (steps < 0) throw Error("steps", "must not be negative");
  if (skip_first < 0 || skip_last < 0) throw Error("skip_first/skip_last", "must not be negative");
  RunSpec spec;
  parse_mask(mask, spec.flip);
  spec.flip.steps = steps;
  spec.flip.skip_first = skip_first, spec.flip.skip_last = skip_last;
  spec.flip.abs = abs;
  spec.methods = method_list(methods);
  spec.base.start_layer = start_layer;
  spec.base.seed = seed;
  shard_of(shard, spec.shard, spec.shards);
  spec.out = out;
  spec.resume = resume;
  TextFields tf;
  tf.text = text_field;
  tf.label = label_field;
  std::vector<TextRecord> recs = read_text_data(data, parse_text_format(format, data), tf);
  if (limit > 0 && int64_t(recs.size()) > limit) recs.resize(size_t(limit));
  const auto lm = labels.empty() ? std::map<std::string, std::string>{} : parse_label_map(labels);
  const std::vector<FlipExample> ex = prepare_examples(*m.tok, recs, data, tpl, lm, spec.flip.classes);
  std::vector<FlipSummary> sum;
  {
    py::gil_scoped_release nogil;
    const auto r = run_flipping(mm, ex, spec);
    sum = summarize(out.empty() ? r : read_records({out}));
  }
  py::dict d;
  for (const auto& s : sum) {
    py::dict e;
    e["examples"] = s.examples;
    e["a_morf"] = s.a_morf, e["a_lerf"] = s.a_lerf, e["delta_af"] = s.delta_af, e["auac"] = s.auac;
    e["a_ins_lerf"] = s.a_ins_lerf, e["delta_ai"] = s.delta_ai, e["au_mse"] = s.au_mse;
    e["curve_x"] = to_numpy_f64(s.grid), e["curve_morf"] = to_numpy_f64(s.morf), e["curve_lerf"] = to_numpy_f64(s.lerf);
    e["curve_activation"] = to_numpy_f64(s.act), e["curve_pruning"] = to_numpy_f64(s.prune);
    d[py::str(s.method)] = e;
  }
  return d;
}

VisionData vision_data_of(const Model& m, const VimModel& vm, const std::string& data, const std::string& labels,
                          int64_t limit) {
  VisionData d = read_vision_data(data, labels, read_class_names(m.ck, vm.config().n_classes));
  if (limit > 0 && int64_t(d.examples.size()) > limit) d.examples.resize(size_t(limit));
  return d;
}

void vision_spec(VisionRunSpec& spec, const std::vector<std::string>& methods, uint64_t seed, int64_t start_layer,
                 const std::string& compat, std::pair<int64_t, int64_t> shard, const std::string& out, bool resume) {
  if (resume && out.empty()) throw Error("resume", "needs out=");
  if (start_layer < -1) throw Error("start_layer", "must not be negative");
  if (compat != "none" && compat != "official") throw Error("compat", "expected none or official, got '" + compat + "'");
  spec.methods = method_list(methods);
  spec.base.seed = seed;
  spec.base.start_layer = start_layer;
  spec.base.compat = compat;
  shard_of(shard, spec.shard, spec.shards);
  spec.out = out;
  spec.resume = resume;
}

py::dict py_eval_perturbation(const Model& m, const std::string& data, const std::vector<std::string>& methods,
                              const std::string& labels, const std::string& mode, const std::vector<double>& steps,
                              bool include_zero, int64_t limit, uint64_t seed, int64_t start_layer,
                              const std::string& compat, std::pair<int64_t, int64_t> shard, const std::string& out,
                              bool resume, const std::string& transform) {
  const VimModel& vm = m.vision("eval_perturbation");
  if (mode != "positive" && mode != "negative" && mode != "both")
    throw Error("mode", "expected positive, negative or both, got '" + mode + "'");
  if (transform != "deit" && transform != "resize")
    throw Error("transform", "expected deit or resize, got '" + transform + "'");
  VisionRunSpec spec;
  vision_spec(spec, methods, seed, start_layer, compat, shard, out, resume);
  spec.positive = mode != "negative", spec.negative = mode != "positive";
  spec.steps = steps;
  spec.include_zero = include_zero;
  spec.plain_resize = transform == "resize";
  const VisionData d = vision_data_of(m, vm, data, labels, limit);
  std::vector<PerturbationSummary> sum;
  {
    py::gil_scoped_release nogil;
    const auto r = run_perturbation(vm, d, spec);
    sum = summarize_perturbation(out.empty() ? r : read_vision_records({out}, "perturbation"));
  }
  py::dict res;
  for (const auto& s : sum) {
    py::dict e;
    e["images"] = s.images;
    e["fractions"] = to_numpy_f64(s.x);
    if (s.has_positive) e["positive_accuracy"] = to_numpy_f64(s.positive_accuracy), e["positive_auc"] = s.positive_auc;
    if (s.has_negative) e["negative_accuracy"] = to_numpy_f64(s.negative_accuracy), e["negative_auc"] = s.negative_auc;
    res[py::str(s.method)] = e;
  }
  return res;
}

py::dict py_eval_segmentation(const Model& m, const std::string& data, const std::vector<std::string>& methods,
                              bool compat_unnormalised_ap, int64_t limit, uint64_t seed, int64_t start_layer,
                              const std::string& compat, std::pair<int64_t, int64_t> shard, const std::string& out,
                              bool resume) {
  const VimModel& vm = m.vision("eval_segmentation");
  VisionRunSpec spec;
  vision_spec(spec, methods, seed, start_layer, compat, shard, out, resume);
  spec.compat_unnormalised_ap = compat_unnormalised_ap;
  const VisionData d = vision_data_of(m, vm, data, "", limit);
  std::vector<SegmentationSummary> sum;
  {
    py::gil_scoped_release nogil;
    const auto r = run_segmentation(vm, d, spec);
    sum = summarize_segmentation(out.empty() ? r : read_vision_records({out}, "segmentation"));
  }
  py::dict res;
  for (const auto& s : sum) {
    py::dict e;
    e["images"] = s.r.images;
    e["pixel_accuracy"] = s.r.pixel_accuracy, e["iou_bg"] = s.r.iou_bg, e["iou_fg"] = s.r.iou_fg;
    e["miou"] = s.r.miou, e["map"] = s.r.map, e["mf1"] = s.r.mf1;
    e["pointing"] = s.pointing, e["energy"] = s.energy, e["mask_fraction"] = s.mask_fraction;
    res[py::str(s.method)] = e;
  }
  return res;
}

}  // namespace

void register_eval_bindings(py::module_& mod) {
  mod.def("eval_flipping", &py_eval_flipping, py::arg("model"), py::arg("data"), py::arg("methods"),
          py::arg("format") = "", py::arg("text_field") = "", py::arg("label_field") = "label", py::arg("labels") = "",
          py::arg("template") = "", py::arg("mask") = "zero", py::arg("steps") = 0, py::arg("skip_first") = 0,
          py::arg("skip_last") = 0, py::arg("abs") = false, py::arg("limit") = 0, py::arg("seed") = 0,
          py::arg("start_layer") = 0, py::arg("shard") = std::pair<int64_t, int64_t>(0, 1), py::arg("out") = "",
          py::arg("resume") = false);
  mod.def("eval_perturbation", &py_eval_perturbation, py::arg("model"), py::arg("data"), py::arg("methods"),
          py::arg("labels") = "", py::arg("mode") = "both",
          py::arg("steps") = std::vector<double>{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9},
          py::arg("include_zero") = false, py::arg("limit") = 0, py::arg("seed") = 0, py::arg("start_layer") = -1,
          py::arg("compat") = "none", py::arg("shard") = std::pair<int64_t, int64_t>(0, 1), py::arg("out") = "",
          py::arg("resume") = false, py::arg("transform") = "deit");
  mod.def("eval_segmentation", &py_eval_segmentation, py::arg("model"), py::arg("data"), py::arg("methods"),
          py::arg("compat_unnormalised_ap") = false, py::arg("limit") = 0, py::arg("seed") = 0,
          py::arg("start_layer") = -1, py::arg("compat") = "none", py::arg("shard") = std::pair<int64_t, int64_t>(0, 1),
          py::arg("out") = "", py::arg("resume") = false);
}

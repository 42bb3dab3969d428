#include "eval/vision_runner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "eval/curves.h"
#include "eval/runner.h"
#include "io/image.h"
#include "render/overlay.h"

namespace ssmx {

namespace fs = std::filesystem;

namespace {

bool ends_with_ci(const std::string& s, const std::string& suf) {
  if (s.size() < suf.size()) return false;
  for (size_t i = 0; i < suf.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[s.size() - suf.size() + i])) != suf[i]) return false;
  return true;
}

VisionData read_jsonl(const std::string& path, const std::vector<std::string>& class_names) {
  std::ifstream f(path);
  if (!f) throw Error(path, "cannot open");
  VisionData d;
  d.path = path;
  const fs::path dir = fs::path(path).parent_path();
  std::string l;
  int64_t line = 0;
  while (std::getline(f, l)) {
    ++line;
    if (l.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line);
    const nlohmann::json j = nlohmann::json::parse(l, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error(where, "not a JSON object");
    if (!j.contains("image") || !j["image"].is_string()) throw Error(where, "no \"image\" (a path) in the record");
    VisionExample ex;
    ex.index = int64_t(d.examples.size());
    const fs::path img = j["image"].get<std::string>();
    ex.image = img.is_absolute() ? img.string() : (dir / img).string();
    if (j.contains("mask")) {
      if (!j["mask"].is_string()) throw Error(where, "\"mask\" must be a path");
      const fs::path mk = j["mask"].get<std::string>();
      ex.mask = mk.is_absolute() ? mk.string() : (dir / mk).string();
    }
    auto take_int = [&](const nlohmann::json& v, const char* name) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (1 << 30))
        throw Error(where, std::string("\"") + name + "\" must be a class index");
      return int(v.get<int64_t>());
    };
    if (j.contains("class")) {
      ex.label = take_int(j["class"], "class");
    } else if (j.contains("label")) {
      if (j["label"].is_string()) {
        const std::string name = j["label"].get<std::string>();
        auto it = std::find(class_names.begin(), class_names.end(), name);
        if (it == class_names.end()) throw Error(where, "label '" + name + "' is not a class name of the model");
        ex.label = int(it - class_names.begin());
      } else {
        ex.label = take_int(j["label"], "label");
      }
    }
    d.examples.push_back(std::move(ex));
  }
  if (d.examples.empty()) throw Error(path, "no images listed");
  return d;
}

std::vector<uint8_t> read_mask_png(const std::string& path, int& h, int& w) {
  const Image m = load_image_rgb(path);
  h = m.h, w = m.w;
  std::vector<uint8_t> out(size_t(m.h) * size_t(m.w));
  for (size_t i = 0; i < out.size(); ++i) {
    const uint8_t* p = &m.px[i * 3];
    out[i] = (int(p[0]) + int(p[1]) + int(p[2])) > 3 * 127 ? 1 : 0;
  }
  return out;
}

void check_size(const Image& img, const VimModel& m, const std::string& where) {
  const VimConfig& c = m.config();
  if (img.w != int(c.img_w) || img.h != int(c.img_h))
    throw Error(where, "the transform gave " + std::to_string(img.w) + "x" + std::to_string(img.h) +
                           " pixels, not the model's " + std::to_string(c.img_w) + "x" + std::to_string(c.img_h) +
                           " (DeiT does not resize inputs of 32 pixels or less; --transform resize does)");
}

Tensor to_pixels(const Image& img) {
  const ImageTransform t;  // ImageNet mean and std
  return image_to_tensor(img, t.mean, t.std);
}

int64_t argmax(const Tensor& logits) {
  return int64_t(std::max_element(logits.data.begin(), logits.data.end()) - logits.data.begin());
}

}  // namespace

VisionData read_vision_data(const std::string& data, const std::string& labels,
                            const std::vector<std::string>& class_names) {
  std::error_code ec;
  if (fs::is_directory(data, ec)) {
    VisionData d;
    d.path = data;
    std::vector<LabeledImage> imgs;
    if (labels.empty()) imgs = read_imagenet_folder(data).images;
    else imgs = read_imagenet_flat(data, labels);
    for (size_t i = 0; i < imgs.size(); ++i) {
      VisionExample ex;
      ex.index = int64_t(i);
      ex.image = imgs[i].path;
      ex.label = imgs[i].label;
      d.examples.push_back(std::move(ex));
    }
    return d;
  }
  if (!labels.empty()) throw Error("--labels", "only applies to a flat image folder (--data DIR)");
  if (ends_with_ci(data, ".jsonl")) return read_jsonl(data, class_names);
  if (ends_with_ci(data, ".mat")) {
    VisionData d;
    d.path = data;
    d.mat = std::make_shared<SegmentationDataset>(data);
    for (int64_t i = 0; i < d.mat->size(); ++i) {
      VisionExample ex;
      ex.index = i;
      ex.image = data + "[" + std::to_string(i) + "]";
      ex.mat_index = i;
      d.examples.push_back(std::move(ex));
    }
    return d;
  }
  if (!fs::exists(data, ec)) throw Error(data, "no such file or directory");
  throw Error(data, "expected an image folder, a .jsonl list or gtsegs_ijcv.mat");
}

VisionSample load_vision_sample(const VimModel& m, const VisionData& d, const VisionExample& ex, bool segmentation,
                                bool plain_resize) {
  const VimConfig& c = m.config();
  const int H = int(c.img_h), W = int(c.img_w);
  VisionSample s;
  Image src;
  std::vector<uint8_t> mask;
  int mh = 0, mw = 0;
  if (ex.mat_index >= 0) {
    if (!d.mat) throw Error(ex.image, "no segmentation data set open");
    SegmentationSample ss = d.mat->sample(ex.mat_index);
    src = std::move(ss.image);
    mask = std::move(ss.mask);
    mh = src.h, mw = src.w;
  } else {
    src = load_image_rgb(ex.image);
    if (segmentation) {
      if (ex.mask.empty()) throw Error(ex.image, "no mask given for the image (a \"mask\" field)");
      mask = read_mask_png(ex.mask, mh, mw);
      if (mh != src.h || mw != src.w)
        throw Error(ex.mask, "mask is " + std::to_string(mw) + "x" + std::to_string(mh) + ", the image " +
                                 std::to_string(src.w) + "x" + std::to_string(src.h));
    }
  }
  if (segmentation || plain_resize) {
    s.image = (src.w == W && src.h == H) ? src : resize_bicubic_pil(src, W, H);
  }
  if (segmentation) {
    s.mask = (mw == W && mh == H) ? mask : resize_mask_nearest(mask.data(), mh, mw, H, W);
  } else if (!plain_resize) {
    s.image = transform_crop(src, ImageTransform::deit_eval(H));
    check_size(s.image, m, ex.image);
  }
  return s;
}

int64_t image_start_layer(const VimModel& m, int64_t start_layer) {
  if (start_layer >= 0) return start_layer;
  return int64_t(std::lround(15.0 * double(m.config().n_layer) / 24.0));
}

std::vector<float> pixel_relevance(const VimModel& m, const Tensor& pixels, int64_t cls, Method method,
                                   const ExplainOptions& base, std::vector<float>* patch_map_out) {
  const VimConfig& c = m.config();
  ExplainOptions o = base;
  o.start_layer = image_start_layer(m, base.start_layer);
  o.method = method;
  o.target = Target{};
  o.target.kind = Target::Kind::Class;
  o.target.cls = cls;
  const Explanation e = explain_image(m, pixels, o);
  const std::vector<float> pm = patch_map(m, e.relevance);
  if (patch_map_out) *patch_map_out = pm;
  return upsample_bilinear(pm.data(), int(c.grid_h), int(c.grid_w), int(c.img_h), int(c.img_w));
}

nlohmann::json perturbation_record(const VimModel& m, const VisionExample& ex, const Image& img, Method method,
                                   const VisionRunSpec& spec) {
  const VimConfig& c = m.config();
  if (ex.label < 0) throw Error(ex.image, "no ground-truth label (the perturbation test needs one)");
  check_size(img, m, ex.image);
  const Tensor pixels = to_pixels(img);
  const int64_t pred = argmax(m.forward(pixels).logits);
  ExplainOptions base = spec.base;
  base.seed = spec.base.seed + uint64_t(ex.index);
  std::vector<float> pm;
  const std::vector<float> rel = pixel_relevance(m, pixels, pred, method, base, &pm);
  const int64_t hw = c.img_h * c.img_w;
  std::vector<float> image01(size_t(3 * hw));
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t i = 0; i < hw; ++i) image01[size_t(ch * hw + i)] = float(img.px[size_t(i * 3 + ch)]) / 255.0f;
  const PixelClassifier classify = [&](const float* px) {
    Tensor t({3, c.img_h, c.img_w});
    std::copy(px, px + 3 * hw, t.data.begin());
    return int(argmax(m.forward(t).logits));
  };
  nlohmann::json j;
  j["kind"] = "perturbation";
  j["index"] = ex.index;
  j["image"] = ex.image;
  j["method"] = method_name(method);
  j["start_layer"] = image_start_layer(m, spec.base.start_layer);
  j["label"] = ex.label;
  j["pred"] = pred;
  PerturbationOptions po;
  po.steps = spec.steps;
  po.include_zero = spec.include_zero;
  po.height = c.img_h, po.width = c.img_w;
  for (int k = 0; k < 2; ++k) {
    if (!(k == 0 ? spec.positive : spec.negative)) continue;
    po.mode = k == 0 ? PerturbationMode::Positive : PerturbationMode::Negative;
    PerturbationAccumulator acc(po);
    j[k == 0 ? "positive" : "negative"] = acc.add(image01, rel, ex.label, classify);
    j["x"] = acc.fractions();
  }
  j["patch_map"] = pm;
  return j;
}

nlohmann::json segmentation_record(const VimModel& m, const VisionExample& ex, const VisionSample& s, Method method,
                                   const VisionRunSpec& spec) {
  const VimConfig& c = m.config();
  const int64_t H = c.img_h, W = c.img_w, hw = H * W;
  if (int64_t(s.mask.size()) != hw) throw Error(ex.image, "no mask of the model's size");
  const Tensor pixels = to_pixels(s.image);
  const int64_t pred = argmax(m.forward(pixels).logits);
  ExplainOptions base = spec.base;
  base.seed = spec.base.seed + uint64_t(ex.index);
  std::vector<float> pm;
  const std::vector<float> rel = pixel_relevance(m, pixels, pred, method, base, &pm);
  SegmentationOptions so;
  so.compat_unnormalised_ap = spec.compat_unnormalised_ap;
  const SegmentationImageStats st = segmentation_image_stats(rel.data(), s.mask.data(), H, W, so);
  // pointing game: the top patch (first maximum, row-major) and the share of its pixels inside the mask
  const int64_t top = int64_t(std::max_element(pm.begin(), pm.end()) - pm.begin());
  const int64_t P = c.patch, py = top / c.grid_w, px = top % c.grid_w;
  int64_t inside = 0, total = 0;
  for (int64_t y = py * P; y < std::min(H, (py + 1) * P); ++y)
    for (int64_t x = px * P; x < std::min(W, (px + 1) * P); ++x) inside += s.mask[size_t(y * W + x)], ++total;
  double pos_in = 0, pos_all = 0;
  int64_t mask_px = 0;
  for (int64_t i = 0; i < hw; ++i) {
    const double v = std::max(0.0f, rel[size_t(i)]);
    pos_all += v;
    if (s.mask[size_t(i)]) pos_in += v, ++mask_px;
  }
  nlohmann::json j;
  j["kind"] = "segmentation";
  j["index"] = ex.index;
  j["image"] = ex.image;
  j["method"] = method_name(method);
  j["start_layer"] = image_start_layer(m, spec.base.start_layer);
  if (ex.label >= 0) j["label"] = ex.label;
  j["pred"] = pred;
  j["compat_unnormalised_ap"] = spec.compat_unnormalised_ap;
  j["correct"] = st.correct;
  j["labelled"] = st.labelled;
  j["inter"] = {st.inter[0], st.inter[1]};
  j["union"] = {st.uni[0], st.uni[1]};
  j["ap"] = st.ap;
  j["f1"] = st.f1;
  j["top_patch"] = top;
  j["pointing"] = 2 * inside >= total ? 1 : 0;
  j["energy"] = pos_all > 0 ? pos_in / pos_all : 0.0;
  j["mask_fraction"] = double(mask_px) / double(hw);
  j["patch_map"] = pm;
  return j;
}

namespace {

using RecordFn = std::function<nlohmann::json(const VisionExample&, const VisionSample&, Method)>;

std::vector<nlohmann::json> run_vision(const VimModel& m, const VisionData& d, const VisionRunSpec& spec,
                                       bool segmentation, const RecordFn& make,
                                       const std::function<void()>& on_example) {
  if (spec.shards < 1 || spec.shard < 0 || spec.shard >= spec.shards)
    throw Error("--shard", "needs I/N with 0 <= I < N");
  if (spec.methods.empty()) throw Error("--method", "no method given");
  std::set<std::string> done;
  std::ofstream out;
  if (!spec.out.empty()) {
    if (spec.resume) {
      std::error_code ec;
      if (fs::exists(spec.out, ec)) {
        const std::string want = segmentation ? "segmentation" : "perturbation";
        done = completed_records(spec.out);  // cuts a truncated last line first
        const std::string have = result_file_kind(spec.out);
        if (!have.empty() && have != want)
          throw Error(spec.out, "holds " + have + " records; --resume continues a " + want + " run");
      }
    }
    out.open(spec.out, spec.resume ? std::ios::app : std::ios::trunc);
    if (!out) throw Error(spec.out, "cannot write");
  }
  std::vector<nlohmann::json> recs;
  for (const VisionExample& ex : d.examples) {
    if (ex.index % spec.shards != spec.shard) continue;
    std::vector<Method> todo;
    for (Method meth : spec.methods)
      if (!done.count(std::to_string(ex.index) + "/" + method_name(meth))) todo.push_back(meth);
    if (!todo.empty()) {
      const VisionSample s = load_vision_sample(m, d, ex, segmentation, spec.plain_resize);
      for (Method meth : todo) {
        nlohmann::json j = make(ex, s, meth);
        if (out.is_open()) {
          out << j.dump() << "\n";
          out.flush();
          if (!out) throw Error(spec.out, "cannot write");
        }
        recs.push_back(std::move(j));
      }
    }
    if (on_example) on_example();
  }
  return recs;
}

}  // namespace

std::vector<nlohmann::json> run_perturbation(const VimModel& m, const VisionData& d, const VisionRunSpec& spec,
                                             const std::function<void()>& on_example) {
  if (!spec.positive && !spec.negative) throw Error("--mode", "neither positive nor negative");
  {  // validates the steps before any work
    PerturbationOptions po;
    po.steps = spec.steps;
    try {
      PerturbationAccumulator acc(po);
    } catch (const Error& e) {
      throw Error("--steps", "fractions must lie in [0, 1] and increase");
    }
  }
  return run_vision(m, d, spec, false, [&](const VisionExample& ex, const VisionSample& s, Method meth) {
    return perturbation_record(m, ex, s.image, meth, spec);
  }, on_example);
}

std::vector<nlohmann::json> run_segmentation(const VimModel& m, const VisionData& d, const VisionRunSpec& spec,
                                             const std::function<void()>& on_example) {
  return run_vision(m, d, spec, true, [&](const VisionExample& ex, const VisionSample& s, Method meth) {
    return segmentation_record(m, ex, s, meth, spec);
  }, on_example);
}

std::string record_kind(const nlohmann::json& j) {
  if (!j.is_object()) return "";
  if (j.contains("kind") && j["kind"].is_string()) {
    const std::string k = j["kind"].get<std::string>();
    if (k == "perturbation" || k == "segmentation") return k;
    return "";
  }
  if (j.contains("delta_af")) return "flipping";
  return "";
}

std::string result_file_kind(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path, "cannot open");
  std::string l;
  int64_t line = 0;
  while (std::getline(f, l)) {
    ++line;
    if (l.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string k = record_kind(nlohmann::json::parse(l, nullptr, false));
    if (k.empty()) throw Error(path + ":" + std::to_string(line), "not a result record of ssmx eval");
    return k;
  }
  return "";
}

std::vector<nlohmann::json> read_vision_records(const std::vector<std::string>& paths, const std::string& kind) {
  std::map<std::pair<int64_t, std::string>, nlohmann::json> by_key;
  for (const auto& path : paths) {
    std::ifstream f(path);
    if (!f) throw Error(path, "cannot open");
    std::string l;
    int64_t line = 0;
    while (std::getline(f, l)) {
      ++line;
      if (l.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = path + ":" + std::to_string(line);
      nlohmann::json j = nlohmann::json::parse(l, nullptr, false);
      const std::string k = record_kind(j);
      if (k.empty()) throw Error(where, "not a result record of ssmx eval");
      if (k != kind) throw Error(where, "a " + k + " record among " + kind + " records (merge one kind at a time)");
      if (!j.contains("index") || !j["index"].is_number_integer() || !j.contains("method") || !j["method"].is_string())
        throw Error(where, "record without index or method");
      if (kind == "perturbation" && (!j.contains("x") || (!j.contains("positive") && !j.contains("negative"))))
        throw Error(where, "perturbation record without curves");
      if (kind == "segmentation" && !(j.contains("correct") && j.contains("inter") && j.contains("ap")))
        throw Error(where, "segmentation record without statistics");
      const auto key = std::make_pair(j["index"].get<int64_t>(), j["method"].get<std::string>());
      auto it = by_key.find(key);
      if (it != by_key.end()) {
        bool same = true;
        for (const char* fld : kind == "perturbation" ? std::vector<const char*>{"positive", "negative", "pred", "x"}
                                                      : std::vector<const char*>{"correct", "inter", "union", "ap",
                                                                                 "f1", "pointing", "energy"})
          if (it->second.value(fld, nlohmann::json()) != j.value(fld, nlohmann::json())) same = false;
        if (!same)
          throw Error(where, "image " + std::to_string(key.first) + " / " + key.second +
                                 " differs from an earlier record of it");
        continue;
      }
      by_key.emplace(key, std::move(j));
    }
  }
  std::vector<nlohmann::json> out;
  for (auto& [k, j] : by_key) out.push_back(std::move(j));
  return out;
}

// ---- perturbation summary ----

std::vector<PerturbationSummary> summarize_perturbation(const std::vector<nlohmann::json>& records) {
  std::vector<PerturbationSummary> out;
  std::vector<std::vector<int64_t>> pos_correct, neg_correct;
  for (const auto& j : records) {
    const std::string meth = j["method"].get<std::string>();
    size_t k = 0;
    while (k < out.size() && out[k].method != meth) ++k;
    const auto x = j["x"].get<std::vector<double>>();
    if (k == out.size()) {
      PerturbationSummary s;
      s.method = meth;
      s.x = x;
      s.has_positive = j.contains("positive");
      s.has_negative = j.contains("negative");
      out.push_back(s);
      pos_correct.emplace_back(x.size(), 0);
      neg_correct.emplace_back(x.size(), 0);
    }
    PerturbationSummary& s = out[k];
    const std::string where = "image " + std::to_string(j["index"].get<int64_t>()) + " / " + meth;
    if (x != s.x) throw Error(where, "other perturbation fractions than the other records of " + meth);
    if (j.contains("positive") != s.has_positive || j.contains("negative") != s.has_negative)
      throw Error(where, "other perturbation modes than the other records of " + meth);
    const int label = j["label"].get<int>();
    for (int mode = 0; mode < 2; ++mode) {
      const char* name = mode == 0 ? "positive" : "negative";
      if (!j.contains(name)) continue;
      const auto preds = j[name].get<std::vector<int>>();
      if (preds.size() != x.size()) throw Error(where, std::string(name) + " has another length than x");
      auto& cnt = mode == 0 ? pos_correct[k] : neg_correct[k];
      for (size_t i = 0; i < preds.size(); ++i) cnt[i] += preds[i] == label;
    }
    s.images++;
  }
  for (size_t k = 0; k < out.size(); ++k) {
    PerturbationSummary& s = out[k];
    auto acc = [&](const std::vector<int64_t>& cnt) {
      std::vector<double> a(cnt.size());
      for (size_t i = 0; i < a.size(); ++i) a[i] = 100.0 * double(cnt[i]) / double(std::max<int64_t>(s.images, 1));
      return a;
    };
    if (s.has_positive) s.positive_accuracy = acc(pos_correct[k]), s.positive_auc = trapezoid(s.x, s.positive_accuracy);
    if (s.has_negative) s.negative_accuracy = acc(neg_correct[k]), s.negative_auc = trapezoid(s.x, s.negative_accuracy);
  }
  return out;
}

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

std::string perturbation_markdown(const std::vector<PerturbationSummary>& s) {
  std::string o = "| method | positive AUC ↓ | negative AUC ↑ | images |\n|---|---|---|---|\n";
  for (const auto& r : s)
    o += "| " + r.method + " | " + (r.has_positive ? fmt("%.2f", r.positive_auc) : "—") + " | " +
         (r.has_negative ? fmt("%.2f", r.negative_auc) : "—") + " | " + std::to_string(r.images) + " |\n";
  if (s.empty()) return o;
  o += "\nTop-1 accuracy (%) per fraction of pixels removed:\n\n| method | mode |";
  std::string sep = "|---|---|";
  for (double x : s[0].x) o += " " + fmt("%.2g", x) + " |", sep += "---|";
  o += "\n" + sep + "\n";
  for (const auto& r : s)
    for (int mode = 0; mode < 2; ++mode) {
      if (!(mode == 0 ? r.has_positive : r.has_negative)) continue;
      o += "| " + r.method + " | " + (mode == 0 ? "positive" : "negative") + " |";
      for (double a : mode == 0 ? r.positive_accuracy : r.negative_accuracy) o += " " + fmt("%.1f", a) + " |";
      o += "\n";
    }
  return o;
}

std::string perturbation_csv(const std::vector<PerturbationSummary>& s) {
  std::string o = "method,mode,images,auc";
  if (!s.empty())
    for (double x : s[0].x) o += ",acc@" + fmt("%.17g", x);
  o += "\n";
  for (const auto& r : s)
    for (int mode = 0; mode < 2; ++mode) {
      if (!(mode == 0 ? r.has_positive : r.has_negative)) continue;
      o += r.method + "," + (mode == 0 ? "positive" : "negative") + "," + std::to_string(r.images) + "," +
           fmt("%.17g", mode == 0 ? r.positive_auc : r.negative_auc);
      for (double a : mode == 0 ? r.positive_accuracy : r.negative_accuracy) o += "," + fmt("%.17g", a);
      o += "\n";
    }
  return o;
}

nlohmann::json perturbation_json(const std::vector<PerturbationSummary>& s) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : s) {
    nlohmann::json e = {{"method", r.method}, {"images", r.images}, {"fractions", r.x}};
    if (r.has_positive) e["positive"] = {{"auc", r.positive_auc}, {"accuracy", r.positive_accuracy}};
    if (r.has_negative) e["negative"] = {{"auc", r.negative_auc}, {"accuracy", r.negative_accuracy}};
    j.push_back(e);
  }
  return j;
}

void plot_perturbation(const std::vector<PerturbationSummary>& s, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir, "cannot create: " + ec.message());
  for (int mode = 0; mode < 2; ++mode) {
    std::vector<PlotSeries> ps;
    for (const auto& r : s)
      if (mode == 0 ? r.has_positive : r.has_negative)
        ps.push_back({r.method, r.x, mode == 0 ? r.positive_accuracy : r.negative_accuracy});
    if (ps.empty()) continue;
    plot_series(ps, mode == 0 ? "positive perturbation (most relevant first)" : "negative perturbation (least relevant first)",
                "fraction of pixels removed", "top-1 accuracy (%)",
                dir + (mode == 0 ? "/perturbation_positive" : "/perturbation_negative"));
  }
}

// ---- segmentation summary ----

std::vector<SegmentationSummary> summarize_segmentation(const std::vector<nlohmann::json>& records) {
  std::vector<SegmentationSummary> out;
  std::vector<SegmentationAccumulator> accs;
  for (const auto& j : records) {
    const std::string meth = j["method"].get<std::string>();
    size_t k = 0;
    while (k < out.size() && out[k].method != meth) ++k;
    const bool compat = j.value("compat_unnormalised_ap", false);
    if (k == out.size()) {
      SegmentationSummary s;
      s.method = meth;
      s.compat_unnormalised_ap = compat;
      out.push_back(s);
      accs.emplace_back(SegmentationOptions{compat});
    }
    if (compat != out[k].compat_unnormalised_ap)
      throw Error("image " + std::to_string(j["index"].get<int64_t>()) + " / " + meth,
                  "records with and without compat_unnormalised_ap");
    SegmentationImageStats st;
    st.correct = j["correct"].get<int64_t>();
    st.labelled = j["labelled"].get<int64_t>();
    for (int c = 0; c < 2; ++c) st.inter[c] = j["inter"][size_t(c)].get<int64_t>(), st.uni[c] = j["union"][size_t(c)].get<int64_t>();
    st.ap = j["ap"].get<double>();
    st.f1 = j["f1"].get<double>();
    accs[k].add(st);
    out[k].pointing += j.value("pointing", 0.0);
    out[k].energy += j.value("energy", 0.0);
    out[k].mask_fraction += j.value("mask_fraction", 0.0);
  }
  for (size_t k = 0; k < out.size(); ++k) {
    out[k].r = accs[k].result();
    const double n = double(std::max<int64_t>(out[k].r.images, 1));
    out[k].pointing /= n, out[k].energy /= n, out[k].mask_fraction /= n;
  }
  return out;
}

std::string segmentation_markdown(const std::vector<SegmentationSummary>& s) {
  std::string o = "| method | pixel acc ↑ | mIoU ↑ | mAP ↑ | mF1 ↑ | pointing ↑ | energy ↑ | images |\n"
                  "|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : s)
    o += "| " + r.method + " | " + fmt("%.2f", 100 * r.r.pixel_accuracy) + " | " + fmt("%.2f", 100 * r.r.miou) + " | " +
         fmt("%.2f", 100 * r.r.map) + " | " + fmt("%.2f", 100 * r.r.mf1) + " | " + fmt("%.2f", 100 * r.pointing) +
         " | " + fmt("%.2f", 100 * r.energy) + " | " + std::to_string(r.r.images) + " |\n";
  return o;
}

std::string segmentation_csv(const std::vector<SegmentationSummary>& s) {
  std::string o = "method,images,pixel_accuracy,iou_bg,iou_fg,miou,map,mf1,pointing,energy,mask_fraction,"
                  "compat_unnormalised_ap\n";
  for (const auto& r : s) {
    o += r.method + "," + std::to_string(r.r.images);
    for (double v : {r.r.pixel_accuracy, r.r.iou_bg, r.r.iou_fg, r.r.miou, r.r.map, r.r.mf1, r.pointing, r.energy,
                     r.mask_fraction})
      o += "," + fmt("%.17g", v);
    o += std::string(",") + (r.compat_unnormalised_ap ? "true" : "false") + "\n";
  }
  return o;
}

nlohmann::json segmentation_json(const std::vector<SegmentationSummary>& s) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : s)
    j.push_back({{"method", r.method}, {"images", r.r.images}, {"pixel_accuracy", r.r.pixel_accuracy},
                 {"iou_bg", r.r.iou_bg}, {"iou_fg", r.r.iou_fg}, {"miou", r.r.miou}, {"map", r.r.map},
                 {"mf1", r.r.mf1}, {"pointing", r.pointing}, {"energy", r.energy},
                 {"mask_fraction", r.mask_fraction}, {"compat_unnormalised_ap", r.compat_unnormalised_ap}});
  return j;
}

std::string pointing_markdown(const std::vector<SegmentationSummary>& s) {
  std::string o = "| method | pointing game ↑ | energy in mask ↑ | mask share | images |\n|---|---|---|---|---|\n";
  for (const auto& r : s)
    o += "| " + r.method + " | " + fmt("%.3f", r.pointing) + " | " + fmt("%.3f", r.energy) + " | " +
         fmt("%.3f", r.mask_fraction) + " | " + std::to_string(r.r.images) + " |\n";
  return o;
}

}  // namespace ssmx

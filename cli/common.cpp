#include "common.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include "api/explain_report.h"
#include "core/error.h"
#include "core/runtime.h"
#include "io/image.h"
#include "io/npy.h"

namespace ssmx::cli {

Loaded load_model(const std::string& path, bool need_model) {
  const auto t0 = std::chrono::steady_clock::now();
  Loaded m;
  m.ck = open_checkpoint(path);
  if (!m.ck.tokenizer_path.empty()) m.tok = Tokenizer::from_file(m.ck.tokenizer_path);
  if (need_model) {
    if (detect_family(m.ck) == "vim") m.vim = VimModel::load(m.ck);
    else m.model = load_causal_lm(m.ck);
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  log_verbose("loaded " + path + " (" + m.ck.layout + ", " + std::to_string(m.ck.tensors.size()) + " tensors) in " +
              std::to_string(int(ms)) + " ms");
  return m;
}

void add_image_options(CLI::App* sub, ImageSpec& in) {
  auto* a = sub->add_option("--image", in.image, "Input image (JPEG or PNG) for a Vision Mamba");
  auto* b = sub->add_option("--pixels", in.pixels, "Preprocessed input, float32 [3, H, W] .npy (bit-exact comparisons)");
  a->excludes(b);
  b->excludes(a);
  sub->add_option("--transform", in.transform,
                  "Image transform: deit (shorter side to H/0.875, bicubic; centre crop) or resize (H×W, no crop)")
      ->capture_default_str();
}

LoadedImage load_image_input(const ImageSpec& in, const VimModel& m) {
  const VimConfig& c = m.config();
  LoadedImage out;
  if (!in.pixels.empty()) {
    out.pixels = load_pixels_npy(in.pixels, int(c.img_h), int(c.img_w));
    return out;
  }
  if (in.image.empty()) throw Error("input", "give --image FILE or --pixels FILE.npy for a Vision Mamba");
  ImageTransform t;
  if (in.transform == "deit") t = ImageTransform::deit_eval(int(c.img_h));
  else if (in.transform == "resize") t.resize = 0, t.crop = 0;
  else throw Error("--transform", "unknown transform '" + in.transform + "' (deit or resize)");
  if (in.transform == "resize") {
    Image src = load_image_rgb(in.image);
    Image sized = resize_bicubic_pil(src, int(c.img_w), int(c.img_h));
    out.pixels = image_to_tensor(sized, t.mean, t.std);
    out.crop = std::move(sized);
  } else {
    PreparedImage p = load_and_preprocess(in.image, t);
    out.pixels = std::move(p.pixels);
    out.crop = std::move(p.crop);
  }
  if (out.pixels.shape != std::vector<int64_t>{3, c.img_h, c.img_w})
    throw Error(in.image, "the transform gave " + shape_str(out.pixels.shape) + ", not the model's [3, " +
                              std::to_string(c.img_h) + ", " + std::to_string(c.img_w) +
                              "] (DeiT does not resize inputs of 32 pixels or less); use --transform resize");
  return out;
}

void add_input_options(CLI::App* sub, InputSpec& in) {
  auto* t = sub->add_option("--text", in.text, "Input text (encoded with the model's tokenizer.json)");
  auto* i = sub->add_option("--ids", in.ids, "Input token ids, comma-separated (e.g. 1,2,3)");
  t->excludes(i);
  i->excludes(t);
}

std::vector<int32_t> parse_id_list(const std::string& s) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    std::string item = s.substr(pos, end - pos);
    const size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    item = a == std::string::npos ? "" : item.substr(a, b - a + 1);
    if (item.empty() || item.size() > 10 || item.find_first_not_of("0123456789") != std::string::npos)
      throw Error("--ids", "'" + item + "' is not a token id (expected comma-separated non-negative integers)");
    const long long v = std::stoll(item);
    if (v > 2147483647LL) throw Error("--ids", "token id " + item + " is too large");
    ids.push_back(int32_t(v));
    pos = end + 1;
  }
  return ids;
}

std::vector<int32_t> resolve_input(const Loaded& m, const InputSpec& in, const std::string& model_path) {
  if (!in.ids.empty()) return parse_id_list(in.ids);
  if (in.text.empty()) throw Error("input", "give --text STR or --ids 1,2,3");
  if (!m.tok) throw Error(model_path, "no tokenizer.json next to the weights; pass token ids with --ids");
  std::vector<int32_t> ids = m.tok->encode_ids(in.text);
  if (ids.empty()) throw Error("--text", "the text encodes to no tokens");
  return ids;
}

void write_npy_atomic(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    write_npy(tmp, data, shape);
  } catch (const Error&) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw Error(path, "cannot write");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw Error(path, "cannot write: " + ec.message());
  }
}

std::string printable_token(const std::string& s) { return printable_token_text(s); }

}  // namespace ssmx::cli

#include "io/image.h"

// PIL is built without floating-point contraction; the coefficient arithmetic below must round exactly like it,
// so no fused multiply-adds in this file even with -march=native.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <vector>

#include "core/error.h"
#include "io/npy.h"

// The one stb_image implementation of the project.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
// stb's own limit stays above ours so that decode_image_rgb reports oversized images with their size.
#define STBI_MAX_DIMENSIONS (1 << 20)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

static_assert(ssmx::kMaxImageSide < STBI_MAX_DIMENSIONS);

namespace ssmx {

// ---------------------------------------------------------------------------------------------------------------
// Decoding

namespace {

bool is_jpeg(const uint8_t* d, size_t n) { return n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF; }
bool is_png(const uint8_t* d, size_t n) { return n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0; }

// stb_image decodes a JPEG cut short inside its entropy-coded data without complaint (the missing bits read as
// zeros), while PIL refuses it ("image file is truncated"). Byte stuffing keeps 0xFF 0xD9 (end of image) and
// 0xFF 0xDA (start of scan) out of entropy-coded data, so a complete file has an EOI marker after its last SOS.
bool jpeg_has_eoi_after_last_scan(const uint8_t* d, size_t n) {
  size_t last_sos = 0, last_eoi = 0;
  bool sos = false, eoi = false;
  for (size_t i = 0; i + 1 < n; ++i) {
    if (d[i] != 0xFF) continue;
    if (d[i + 1] == 0xDA) last_sos = i, sos = true;
    if (d[i + 1] == 0xD9) last_eoi = i, eoi = true;
  }
  return sos && eoi && last_eoi > last_sos;
}

// PNG: every chunk must fit in the file and the chunks must reach IEND. stb_image can decode a file cut after
// its last complete IDAT chunk; a file cut anywhere is reported as truncated here, before decoding.
bool png_chunks_fit(const uint8_t* d, size_t n, std::string& why) {
  size_t p = 8;
  bool iend = false;
  while (p + 8 <= n) {
    const uint32_t len = uint32_t(d[p]) << 24 | uint32_t(d[p + 1]) << 16 | uint32_t(d[p + 2]) << 8 | d[p + 3];
    const bool is_iend = std::memcmp(d + p + 4, "IEND", 4) == 0;
    if (size_t(len) + 12 > n - p) {
      why = "truncated PNG (chunk '" + std::string(reinterpret_cast<const char*>(d + p + 4), 4) + "' runs past the end of the file)";
      return false;
    }
    p += size_t(len) + 12;
    if (is_iend) {
      iend = true;
      break;
    }
  }
  if (!iend) {
    why = "truncated PNG (no IEND chunk)";
    return false;
  }
  return true;
}

}  // namespace

Image decode_image_rgb(const uint8_t* data, size_t size, const std::string& where) {
  if (size == 0) throw Error(where, "empty file, not an image");
  if (size > kMaxImageFileBytes) throw Error(where, "image file is larger than " + std::to_string(kMaxImageFileBytes >> 20) + " MiB");
  const bool jpeg = is_jpeg(data, size), png = is_png(data, size);
  if (!jpeg && !png) throw Error(where, "not a JPEG or PNG file (unrecognised signature)");
  const char* kind = jpeg ? "JPEG" : "PNG";
  int w = 0, h = 0, comp = 0;
  // Header only: nothing is allocated for pixels yet.
  if (!stbi_info_from_memory(data, int(size), &w, &h, &comp)) {
    const char* r = stbi_failure_reason();
    throw Error(where, std::string("cannot read the ") + kind + " header (" + (r ? r : "unknown reason") + ")");
  }
  if (w <= 0 || h <= 0) throw Error(where, std::string(kind) + " image has no pixels");
  if (w > kMaxImageSide || h > kMaxImageSide)
    throw Error(where, std::string(kind) + " image is " + std::to_string(w) + "x" + std::to_string(h) +
                           " pixels; the limit is " + std::to_string(kMaxImageSide) + " on each side");
  if (png) {
    std::string why;
    if (!png_chunks_fit(data, size, why)) throw Error(where, why);
    if (comp <= 2 && stbi_is_16_bit_from_memory(data, int(size)))
      throw Error(where, "16-bit greyscale PNG is not supported (PIL converts it to RGB by clipping, not scaling); convert it to 8 bits");
  } else if (!jpeg_has_eoi_after_last_scan(data, size)) {
    throw Error(where, "truncated JPEG (no end-of-image marker after the last scan)");
  }
  int dw = 0, dh = 0, dc = 0;
  stbi_uc* px = stbi_load_from_memory(data, int(size), &dw, &dh, &dc, 3);
  if (!px) {
    const char* r = stbi_failure_reason();
    throw Error(where, std::string("cannot decode the ") + kind + " image (" + (r ? r : "unknown reason") + ")");
  }
  if (dw != w || dh != h) {
    stbi_image_free(px);
    throw Error(where, std::string(kind) + " header and decoded size disagree");
  }
  Image img;
  img.w = w, img.h = h;
  img.px.assign(px, px + size_t(w) * size_t(h) * 3);
  stbi_image_free(px);
  return img;
}

Image load_image_rgb(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error(path, "cannot open the image file");
  const std::streamoff n = f.tellg();
  if (n < 0) throw Error(path, "cannot read the image file");
  if (size_t(n) > kMaxImageFileBytes) throw Error(path, "image file is larger than " + std::to_string(kMaxImageFileBytes >> 20) + " MiB");
  std::vector<uint8_t> bytes(static_cast<size_t>(n));
  f.seekg(0);
  if (n > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), n)) throw Error(path, "cannot read the image file");
  return decode_image_rgb(bytes.data(), bytes.size(), path);
}

// ---------------------------------------------------------------------------------------------------------------
// PIL's bicubic resampling

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // fixed-point fraction bits of the 8-bit path

double cubic_kernel(double x) {  // Keys' cubic convolution with a = -0.5
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output position along one axis: the first input index, the number of taps, and `taps` fixed-point
// weights (zero past the number of taps).
struct AxisWeights {
  int taps = 0;
  std::vector<int> first, count;
  std::vector<int32_t> w;
};

AxisWeights axis_weights(int in_size, int out_size) {
  // Box (0, in_size) as float, as PIL passes it.
  const double scale = double(float(in_size) - 0.0f) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  AxisWeights a;
  a.taps = int(std::ceil(support)) * 2 + 1;
  a.first.resize(size_t(out_size));
  a.count.resize(size_t(out_size));
  a.w.assign(size_t(out_size) * size_t(a.taps), 0);
  std::vector<double> k(size_t(a.taps));
  const double inv = 1.0 / filterscale;
  for (int o = 0; o < out_size; ++o) {
    const double center = 0.0 + (o + 0.5) * scale;
    int lo = int(center - support + 0.5);
    if (lo < 0) lo = 0;
    int hi = int(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int n = hi - lo;
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
      const double d = (i + lo - center + 0.5) * inv;
      k[size_t(i)] = cubic_kernel(d);
      sum += k[size_t(i)];
    }
    int32_t* dst = &a.w[size_t(o) * size_t(a.taps)];
    for (int i = 0; i < n; ++i) {
      double v = k[size_t(i)];
      if (sum != 0.0) v /= sum;
      dst[i] = v < 0 ? int32_t(-0.5 + v * (1 << kPrecisionBits)) : int32_t(0.5 + v * (1 << kPrecisionBits));
    }
    a.first[size_t(o)] = lo;
    a.count[size_t(o)] = n;
  }
  return a;
}

inline uint8_t clip_fixed(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;  // arithmetic shift, like PIL's lookup index
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

}  // namespace

Image resize_bicubic_pil(const Image& src, int out_w, int out_h) {
  if (src.w <= 0 || src.h <= 0 || out_w <= 0 || out_h <= 0)
    throw Error("resize", "cannot resize a " + std::to_string(src.w) + "x" + std::to_string(src.h) + " image to " +
                              std::to_string(out_w) + "x" + std::to_string(out_h));
  if (out_w > kMaxImageSide || out_h > kMaxImageSide) throw Error("resize", "output size exceeds the image size limit");
  Image cur = src;
  constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);
  if (out_w != src.w) {  // horizontal pass, rounded to uint8
    const AxisWeights a = axis_weights(src.w, out_w);
    Image tmp;
    tmp.w = out_w, tmp.h = cur.h;
    tmp.px.resize(size_t(out_w) * size_t(cur.h) * 3);
    for (int y = 0; y < cur.h; ++y) {
      const uint8_t* row = &cur.px[size_t(y) * size_t(cur.w) * 3];
      uint8_t* out = &tmp.px[size_t(y) * size_t(out_w) * 3];
      for (int x = 0; x < out_w; ++x) {
        const int32_t* k = &a.w[size_t(x) * size_t(a.taps)];
        const uint8_t* p = row + size_t(a.first[size_t(x)]) * 3;
        int32_t s0 = kHalf, s1 = kHalf, s2 = kHalf;
        for (int i = 0; i < a.count[size_t(x)]; ++i, p += 3) s0 += p[0] * k[i], s1 += p[1] * k[i], s2 += p[2] * k[i];
        out[size_t(x) * 3] = clip_fixed(s0), out[size_t(x) * 3 + 1] = clip_fixed(s1), out[size_t(x) * 3 + 2] = clip_fixed(s2);
      }
    }
    cur = std::move(tmp);
  }
  if (out_h != src.h) {  // vertical pass
    const AxisWeights a = axis_weights(src.h, out_h);
    Image tmp;
    tmp.w = cur.w, tmp.h = out_h;
    tmp.px.resize(size_t(cur.w) * size_t(out_h) * 3);
    const size_t stride = size_t(cur.w) * 3;
    for (int y = 0; y < out_h; ++y) {
      const int32_t* k = &a.w[size_t(y) * size_t(a.taps)];
      const uint8_t* base = &cur.px[size_t(a.first[size_t(y)]) * stride];
      uint8_t* out = &tmp.px[size_t(y) * stride];
      for (size_t c = 0; c < stride; ++c) {
        int32_t s = kHalf;
        const uint8_t* p = base + c;
        for (int i = 0; i < a.count[size_t(y)]; ++i, p += stride) s += *p * k[i];
        out[c] = clip_fixed(s);
      }
    }
    cur = std::move(tmp);
  }
  return cur;
}

// ---------------------------------------------------------------------------------------------------------------
// torchvision transforms

std::pair<int, int> shorter_side_size(int w, int h, int size) {
  if (w <= 0 || h <= 0 || size <= 0) throw Error("resize", "invalid sizes");
  const int shorter = std::min(w, h), longer = std::max(w, h);
  // Python: int(size * long / short) — the int product divided as a correctly rounded double, truncated.
  const int new_long = int(double(int64_t(size) * longer) / double(shorter));
  return w <= h ? std::pair{size, new_long} : std::pair{new_long, size};
}

namespace {
int round_half_even(double v) { return int(std::nearbyint(v)); }  // default rounding mode: ties to even
}  // namespace

Image center_crop(const Image& src, int crop_w, int crop_h) {
  if (crop_w <= 0 || crop_h <= 0) throw Error("center crop", "crop size must be positive");
  Image img = src;
  if (crop_w > img.w || crop_h > img.h) {  // torchvision pads with zeros first
    const int left = crop_w > img.w ? (crop_w - img.w) / 2 : 0;
    const int top = crop_h > img.h ? (crop_h - img.h) / 2 : 0;
    const int right = crop_w > img.w ? (crop_w - img.w + 1) / 2 : 0;
    const int bottom = crop_h > img.h ? (crop_h - img.h + 1) / 2 : 0;
    Image padded(img.w + left + right, img.h + top + bottom, Rgb{0, 0, 0});
    padded.blit(img, left, top);
    img = std::move(padded);
    if (img.w == crop_w && img.h == crop_h) return img;
  }
  const int top = round_half_even((img.h - crop_h) / 2.0);
  const int left = round_half_even((img.w - crop_w) / 2.0);
  Image out;
  out.w = crop_w, out.h = crop_h;
  out.px.resize(size_t(crop_w) * size_t(crop_h) * 3);
  for (int y = 0; y < crop_h; ++y)
    std::memcpy(&out.px[size_t(y) * size_t(crop_w) * 3], &img.px[(size_t(y + top) * size_t(img.w) + size_t(left)) * 3],
                size_t(crop_w) * 3);
  return out;
}

ImageTransform ImageTransform::deit_eval(int input_size) {
  if (input_size <= 0) throw Error("image transform", "input size must be positive");
  ImageTransform t;
  if (input_size <= 32) {
    t.resize = 0, t.crop = 0;
  } else {
    t.resize = int(double(input_size) / 0.875);  // DeiT: int(args.input_size / args.eval_crop_ratio)
    t.crop = input_size;
  }
  return t;
}

Image transform_crop(const Image& src, const ImageTransform& t) {
  Image img = src;
  if (t.resize > 0) {
    const auto [w, h] = shorter_side_size(img.w, img.h, t.resize);
    if (w != img.w || h != img.h) img = resize_bicubic_pil(img, w, h);
  }
  if (t.crop > 0 && (img.w != t.crop || img.h != t.crop)) img = center_crop(img, t.crop, t.crop);
  return img;
}

Tensor image_to_tensor(const Image& img, const std::array<float, 3>& mean, const std::array<float, 3>& std) {
  Tensor t({3, img.h, img.w});
  const size_t hw = size_t(img.h) * size_t(img.w);
  for (int c = 0; c < 3; ++c) {
    float* dst = t.ptr() + size_t(c) * hw;
    for (size_t i = 0; i < hw; ++i) {
      const float v = float(img.px[i * 3 + size_t(c)]) / 255.0f;  // ToTensor
      dst[i] = (v - mean[size_t(c)]) / std[size_t(c)];           // Normalize (sub_, div_)
    }
  }
  return t;
}

PreparedImage preprocess_image(const Image& src, const ImageTransform& t) {
  PreparedImage p;
  p.crop = transform_crop(src, t);
  p.pixels = image_to_tensor(p.crop, t.mean, t.std);
  return p;
}

PreparedImage load_and_preprocess(const std::string& path, const ImageTransform& t) {
  return preprocess_image(load_image_rgb(path), t);
}

Tensor load_pixels_npy(const std::string& path, int expect_h, int expect_w) {
  Tensor t = read_npy_f32(path, /*allow_f64=*/false);
  if (t.shape.size() == 4 && t.shape[0] == 1) t.shape.erase(t.shape.begin());
  if (t.shape.size() != 3 || t.shape[0] != 3 || t.shape[1] <= 0 || t.shape[2] <= 0)
    throw Error(path, "pixels must have shape [3, H, W] (or [1, 3, H, W]), got " + shape_str(t.shape));
  if ((expect_h > 0 && t.shape[1] != expect_h) || (expect_w > 0 && t.shape[2] != expect_w))
    throw Error(path, "pixels have shape " + shape_str(t.shape) + " but the model needs [3, " + std::to_string(expect_h) +
                          ", " + std::to_string(expect_w) + "]");
  for (size_t i = 0; i < t.data.size(); ++i)
    if (!std::isfinite(t.data[i])) throw Error(path, "pixels contain a non-finite value at flat index " + std::to_string(i));
  return t;
}

}  // namespace ssmx

// ssmx/io/image.h — image files in, model pixels out: JPEG/PNG decoding and the DeiT/Vim evaluation transform.
//
// Decoding uses stb_image (Debian libstb-dev) and always yields 8-bit RGB: grey is replicated, alpha is dropped
// without compositing and palettes are expanded — what PIL's Image.convert("RGB") does, which is how torchvision's
// ImageFolder loader opens every file. The transform is the DeiT `build_transform(is_train=False)` pipeline that
// Vision Mamba evaluates with:
//
//   Resize(int(input/0.875), bicubic) → CenterCrop(input) → ToTensor → Normalize(ImageNet mean, std)
//
// reproduced bit for bit: the resize is PIL 9.4's separable bicubic resampling (a = -0.5, support scaled by the
// downscale factor, fixed-point coefficients with 22 fractional bits, uint8 rounding and clipping after the
// horizontal pass and after the vertical pass), the output size is torchvision's int(size * long / short), the crop
// offsets are Python's round-half-to-even of (in - out) / 2, and ToTensor/Normalize are the same float32
// operations in the same order. See docs/images.md for the measured agreement with PIL.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "core/rgb_image.h"
#include "core/tensor.h"

namespace ssmx {

// Largest accepted width or height; checked from the file header before any pixel memory is allocated.
inline constexpr int kMaxImageSide = 16384;
// Largest accepted file (bytes).
inline constexpr size_t kMaxImageFileBytes = size_t(512) << 20;

// Decodes a JPEG or PNG file (any stb_image format is accepted, but only those two are tested) into 8-bit RGB.
// Throws ssmx::Error(path, reason) for missing, empty, truncated, corrupt, unsupported or oversized files.
Image load_image_rgb(const std::string& path);
// The same from bytes in memory; `where` names the source in error messages.
Image decode_image_rgb(const uint8_t* data, size_t size, const std::string& where);

// PIL 9.4 Image.resize((out_w, out_h), Image.BICUBIC) on an RGB image, bit-exact.
Image resize_bicubic_pil(const Image& src, int out_w, int out_h);

// torchvision Resize(size) with an int size: the shorter side becomes `size`, the longer int(size * long / short).
// Returns {width, height}.
std::pair<int, int> shorter_side_size(int w, int h, int size);

// torchvision CenterCrop((crop_h, crop_w)): zero padding when the crop is larger than the image (split as
// torchvision does), then offsets round((H - crop_h) / 2), round((W - crop_w) / 2) with ties to even.
Image center_crop(const Image& src, int crop_w, int crop_h);

struct ImageTransform {
  int resize = 256;  // target of the shorter side; 0 = no resize
  int crop = 224;    // square centre crop; 0 = no crop
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};

  // DeiT's build_transform for a model of input_size pixels: resize int(input_size / 0.875), crop input_size
  // (224 → 256/224, 64 → 73/64). DeiT skips resize and crop entirely for input_size <= 32 (its `resize_im`), and so
  // does this: such images must already have the model's size.
  static ImageTransform deit_eval(int input_size);
};

// Resize and crop only: the un-normalised uint8 image the model sees (what overlays are drawn on).
Image transform_crop(const Image& src, const ImageTransform& t);
// ToTensor + Normalize of an RGB image: float32 [3, H, W], (px / 255 - mean[c]) / std[c] in float32.
Tensor image_to_tensor(const Image& img, const std::array<float, 3>& mean, const std::array<float, 3>& std);

struct PreparedImage {
  Image crop;     // resized and cropped RGB (H, W, 3) uint8
  Tensor pixels;  // normalised float32 [3, H, W]
};
PreparedImage preprocess_image(const Image& src, const ImageTransform& t);
// load_image_rgb + preprocess_image.
PreparedImage load_and_preprocess(const std::string& path, const ImageTransform& t);

// A float32 ('<f4', C order) .npy holding normalised pixels of shape [3, H, W] (or [1, 3, H, W], squeezed to
// [3, H, W]). expect_h / expect_w > 0 require that size. Rejects other dtypes, shapes, non-finite values and files
// whose size does not match the header (checked before allocating). Throws ssmx::Error(path, reason).
Tensor load_pixels_npy(const std::string& path, int expect_h = 0, int expect_w = 0);

}  // namespace ssmx

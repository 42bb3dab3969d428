// libFuzzer target: JPEG/PNG decoding on arbitrary bytes. Every input must either decode to a consistent RGB image
// (then also go through the evaluation transform at a small size) or throw ssmx::Error. Run with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    ssmx::Image img = ssmx::decode_image_rgb(data, size, "fuzz");
    if (img.px.size() != size_t(img.w) * size_t(img.h) * 3) __builtin_trap();
    if (size_t(img.w) * size_t(img.h) <= (size_t(1) << 20)) {
      ssmx::ImageTransform t;
      t.resize = 40, t.crop = 32;
      ssmx::PreparedImage p = ssmx::preprocess_image(img, t);
      if (p.pixels.numel() != 3 * 32 * 32) __builtin_trap();
    }
  } catch (const ssmx::Error&) {
  }
  return 0;
}

// libFuzzer target: the safetensors reader on arbitrary bytes. Every input must either parse (and then convert to
// f32 without reading out of bounds) or throw ssmx::Error. Run with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = ssmx::MappedFile::from_memory(data, size, "fuzz.safetensors");
    ssmx::SafetensorsFile st = ssmx::read_safetensors(f);
    for (const auto& [name, t] : st.tensors)
      if (t.numel() < (1 << 20)) (void)ssmx::to_f32(t);
  } catch (const ssmx::Error&) {
  }
  return 0;
}

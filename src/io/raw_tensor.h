// ssmx/io/raw_tensor.h — a tensor as it lies in a checkpoint file, before conversion.
//
// Both readers (safetensors, torch zip pickle) describe each stored tensor as a RawTensor: a dtype, a shape, element
// strides and an element offset into a storage byte range that lives in a memory-mapped file. to_f32() turns any
// supported float dtype into a dense row-major float32 array (gathering through strides when the saved tensor was a
// non-contiguous view). Integer dtypes are converted by value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"

namespace ssmx {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

// Bytes per element.
size_t dtype_size(DType t);
// "F32", "BF16", ... (the safetensors spelling).
const char* dtype_name(DType t);

struct RawTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;     // PyTorch order
  std::vector<int64_t> strides;   // in elements, same rank as shape
  int64_t offset = 0;             // in elements, from `storage`
  const uint8_t* storage = nullptr;
  size_t storage_bytes = 0;       // bytes available from `storage`
  std::string source;             // file the bytes come from (for messages)
  std::shared_ptr<MappedFile> keep_alive;

  int64_t numel() const;
  bool is_contiguous() const;
};

// Row-major contiguous strides for `shape`.
std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape);

// Checks that every element addressed by (offset, shape, strides) lies inside the storage; throws
// ssmx::Error(source, ...) otherwise. Both readers call it before handing a tensor out.
void check_bounds(const RawTensor& t, const std::string& name);

// Converts to dense float32 (row-major). Exact for f16/bf16. Integers and bools convert by value.
std::vector<float> to_f32(const RawTensor& t);

// If `t` is contiguous little-endian f32 with 4-byte aligned data, returns a pointer into the mapping; else nullptr.
const float* f32_view(const RawTensor& t);

// IEEE half and bfloat16 to float.
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);
uint16_t float_to_half(float f);   // round to nearest even (tests, writers)
uint16_t float_to_bf16(float f);   // round to nearest even

}  // namespace ssmx

// ssmx/io/npy.h — NumPy .npy files (format version 1.0), float32 little-endian, C order.
//
// write_npy is how every matrix and map leaves ssmx; read_npy_f32 reads float32/float64 arrays back (tests,
// --pixels inputs) and validates the header strictly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace ssmx {

void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);
inline void write_npy(const std::string& path, const Tensor& t) { write_npy(path, t.ptr(), t.shape); }

// Reads '<f4' or '<f8' (converted to float32; only '<f4' when allow_f64 is false), C order. Throws
// ssmx::Error(path, reason).
Tensor read_npy_f32(const std::string& path, bool allow_f64 = true);

}  // namespace ssmx

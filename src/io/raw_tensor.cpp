#include "io/raw_tensor.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace ssmx {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 1;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

int64_t RawTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

bool RawTensor::is_contiguous() const {
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != acc) return false;
    acc *= shape[i];
  }
  return true;
}

void check_bounds(const RawTensor& t, const std::string& name) {
  if (t.strides.size() != t.shape.size()) throw Error(t.source, "tensor '" + name + "': stride rank differs from shape rank");
  const int64_t kMaxElems = int64_t(1) << 40;
  int64_t n = 1;
  for (int64_t d : t.shape) {
    if (d < 0) throw Error(t.source, "tensor '" + name + "': negative dimension");
    if (d > 0 && n > kMaxElems / d) throw Error(t.source, "tensor '" + name + "': shape too large");
    n *= d;
  }
  if (t.offset < 0) throw Error(t.source, "tensor '" + name + "': negative storage offset");
  if (n == 0) return;
  // Highest and lowest element index addressed.
  int64_t hi = t.offset, lo = t.offset;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    int64_t span = t.shape[i] - 1;
    int64_t s = t.strides[i];
    if (s > 0 && span > (kMaxElems - hi) / s) throw Error(t.source, "tensor '" + name + "': strides out of range");
    if (s < 0 && span > (kMaxElems + lo) / -s) throw Error(t.source, "tensor '" + name + "': strides out of range");
    if (s > 0) hi += span * s; else lo += span * s;
  }
  if (lo < 0) throw Error(t.source, "tensor '" + name + "': strides address before the storage");
  const size_t es = dtype_size(t.dtype);
  if (static_cast<uint64_t>(hi + 1) > t.storage_bytes / es)
    throw Error(t.source, "tensor '" + name + "': data range exceeds its storage (" + std::to_string((hi + 1) * es) +
                              " bytes needed, " + std::to_string(t.storage_bytes) + " available)");
  // Distinct elements need distinct storage: a view that addresses more elements than its storage holds repeats
  // elements (a stride-0 broadcast), which no checkpoint stores, and converting it could allocate without bound.
  if (static_cast<uint64_t>(n) > t.storage_bytes / es)
    throw Error(t.source, "tensor '" + name + "': shape " + std::to_string(n) + " elements exceeds its storage of " +
                              std::to_string(t.storage_bytes / es) + " elements (overlapping strides)");
}

float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | man << 13;
  } else {
    bits = sign | (exp + 112) << 23 | man << 13;
  }
  return std::bit_cast<float>(bits);
}

float bf16_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

uint16_t float_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

uint16_t float_to_half(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow to inf (incl. round-up)
  if (a < 0x38800000u) {                                   // subnormal or zero in half
    float v = std::bit_cast<float>(a) * 16777216.0f;      // scale by 2^24: integer value of the half mantissa
    uint32_t m = uint32_t(std::nearbyint(v));
    return uint16_t(sign | m);
  }
  uint32_t r = a + 0x0fffu + ((a >> 13) & 1u) - (uint32_t(112) << 23);
  return uint16_t(sign | (r >> 13));
}

namespace {

template <typename T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

float load_as_float(DType dt, const uint8_t* p) {
  switch (dt) {
    case DType::F64: return float(load_le<double>(p));
    case DType::F32: return load_le<float>(p);
    case DType::F16: return half_to_float(load_le<uint16_t>(p));
    case DType::BF16: return bf16_to_float(load_le<uint16_t>(p));
    case DType::I64: return float(load_le<int64_t>(p));
    case DType::I32: return float(load_le<int32_t>(p));
    case DType::I16: return float(load_le<int16_t>(p));
    case DType::I8: return float(load_le<int8_t>(p));
    case DType::U8: return float(*p);
    case DType::BOOL: return *p ? 1.0f : 0.0f;
  }
  return 0.0f;
}

}  // namespace

std::vector<float> to_f32(const RawTensor& t) {
  check_bounds(t, "?");
  const int64_t n = t.numel();
  std::vector<float> out(static_cast<size_t>(n));
  if (n == 0) return out;
  const size_t es = dtype_size(t.dtype);
  if (t.is_contiguous()) {
    const uint8_t* base = t.storage + t.offset * es;
    if (t.dtype == DType::F32) {
      std::memcpy(out.data(), base, size_t(n) * 4);
    } else if (t.dtype == DType::BF16) {
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(load_le<uint16_t>(base + 2 * i));
    } else if (t.dtype == DType::F16) {
      for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(load_le<uint16_t>(base + 2 * i));
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = load_as_float(t.dtype, base + es * i);
    }
    return out;
  }
  // Strided gather, odometer over the index.
  const size_t rank = t.shape.size();
  std::vector<int64_t> idx(rank, 0);
  int64_t pos = t.offset;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = load_as_float(t.dtype, t.storage + pos * es);
    for (size_t d = rank; d-- > 0;) {
      if (++idx[d] < t.shape[d]) {
        pos += t.strides[d];
        break;
      }
      pos -= (t.shape[d] - 1) * t.strides[d];
      idx[d] = 0;
    }
  }
  return out;
}

const float* f32_view(const RawTensor& t) {
  if (t.dtype != DType::F32 || !t.is_contiguous()) return nullptr;
  const uint8_t* p = t.storage + t.offset * 4;
  if (reinterpret_cast<uintptr_t>(p) % alignof(float) != 0) return nullptr;
  return reinterpret_cast<const float*>(p);
}

}  // namespace ssmx

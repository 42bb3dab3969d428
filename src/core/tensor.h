// ssmx/core/tensor.h — a dense, owning float32 tensor (row-major, PyTorch dimension order).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ssmx {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s) : shape(std::move(s)), data(static_cast<size_t>(count(shape)), 0.0f) {}
  Tensor(std::vector<int64_t> s, std::vector<float> d) : shape(std::move(s)), data(std::move(d)) {}

  static int64_t count(const std::vector<int64_t>& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
  }
  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(size_t i) const { return shape.at(i); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
};

// "[3, 4, 5]"
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace ssmx

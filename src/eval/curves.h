// ssmx/eval/curves.h — areas under evaluation curves.
#pragma once

#include <vector>

namespace ssmx {

// Σ_i (x_i − x_{i−1}) · (y_i + y_{i−1}) / 2; throws ssmx::Error when x and y differ in length.
double trapezoid(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace ssmx

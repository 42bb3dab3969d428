#include "eval/curves.h"

#include "core/error.h"

namespace ssmx {

double trapezoid(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) throw Error("trapezoid", "x and y differ in length");
  double s = 0;
  for (size_t i = 1; i < x.size(); ++i) s += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2.0;
  return s;
}

}  // namespace ssmx

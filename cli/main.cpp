#include <cstdio>
#include "core/runtime.h"
int main(int argc, char** argv) {
  ssmx::ensure_blas_core(argc, argv);
  std::printf("%s\n", ssmx::blas_core_reason().c_str());
  return 0;
}

// ssmx/core/parallel.h — static-partition parallel loops.
//
// parallel_for(n, fn) splits [0, n) into contiguous blocks, one per thread, and calls fn(begin, end). The work each
// index does must not depend on the partition, so results are bitwise identical for any thread count.
#pragma once

#include <omp.h>

#include <cstdint>

namespace ssmx {

template <typename Fn>
void parallel_for(int64_t n, Fn&& fn, int64_t min_per_thread = 1) {
  if (n <= 0) return;
  const int64_t useful = (n + min_per_thread - 1) / min_per_thread;
  if (useful <= 1 || omp_get_max_threads() <= 1) {
    fn(int64_t(0), n);
    return;
  }
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads();
    const int64_t id = omp_get_thread_num();
    const int64_t parts = nt < useful ? nt : useful;
    if (id < parts) {
      const int64_t b = n * id / parts, e = n * (id + 1) / parts;
      if (b < e) fn(b, e);
    }
  }
}

}  // namespace ssmx

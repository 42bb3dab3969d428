// Global operator new/delete replacement; see large_pages.h.
#include "core/large_pages.h"

#include <malloc.h>
#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace {

constexpr std::size_t kHuge = std::size_t(2) << 20;        // 2 MiB
constexpr std::size_t kThreshold = std::size_t(8) << 20;   // 8 MiB

void* allocate(std::size_t n) noexcept {
  if (n >= kThreshold) {
    const std::size_t rounded = (n + kHuge - 1) & ~(kHuge - 1);
    if (rounded < n) return nullptr;  // overflow
    void* p = std::aligned_alloc(kHuge, rounded);
    if (p) madvise(p, rounded, MADV_HUGEPAGE);  // a hint: failure only means small pages
    return p;
  }
  return std::malloc(n ? n : 1);
}

// Freed buffers stay in the heap for the next request instead of going back to the kernel (glibc's default returns
// every buffer above its mmap threshold with munmap, so each layer's fresh buffers pay first-touch page faults
// again). 32 MiB is the largest mmap threshold glibc accepts; the trim threshold keeps up to 1 GiB of freed heap.
const bool g_malloc_tuned = [] {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return true;
}();

}  // namespace

namespace ssmx {
bool install_large_page_allocator() { return g_malloc_tuned; }
}  // namespace ssmx

void* operator new(std::size_t n) {
  if (void* p = allocate(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = allocate(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

// ssmx/core/large_pages.h — large allocations on transparent huge pages (for programs, not for the library).
//
// On this project's machines a fresh 50 MB buffer costs ~33 ms in first-touch page faults on 4 KiB pages and ~8 ms
// on 2 MiB pages (docs/performance.md). Linking large_pages.cpp replaces the global operator new/delete: requests of
// 8 MiB or more are rounded up to whole 2 MiB pages, aligned to 2 MiB and marked MADV_HUGEPAGE (a hint; where the
// kernel has transparent huge pages disabled nothing changes); smaller ones go to malloc. All memory is released
// with free(), as before. It also raises glibc's mmap and trim thresholds (32 MiB, 1 GiB) so that freed buffers are
// reused rather than unmapped and faulted in again. Only programs opt in — the CLI, the tests and the benchmarks call
// install_large_page_allocator() from main, which pulls the replacement into the link; a library embedding ssmx (the
// Python module) does not, so it never changes its host process's allocator.
#pragma once

namespace ssmx {

// Does nothing at run time; referencing it links the replacement operators. Returns whether they are in use.
bool install_large_page_allocator();

}  // namespace ssmx

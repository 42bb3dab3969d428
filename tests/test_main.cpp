// Test entry point: pick the BLAS core exactly as the CLI does, then run GoogleTest.
#include <gtest/gtest.h>

#include "core/large_pages.h"
#include "core/runtime.h"

int main(int argc, char** argv) {
  ssmx::ensure_blas_core(argc, argv);
  ssmx::install_large_page_allocator();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

// libFuzzer target for the torch.save reader: the input is tried as a whole checkpoint (ZIP directory, data.pkl,
// storage resolution, bounds checks) and, separately, as a bare pickle program for the data-only pickle machine.
// The only acceptable failure is ssmx::Error; crashes, sanitizer reports, leaks and hangs are bugs.
//
// Build: CC=clang CXX=clang++ cmake -S . -B build-fuzz -DSSMX_FUZZ=ON -DSSMX_TESTS=OFF -DSSMX_BENCH=OFF
//        cmake --build build-fuzz --target fuzz_torch_zip
// Run:   build-fuzz/fuzz_torch_zip CORPUS_DIR tests/data/torch -max_total_time=90
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/pickle.h"
#include "io/raw_tensor.h"
#include "io/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto tensors = ssmx::load_torch_state_dict(ssmx::MappedFile::from_memory(data, size, "fuzz.pt"));
    for (const auto& [name, t] : tensors) {
      // Touch every addressed element: check_bounds must have made this safe. (Zero strides can describe huge
      // broadcast tensors over a few bytes; converting those would only measure memory, so skip them.)
      if (t.numel() <= (int64_t(1) << 16)) (void)ssmx::to_f32(t);
    }
  } catch (const ssmx::Error&) {
  }
  try {
    ssmx::pickle::Unpickled u = ssmx::pickle::unpickle(data, size, "fuzz.pkl");
    (void)ssmx::pickle::describe(*u.root);
  } catch (const ssmx::Error&) {
  }
  return 0;
}

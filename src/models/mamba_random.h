// ssmx/models/mamba_random.h — write a randomly initialised Mamba / Falcon-Mamba checkpoint (Hugging Face layout).
//
// Used by the benchmarks (a mamba-130m-shaped model without downloading one) and by tests that need models of a
// given shape. Initialisation follows Mamba's: A_log = log(1..N), dt bias = softplus⁻¹(dt) with dt log-uniform in
// [1e-3, 1e-1], D = 1, projections N(0, 1/fan_in), norms 1.
#pragma once

#include <cstdint>
#include <string>

#include "models/mamba.h"

namespace ssmx {

// Writes DIR/config.json and DIR/model.safetensors (f32). `cfg.tied` decides whether lm_head.weight is stored.
void write_random_mamba(const std::string& dir, const MambaConfig& cfg, uint64_t seed);

}  // namespace ssmx

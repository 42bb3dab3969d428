// ssmx/models/rwkv_random.h — write a randomly initialised RWKV-4 checkpoint (Hugging Face layout, f32).
// Used by the benchmark (an rwkv-4-169m-shaped model) and by tests that need models of a given shape.
#pragma once

#include <cstdint>
#include <string>

#include "models/rwkv.h"

namespace ssmx {

// Writes DIR/config.json and DIR/model.safetensors. Uses n_layer, hidden, att, ffn, vocab and rescale_every of cfg.
void write_random_rwkv(const std::string& dir, const RwkvConfig& cfg, uint64_t seed);

}  // namespace ssmx

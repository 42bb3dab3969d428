// ssmx/attribution/vim_trace.h — a Vision Mamba layer's two scan directions as a BidirTrace, from a forward pass's
// named activations (VimForwardOptions::keep_activations or layer_hook).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "attribution/bidirectional.h"
#include "core/tensor.h"
#include "models/vim.h"

namespace ssmx {

// The trace points into `acts`, the model and `storage` (which receives the reversed x and z of the backward
// direction); all three must outlive it.
struct VimLayerTrace {
  BidirTrace bt;
  std::vector<float> xr, zr;  // (T, E) x and z in reversed token order
};
void make_vim_trace(VimLayerTrace& out, const VimModel& m, const std::map<std::string, Tensor>& acts, int64_t layer);

}  // namespace ssmx

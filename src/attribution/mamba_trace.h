// ssmx/attribution/mamba_trace.h — the MixerTrace of one Mamba layer, from a forward pass's named activations.
#pragma once

#include <map>
#include <string>

#include "attribution/hidden_attention.h"
#include "core/tensor.h"
#include "models/mamba.h"

namespace ssmx {

// `acts` must come from MambaModel::forward with keep_activations; the trace points into `acts` and the model.
MixerTrace make_mixer_trace(const MambaModel& model, const std::map<std::string, Tensor>& acts, int64_t layer);

}  // namespace ssmx

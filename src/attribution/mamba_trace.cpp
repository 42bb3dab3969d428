#include "attribution/mamba_trace.h"

#include "core/error.h"

namespace ssmx {

MixerTrace make_mixer_trace(const MambaModel& model, const std::map<std::string, Tensor>& acts, int64_t layer) {
  const MambaConfig& c = model.config();
  if (layer < 0 || layer >= c.n_layer)
    throw Error("--layers", "layer " + std::to_string(layer) + " is outside 0.." + std::to_string(c.n_layer - 1));
  const std::string p = "layers." + std::to_string(layer) + ".";
  auto get = [&](const char* name) -> const Tensor& {
    auto it = acts.find(p + name);
    if (it == acts.end()) throw Error("hidden attention", "activation '" + p + name + "' was not kept by the forward pass");
    return it->second;
  };
  const MambaLayer& ly = model.layer(layer);
  MixerTrace tr;
  tr.T = get("u").dim(0), tr.E = c.d_inner, tr.N = c.d_state, tr.K = c.d_conv;
  tr.delta = get("delta").ptr();
  tr.A = ly.A.p;
  tr.B = get("B").ptr();
  tr.C = get("C").ptr();
  tr.ld_bc = c.d_state;
  tr.conv = get("conv").ptr();
  tr.z = get("z").ptr();
  tr.conv_w = ly.conv_w.p;
  tr.conv_b = ly.conv_b.p;
  tr.D = ly.D.p;
  tr.u = get("u").ptr();
  tr.x = get("x").ptr();
  return tr;
}

}  // namespace ssmx

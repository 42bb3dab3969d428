#include "attribution/vim_trace.h"

#include "core/error.h"

namespace ssmx {

void make_vim_trace(VimLayerTrace& out, const VimModel& m, const std::map<std::string, Tensor>& acts, int64_t layer) {
  const VimConfig& c = m.config();
  if (layer < 0 || layer >= c.n_layer)
    throw Error("--layers", "layer " + std::to_string(layer) + " is outside 0.." + std::to_string(c.n_layer - 1));
  const std::string p = "layers." + std::to_string(layer) + ".";
  auto get = [&](const std::string& n) -> const Tensor& {
    auto it = acts.find(p + n);
    if (it == acts.end()) throw Error("hidden attention", "activation '" + p + n + "' was not kept by the forward pass");
    return it->second;
  };
  const int64_t T = c.n_tokens, E = c.d_inner;
  const Tensor &x = get("x"), &z = get("z");
  out.xr.resize(size_t(T * E)), out.zr.resize(size_t(T * E));
  for (int64_t t = 0; t < T; ++t) {
    std::copy(x.ptr() + (T - 1 - t) * E, x.ptr() + (T - t) * E, out.xr.data() + t * E);
    std::copy(z.ptr() + (T - 1 - t) * E, z.ptr() + (T - t) * E, out.zr.data() + t * E);
  }
  auto fill = [&](MixerTrace& tr, const MambaLayer& w, const std::string& d, const float* xx, const float* zz) {
    tr.T = T, tr.E = E, tr.N = c.d_state, tr.K = c.d_conv, tr.ld_bc = c.d_state;
    tr.delta = get(d + ".delta").ptr(), tr.A = w.A.p, tr.B = get(d + ".B").ptr(), tr.C = get(d + ".C").ptr();
    tr.conv = get(d + ".conv").ptr(), tr.z = zz, tr.conv_w = w.conv_w.p, tr.conv_b = w.conv_b.p, tr.D = w.D.p;
    tr.u = get(d + ".u").ptr(), tr.x = xx;
  };
  fill(out.bt.fwd, m.layer(layer), "fwd", x.ptr(), z.ptr());
  fill(out.bt.bwd, m.layer_b(layer), "bwd", out.xr.data(), out.zr.data());
  out.bt.scale = c.divide_out ? 0.5f : 1.0f;
}

}  // namespace ssmx

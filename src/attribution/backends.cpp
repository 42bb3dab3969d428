// The explanation backends of the causal LM families, tried in turn (attribution/backend.h).
#include "attribution/backend.h"
#include "core/error.h"

namespace ssmx {

std::unique_ptr<Backend> make_text_backend(const CausalLM& m, const ClassHead* head, const std::vector<int32_t>& ids) {
  using Maker = std::unique_ptr<Backend> (*)(const CausalLM&, const ClassHead*, const std::vector<int32_t>&);
  static const Maker makers[] = {
      make_mamba_backend,
      make_rwkv_backend,
      make_mamba2_backend,
      make_griffin_backend,
  };
  for (Maker mk : makers)
    if (std::unique_ptr<Backend> b = mk(m, head, ids)) return b;
  throw Error(m.info().family, "explanations are not available for this family yet");
}

}  // namespace ssmx

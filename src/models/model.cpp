#include "models/model.h"

#include "core/error.h"
#include "models/griffin.h"
#include "models/mamba.h"
#include "models/mamba2.h"
#include "models/rwkv.h"

namespace ssmx {

int64_t ModelInfo::dim(const std::string& key) const {
  for (const auto& [k, v] : dims)
    if (k == key) return v;
  return -1;
}

namespace {
[[noreturn]] void unsupported(const CausalLM& m, const char* what) {
  throw Error(m.info().family, std::string(what) + " is not available for this family yet");
}
}  // namespace

int64_t CausalLM::d_model() const { unsupported(*this, "input embeddings"); }
Tensor CausalLM::embed(const std::vector<int32_t>&) const { unsupported(*this, "input embeddings"); }
ForwardResult CausalLM::forward_embeds(const Tensor&, const ForwardOptions&) const {
  unsupported(*this, "a forward pass from input embeddings");
}

std::string detect_family(const Checkpoint& ck) {
  const auto& c = ck.config;
  const std::string where = ck.config_path.empty() ? ck.weights_where() : ck.config_path;
  if (c.contains("model_type")) {
    if (!c["model_type"].is_string()) throw Error(where, "model_type is not a string");
    const std::string mt = c["model_type"].get<std::string>();
    if (mt == "mamba" || mt == "falcon_mamba" || mt == "rwkv" || mt == "recurrent_gemma" || mt == "mamba2") return mt;
    throw Error(where, "unknown model_type '" + mt + "' (supported: mamba, falcon_mamba, mamba2, rwkv, recurrent_gemma)");
  }
  if (c.contains("d_model")) {  // original state-spaces/mamba config (mamba_ssm MambaConfig)
    if (c.contains("ssm_cfg") && c["ssm_cfg"].is_object() && c["ssm_cfg"].value("layer", "") == "Mamba2") return "mamba2";
    if (c.contains("ssm_cfg") && c["ssm_cfg"].is_object() && c["ssm_cfg"].contains("layer") &&
        c["ssm_cfg"]["layer"] != "Mamba1")
      throw Error(where, "ssm_cfg.layer " + c["ssm_cfg"]["layer"].dump() + " is not supported yet (supported: Mamba1, Mamba2)");
    return "mamba";
  }
  // No config: recognise Vision Mamba and Mamba-1 by their tensors.
  if (ck.find("cls_token") && ck.find("patch_embed.proj.weight") && ck.find("layers.0.mixer.A_b_log")) return "vim";
  if (ck.find("rwkv.embeddings.weight") && ck.find("rwkv.blocks.0.attention.time_decay")) return "rwkv";
  for (const char* n : {"backbone.layers.0.mixer.A_log", "layers.0.mixer.A_log"})
    if (const RawTensor* t = ck.find(n); t && t->shape.size() == 2) return "mamba";
  for (const char* n : {"backbone.layers.0.mixer.A_log", "layers.0.mixer.A_log"})
    if (const RawTensor* t = ck.find(n); t && t->shape.size() == 1) return "mamba2";
  if (ck.config_path.empty()) throw Error(ck.path, "cannot tell the model family: no config.json and no Mamba tensors");
  throw Error(where, "cannot tell the model family: no model_type");
}

std::unique_ptr<CausalLM> load_causal_lm(const Checkpoint& ck) {
  const std::string fam = detect_family(ck);
  if (fam == "mamba") return MambaModel::load(ck, false);
  if (fam == "falcon_mamba") return MambaModel::load(ck, true);
  if (fam == "rwkv") return RwkvModel::load(ck);
  if (fam == "recurrent_gemma") return GriffinModel::load(ck);
  if (fam == "mamba2") return Mamba2Model::load(ck);
  if (fam == "vim") throw Error(ck.path, "this is a Vision Mamba (an image classifier), not a language model");
  throw Error(ck.path, "family '" + fam + "' is not supported");
}

}  // namespace ssmx

// ssmx/models/loading.h — what every family's loader shares: parameters viewed in place or converted once, tensors
// read by name with shape checks, integer config keys.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/mamba.h"

namespace ssmx {

// A parameter: a view into the mapped checkpoint when it is stored as aligned little-endian f32, else an f32 copy.
Param make_param(const RawTensor& t);

// Reads the tensors `prefix + name` of a checkpoint: shape-checked (ssmx::Error naming the file and the tensor), the
// mapping kept alive in `keep`, each name recorded in `used`, the element count added to `n_params`.
struct TensorLoader {
  const Checkpoint& ck;
  std::string prefix;
  std::set<std::string> used;
  std::vector<std::shared_ptr<MappedFile>>* keep;
  int64_t n_params = 0;

  const RawTensor& raw(const std::string& name);     // throws when missing
  const RawTensor* maybe(const std::string& name);   // nullptr when missing
  void expect_shape(const std::string& name, const RawTensor& t, const std::vector<int64_t>& shape) const;
  Param get(const std::string& name, const std::vector<int64_t>& shape);
  Param get_opt(const std::string& name, const std::vector<int64_t>& shape);  // empty Param when missing
};

// An integer config key, if present; null and non-integers ("auto") count as absent.
bool config_int(const nlohmann::json& c, const char* key, int64_t* out);

// Rows ids of an embedding table (vocab, dm) as a (T, dm) tensor; an id outside the vocabulary is an ssmx::Error.
Tensor embedding_rows(const Param& table, int64_t vocab, int64_t dm, const std::vector<int32_t>& ids);

}  // namespace ssmx

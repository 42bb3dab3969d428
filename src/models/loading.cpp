#include "models/loading.h"

#include <algorithm>

#include "core/error.h"

namespace ssmx {

Param make_param(const RawTensor& t) {
  Param p;
  p.shape = t.shape;
  if (const float* v = f32_view(t)) {
    p.p = v;
  } else {
    p.own = to_f32(t);
    p.p = p.own.data();
  }
  return p;
}

const RawTensor& TensorLoader::raw(const std::string& name) {
  const RawTensor& t = ck.require(prefix + name);
  used.insert(prefix + name);
  if (t.keep_alive) keep->push_back(t.keep_alive);
  return t;
}

const RawTensor* TensorLoader::maybe(const std::string& name) {
  const RawTensor* t = ck.find(prefix + name);
  if (t) {
    used.insert(prefix + name);
    if (t->keep_alive) keep->push_back(t->keep_alive);
  }
  return t;
}

void TensorLoader::expect_shape(const std::string& name, const RawTensor& t, const std::vector<int64_t>& shape) const {
  if (t.shape != shape)
    throw Error(t.source, "tensor '" + prefix + name + "' has shape " + shape_str(t.shape) + " but " +
                              shape_str(shape) + " is expected from the other tensors");
}

Param TensorLoader::get(const std::string& name, const std::vector<int64_t>& shape) {
  const RawTensor& t = raw(name);
  expect_shape(name, t, shape);
  n_params += t.numel();
  return make_param(t);
}

Param TensorLoader::get_opt(const std::string& name, const std::vector<int64_t>& shape) {
  const RawTensor* t = maybe(name);
  if (!t) return Param{};
  expect_shape(name, *t, shape);
  n_params += t->numel();
  return make_param(*t);
}

bool config_int(const nlohmann::json& c, const char* key, int64_t* out) {
  if (!c.contains(key) || c[key].is_null() || !c[key].is_number_integer()) return false;
  *out = c[key].get<int64_t>();
  return true;
}

Tensor embedding_rows(const Param& table, int64_t vocab, int64_t dm, const std::vector<int32_t>& ids) {
  const int64_t T = int64_t(ids.size());
  Tensor e({T, dm});
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = ids[size_t(t)];
    if (id < 0 || id >= vocab)
      throw Error("input", "token id " + std::to_string(id) + " is out of range for a vocabulary of " + std::to_string(vocab));
    std::copy(table.p + id * dm, table.p + (id + 1) * dm, e.ptr() + t * dm);
  }
  return e;
}

}  // namespace ssmx

#include "attribution/bidirectional.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace ssmx {

namespace {

void check(const BidirTrace& tr) {
  if (tr.fwd.T != tr.bwd.T || tr.fwd.E != tr.bwd.E)
    throw Error("bidirectional attention", "the two directions differ in tokens or channels");
}

void reduce_into(float* out, const Tensor& rows, int64_t nc, int64_t n, AttnReduce red) {
  for (int64_t j = 0; j < n; ++j) {
    float s = red == AttnReduce::Max ? -std::numeric_limits<float>::infinity() : 0.0f;
    for (int64_t c = 0; c < nc; ++c) {
      const float v = rows.data[size_t(c * n + j)];
      if (red == AttnReduce::Mean) s += v;
      else if (red == AttnReduce::AbsMean) s += std::fabs(v);
      else s = std::max(s, v);
    }
    out[j] = red == AttnReduce::Max ? s : s / float(nc);
  }
}

}  // namespace

const char* bidir_compat_name(BidirCompat c) {
  switch (c) {
    case BidirCompat::None: return "none";
    case BidirCompat::Stitched: return "stitched";
    case BidirCompat::HiddenAttnStitched: return "hiddenattn-stitched";
  }
  return "?";
}

BidirCompat parse_bidir_compat(const std::string& s) {
  if (s == "none") return BidirCompat::None;
  if (s == "stitched") return BidirCompat::Stitched;
  if (s == "hiddenattn-stitched") return BidirCompat::HiddenAttnStitched;
  throw Error("--compat", "unknown mode '" + s + "' for a bidirectional model (none, stitched, hiddenattn-stitched)");
}

Tensor bidir_attention_full(const BidirTrace& tr, AttnKind kind, int64_t c0, int64_t c1) {
  check(tr);
  const int64_t T = tr.fwd.T, nc = c1 - c0;
  Tensor out = hidden_attention_full(tr.fwd, kind, c0, c1);
  const Tensor b = hidden_attention_full(tr.bwd, kind, c0, c1);
  const float s = tr.scale;
  for (int64_t c = 0; c < nc; ++c) {
    float* o = out.ptr() + c * T * T;
    const float* bb = b.ptr() + c * T * T;
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j) o[i * T + j] = s * (o[i * T + j] + bb[(T - 1 - i) * T + (T - 1 - j)]);
  }
  return out;
}

Tensor bidir_attention_row(const BidirTrace& tr, AttnKind kind, int64_t i, int64_t c0, int64_t c1, BidirCompat compat) {
  check(tr);
  const int64_t T = tr.fwd.T, nc = c1 - c0;
  if (i < 0 || i >= T) throw Error("--row", "row " + std::to_string(i) + " is outside 0.." + std::to_string(T - 1));
  const AttnCompat rc = compat == BidirCompat::HiddenAttnStitched ? AttnCompat::HiddenAttnRow : AttnCompat::None;
  Tensor out = hidden_attention_row(tr.fwd, kind, i, c0, c1, rc);
  const Tensor b = hidden_attention_row(tr.bwd, kind, T - 1 - i, c0, c1, rc);
  for (int64_t c = 0; c < nc; ++c) {
    float* o = out.ptr() + c * T;
    const float* bb = b.ptr() + c * T;
    if (compat == BidirCompat::None) {
      for (int64_t j = 0; j < T; ++j) o[j] = tr.scale * (o[j] + bb[T - 1 - j]);
    } else {  // stitched: forward up to the query (its row is zero beyond it), backward after it
      for (int64_t j = i + 1; j < T; ++j) o[j] = bb[T - 1 - j];
    }
  }
  return out;
}

Tensor bidir_attention_reduce(const BidirTrace& tr, AttnKind kind, AttnReduce red, int64_t c0, int64_t c1) {
  check(tr);
  const int64_t T = tr.fwd.T, nc = c1 - c0;
  Tensor out({T, T});
  if (red == AttnReduce::Mean) {  // linear: reduce each direction, then combine
    const Tensor f = hidden_attention_reduce(tr.fwd, kind, red, c0, c1), b = hidden_attention_reduce(tr.bwd, kind, red, c0, c1);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j)
        out.data[size_t(i * T + j)] = tr.scale * (f.data[size_t(i * T + j)] + b.data[size_t((T - 1 - i) * T + (T - 1 - j))]);
    return out;
  }
  std::vector<double> acc(size_t(T * T), red == AttnReduce::Max ? -std::numeric_limits<double>::infinity() : 0.0);
  constexpr int64_t kBlock = 64;
  for (int64_t b0 = c0; b0 < c1; b0 += kBlock) {
    const int64_t b1 = std::min(c1, b0 + kBlock);
    const Tensor m = bidir_attention_full(tr, kind, b0, b1);
    for (int64_t c = 0; c < b1 - b0; ++c)
      for (int64_t k = 0; k < T * T; ++k) {
        const double v = m.data[size_t(c * T * T + k)];
        if (red == AttnReduce::AbsMean) acc[size_t(k)] += std::fabs(v);
        else acc[size_t(k)] = std::max(acc[size_t(k)], v);
      }
  }
  for (int64_t k = 0; k < T * T; ++k)
    out.data[size_t(k)] = red == AttnReduce::Max ? float(acc[size_t(k)]) : float(acc[size_t(k)] / double(nc));
  return out;
}

Tensor bidir_attention_row_reduce(const BidirTrace& tr, AttnKind kind, AttnReduce red, int64_t i, int64_t c0,
                                  int64_t c1, BidirCompat compat) {
  const Tensor rows = bidir_attention_row(tr, kind, i, c0, c1, compat);
  const int64_t T = tr.fwd.T;
  Tensor out({T});
  reduce_into(out.ptr(), rows, c1 - c0, T, red);
  return out;
}

}  // namespace ssmx

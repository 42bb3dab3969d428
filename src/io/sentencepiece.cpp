#include "io/sentencepiece.h"

#include <filesystem>

#include "core/error.h"
#include "io/tokenizer.h"

#ifdef SSMX_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace ssmx {

#ifdef SSMX_HAVE_SENTENCEPIECE

struct SpmModel {
  std::string path;
  sentencepiece::SentencePieceProcessor sp;
  bool add_bos = false;
  std::vector<std::string> pieces;  // by id
};

namespace {
constexpr uintmax_t kMaxModelBytes = uintmax_t(1) << 30;

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}
}  // namespace

std::shared_ptr<const SpmModel> spm_load(const std::string& path, bool add_bos) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(path, "cannot open: " + ec.message());
  if (size > kMaxModelBytes) throw Error(path, "file of " + std::to_string(size) + " bytes is too large for a tokenizer.model (limit 1 GiB)");
  auto m = std::make_shared<SpmModel>();
  m->path = path;
  m->add_bos = add_bos;
  const auto st = m->sp.Load(path);
  if (!st.ok()) throw Error(path, "not a SentencePiece model: " + one_line(st.ToString()));
  const int n = m->sp.GetPieceSize();
  if (n <= 0) throw Error(path, "the SentencePiece model has an empty vocabulary");
  m->pieces.reserve(size_t(n));
  for (int i = 0; i < n; ++i) m->pieces.push_back(m->sp.IdToPiece(i));
  if (add_bos && m->sp.bos_id() < 0) throw Error(path, "add_bos_token is set but the model has no BOS piece");
  return m;
}

Encoding spm_encode(const SpmModel& m, std::string_view text) {
  Encoding e;
  if (m.add_bos) {
    e.ids.push_back(int32_t(m.sp.bos_id()));
    e.offsets.push_back({0, 0});
  }
  const sentencepiece::ImmutableSentencePieceText spt = m.sp.EncodeAsImmutableProto(text);
  size_t last = 0;
  for (const auto& p : spt.pieces()) {
    // Offsets index the original text; keep them inside it and never decreasing (byte-fallback pieces of one
    // character share its range).
    size_t b = std::min<size_t>(p.begin(), text.size()), en = std::min<size_t>(p.end(), text.size());
    b = std::max(b, last);
    en = std::max(en, b);
    e.ids.push_back(int32_t(p.id()));
    e.offsets.push_back({b, en});
    last = b;
  }
  return e;
}

std::string spm_decode(const SpmModel& m, const std::vector<int32_t>& ids, bool skip_special) {
  std::vector<int> keep;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= m.pieces.size()) continue;
    if (skip_special && m.sp.IsControl(id)) continue;
    keep.push_back(id);
  }
  return m.sp.DecodeIds(keep);
}

const std::string* spm_piece(const SpmModel& m, int32_t id) {
  if (id < 0 || size_t(id) >= m.pieces.size()) return nullptr;
  return &m.pieces[size_t(id)];
}

std::optional<int32_t> spm_piece_id(const SpmModel& m, const std::string& piece) {
  const int id = m.sp.PieceToId(piece);
  if (id < 0 || size_t(id) >= m.pieces.size() || m.pieces[size_t(id)] != piece) return std::nullopt;
  return int32_t(id);
}

std::string spm_token_text(const SpmModel& m, int32_t id) {
  const std::string* p = spm_piece(m, id);
  if (!p) return {};
  if (m.sp.IsByte(id) && p->size() == 6 && p->rfind("<0x", 0) == 0) {
    return std::string(1, char(std::stoi(p->substr(3, 2), nullptr, 16)));
  }
  std::string out;
  const std::string meta = "\xE2\x96\x81";  // U+2581 ▁
  for (size_t i = 0; i < p->size();) {
    if (p->compare(i, meta.size(), meta) == 0) {
      out += ' ';
      i += meta.size();
    } else {
      out += (*p)[i++];
    }
  }
  return out;
}

size_t spm_vocab_size(const SpmModel& m) { return m.pieces.size(); }

bool spm_is_special(const SpmModel& m, int32_t id) {
  return id >= 0 && size_t(id) < m.pieces.size() && m.sp.IsControl(id);
}

std::string spm_summary(const SpmModel& m) {
  return "SentencePiece, " + std::to_string(m.pieces.size()) + " pieces" + (m.add_bos ? ", adds <bos>" : "");
}

#else  // built without libsentencepiece

struct SpmModel {};

std::shared_ptr<const SpmModel> spm_load(const std::string& path, bool) {
  throw Error(path, "reading a SentencePiece tokenizer.model needs libsentencepiece (install libsentencepiece-dev and rebuild)");
}
Encoding spm_encode(const SpmModel&, std::string_view) { return {}; }
std::string spm_decode(const SpmModel&, const std::vector<int32_t>&, bool) { return {}; }
const std::string* spm_piece(const SpmModel&, int32_t) { return nullptr; }
std::optional<int32_t> spm_piece_id(const SpmModel&, const std::string&) { return std::nullopt; }
std::string spm_token_text(const SpmModel&, int32_t) { return {}; }
size_t spm_vocab_size(const SpmModel&) { return 0; }
bool spm_is_special(const SpmModel&, int32_t) { return false; }
std::string spm_summary(const SpmModel&) { return {}; }

#endif

}  // namespace ssmx

// ssmx/io/tokenizer.cpp — see tokenizer.h and docs/tokenizer.md.
//
// Layout of this file: UTF-8 and character-class helpers; the GPT-2 byte table; a PCRE2 wrapper with Oniguruma's
// find-all semantics; NormStr (a string that remembers, for each of its bytes, the range of the original input it
// came from); normalizers; added-token matching; pre-tokenizers; the BPE model; post-processors; decoders; the JSON
// loader; and the public Tokenizer methods.
#include "io/tokenizer.h"
#include "io/sentencepiece.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"

namespace ssmx {

namespace {

using json = nlohmann::json;

constexpr int64_t kMaxId = (int64_t(1) << 24) - 1;  // ids above this are refused (guards the id -> token table)
constexpr size_t kMaxJsonDepth = 512;
constexpr uint64_t kMaxFileBytes = uint64_t(1) << 30;
constexpr size_t kMaxCacheEntries = 200000;
constexpr size_t kMaxCachedWord = 256;  // bytes
constexpr size_t kMaxNormGroup = 1024;  // bytes; see unicode_normalize

// ------------------------------------------------------------------------------------------------------------------
// UTF-8

struct Utf8Char {
  uint32_t cp;   // U+FFFD when !ok
  uint32_t len;  // bytes consumed: the character, or the maximal invalid subsequence (>= 1)
  bool ok;
};

// Decodes the character at s[i] (i < n). An invalid sequence consumes its maximal subpart (the longest prefix of a
// valid sequence), the rule of Rust's from_utf8_lossy and of Python's errors="replace".
Utf8Char utf8_at(const char* s, size_t n, size_t i) {
  const auto b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) return {b, 1, true};
  uint32_t need, cp;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1, cp = b & 0x1Fu;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2, cp = b & 0x0Fu;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3, cp = b & 0x07u;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return {0xFFFD, 1, false};
  }
  for (uint32_t k = 1; k <= need; ++k) {
    if (i + k >= n) return {0xFFFD, k, false};
    const auto c = static_cast<uint8_t>(s[i + k]);
    if (c < lo || c > hi) return {0xFFFD, k, false};
    lo = 0x80, hi = 0xBF;
    cp = (cp << 6) | (c & 0x3Fu);
  }
  return {cp, need + 1, true};
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

const char kReplacement[] = "\xEF\xBF\xBD";

// Valid UTF-8 with U+FFFD for each maximal invalid subsequence.
std::string lossy_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Utf8Char u = utf8_at(s.data(), s.size(), i);
    if (u.ok) out.append(s.data() + i, u.len);
    else out += kReplacement;
    i += u.len;
  }
  return out;
}

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<uint8_t>(c) >= 0x80) return false;
  return true;
}

// A string quoted for an error message: one line, control characters escaped, at most ~60 bytes.
std::string msg_quote(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size();) {
    if (out.size() > 60) {
      out += "...";
      break;
    }
    const Utf8Char u = utf8_at(s.data(), s.size(), i);
    char buf[16];
    if (!u.ok) {
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<uint8_t>(s[i]));
      out += buf;
      i += 1;
      continue;
    }
    if (u.cp == '\n') out += "\\n";
    else if (u.cp == '\r') out += "\\r";
    else if (u.cp == '\t') out += "\\t";
    else if (u.cp == '\\') out += "\\\\";
    else if (u.cp < 0x20 || u.cp == 0x7F || (u.cp >= 0x80 && u.cp < 0xA0) || u.cp == 0x2028 || u.cp == 0x2029) {
      std::snprintf(buf, sizeof buf, "\\u%04x", u.cp);
      out += buf;
    } else {
      out.append(s.data() + i, u.len);
    }
    i += u.len;
  }
  return out + "'";
}

// ------------------------------------------------------------------------------------------------------------------
// Character classes (Rust's char methods, which the `tokenizers` library uses)

// Unicode White_Space: Rust char::is_whitespace, Oniguruma \s with Unicode strings.
bool is_white_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Rust char::is_numeric: general category Nd, Nl or No.
bool is_numeric(uint32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  const auto k = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

// The Punctuation pre-tokenizer's test: ASCII punctuation (which includes symbols such as $+<=>^`|~) or a Unicode
// punctuation category (Pc Pd Ps Pe Pi Pf Po).
bool is_punctuation(uint32_t c) {
  if (c < 0x80) return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
  const auto k = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

// Regex \w of the Rust `regex` crate (Alphabetic, Mark, Nd, Pc, Join_Control), approximated by general categories.
bool is_word_char(uint32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (c == 0x200C || c == 0x200D) return true;
  const auto k = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_ME) || k == UTF8PROC_CATEGORY_ND ||
         k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_PC;
}

// ------------------------------------------------------------------------------------------------------------------
// GPT-2 bytes_to_unicode: printable bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF are their own code point; the other 68
// bytes map to U+0100, U+0101, ... in increasing byte order (space 0x20 -> U+0120 'Ġ', '\n' -> U+010A 'Ċ').

struct ByteTable {
  std::array<std::string, 256> str;        // byte -> UTF-8 of its character
  std::array<int16_t, 0x144> byte_of_cp;   // character -> byte, -1 when the character stands for no byte
};

const ByteTable& byte_table() {
  static const ByteTable t = [] {
    ByteTable r;
    r.byte_of_cp.fill(-1);
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? b : 0x100 + n++;
      append_utf8(r.str[b], cp);
      r.byte_of_cp[cp] = static_cast<int16_t>(b);
    }
    return r;
  }();
  return t;
}

// ------------------------------------------------------------------------------------------------------------------
// Regular expressions: PCRE2 (UTF + UCP), with Oniguruma's semantics where `tokenizers` (which uses Oniguruma)
// differs: \s is exactly White_Space, \w is Alphabetic|Mark|Nd|Pc|Join_Control, \h is a hex digit, \uHHHH is a
// code point, ^ and $ match at line breaks (Ruby syntax).

const std::string kWs = "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
const std::string kWordClass = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}";

// The GPT-2 pre-tokenizer regex 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
std::string gpt2_pattern() {
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + kWs + "\\p{L}\\p{N}]+|[" + kWs + "]+(?![^" + kWs +
         "])|[" + kWs + "]+";
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Rewrites an Oniguruma (Ruby syntax) pattern for PCRE2.
std::string onig_to_pcre2(const std::string& p) {
  std::string out;
  bool in_class = false;
  const size_t n = p.size();
  for (size_t i = 0; i < n; ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < n) {
      const char d = p[i + 1];
      std::string rep;
      bool done = true;
      switch (d) {
        case 's': rep = in_class ? kWs : "[" + kWs + "]"; break;
        case 'S': if (in_class) done = false; else rep = "[^" + kWs + "]"; break;
        case 'w': rep = in_class ? kWordClass : "[" + kWordClass + "]"; break;
        case 'W': if (in_class) done = false; else rep = "[^" + kWordClass + "]"; break;
        case 'h': rep = in_class ? "0-9a-fA-F" : "[0-9a-fA-F]"; break;
        case 'H': if (in_class) done = false; else rep = "[^0-9a-fA-F]"; break;
        case 'u':
          if (i + 5 < n && is_hex(p[i + 2]) && is_hex(p[i + 3]) && is_hex(p[i + 4]) && is_hex(p[i + 5])) {
            rep = "\\x{" + p.substr(i + 2, 4) + "}";
            i += 4;
          } else {
            done = false;
          }
          break;
        default: done = false;
      }
      if (done) {
        out += rep;
        ++i;
        continue;
      }
      // Copy the backslash and the whole (possibly multi-byte) character after it.
      out += c;
      ++i;
      const Utf8Char u = utf8_at(p.data(), n, i);
      out.append(p, i, u.len);
      i += u.len - 1;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < n && p[i + 1] == '^') out += p[++i];
      if (i + 1 < n && p[i + 1] == ']') out += p[++i];  // a leading ']' is literal in both dialects
      continue;
    }
    if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {  // POSIX bracket [:alpha:]
      const size_t e = p.find(":]", i + 2);
      if (e != std::string::npos) {
        out.append(p, i, e + 2 - i);
        i = e + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

// A PCRE2 pattern that matches `lit` literally.
std::string regex_escape(const std::string& lit) {
  std::string out;
  for (char c : lit) {
    const auto b = static_cast<uint8_t>(c);
    if (b >= 0x80 || (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) {
      out += c;
    } else if (b < 0x20 || b == 0x7F) {
      char buf[12];
      std::snprintf(buf, sizeof buf, "\\x{%x}", b);
      out += buf;
    } else {
      out += '\\';
      out += c;
    }
  }
  return out;
}

class Regex {
 public:
  // `pattern` is PCRE2 syntax; `shown` is what the file said (for messages); `where` names the file.
  Regex(const std::string& pattern, uint32_t options, const std::string& where, const std::string& shown)
      : where_(where), shown_(msg_quote(shown)) {
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     options | PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &err, &off, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error(where, "invalid regex " + shown_ + ": " + reinterpret_cast<const char*>(msg));
    }
    code_.reset(code);
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort; the interpreter is used when JIT is unavailable
    mctx_.reset(pcre2_match_context_create(nullptr));
    if (!mctx_) throw Error(where, "out of memory compiling regex " + shown_);
    pcre2_set_match_limit(mctx_.get(), 10'000'000);
    pcre2_set_depth_limit(mctx_.get(), 100'000);
    pcre2_set_heap_limit(mctx_.get(), 256 * 1024);  // KiB
  }

  // All matches in `s`, left to right, as Oniguruma's find iterator gives them (what `tokenizers` uses): after a
  // match the search goes on at its end; an empty match right at the end of the previous match is skipped by
  // moving one character on.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
    struct MdDel {
      void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
    };
    std::unique_ptr<pcre2_match_data, MdDel> md(pcre2_match_data_create_from_pattern(code_.get(), nullptr));
    if (!md) throw Error(where_, "out of memory matching regex " + shown_);
    static const char kEmpty[1] = {0};
    const auto* subj = reinterpret_cast<PCRE2_SPTR>(s.empty() ? kEmpty : s.data());
    const size_t n = s.size();
    size_t last_end = 0;
    bool have_last = false;
    size_t last_match_end = 0;
    while (last_end <= n) {
      // NO_UTF_CHECK: every string matched here is valid UTF-8 (the input is sanitised on entry), and the check
      // would otherwise rescan the rest of the subject at each call (quadratic on long texts).
      int rc = pcre2_match(code_.get(), subj, n, last_end, PCRE2_NO_UTF_CHECK, md.get(), mctx_.get());
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(code_.get(), subj, n, last_end, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md.get(), mctx_.get());
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT)
          throw Error(where_, "regex " + shown_ + " backtracks too much on this input");
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        throw Error(where_, "regex " + shown_ + " failed: " + reinterpret_cast<const char*>(msg));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const size_t ms = ov[0], me = ov[1];
      if (ms > me || me > n || ms < last_end)  // \K tricks; refuse rather than produce overlapping pieces
        throw Error(where_, "regex " + shown_ + " produced a match outside the searched text (\\K is not supported)");
      if (ms == me && have_last && last_match_end == me) {
        if (last_end >= n) break;
        last_end += utf8_at(s.data(), n, last_end).len;
        continue;
      }
      last_end = me;
      last_match_end = me;
      have_last = true;
      out.emplace_back(ms, me);
    }
  }

 private:
  struct CodeDel {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
  };
  struct CtxDel {
    void operator()(pcre2_match_context* c) const { pcre2_match_context_free(c); }
  };
  std::unique_ptr<pcre2_code, CodeDel> code_;
  std::unique_ptr<pcre2_match_context, CtxDel> mctx_;
  std::string where_, shown_;
};

// ------------------------------------------------------------------------------------------------------------------
// NormStr: the text being tokenized, with the original byte range [b, e) of every byte. All bytes of one character
// carry the same range (a character that normalisation produced from several input characters carries their union).

struct Span {
  uint32_t b, e;
};

struct NormStr {
  std::string s;
  std::vector<Span> al;  // al.size() == s.size()

  void push(std::string_view bytes, Span sp) {
    s.append(bytes);
    al.insert(al.end(), bytes.size(), sp);
  }
  NormStr slice(size_t b, size_t e) const {
    NormStr r;
    r.s.assign(s, b, e - b);
    r.al.assign(al.begin() + static_cast<ptrdiff_t>(b), al.begin() + static_cast<ptrdiff_t>(e));
    return r;
  }
  // Original range of the bytes [b, e) (e > b).
  Span span(size_t b, size_t e) const {
    return {std::min(al[b].b, al[e - 1].b), std::max(al[b].e, al[e - 1].e)};
  }
  Span span_all(size_t b, size_t e) const {
    Span r = al[b];
    for (size_t k = b + 1; k < e; ++k) r.b = std::min(r.b, al[k].b), r.e = std::max(r.e, al[k].e);
    return r;
  }
};

// The input as a NormStr; invalid UTF-8 becomes U+FFFD (aligned to the bytes it replaces).
NormStr from_original(std::string_view text) {
  NormStr r;
  r.s.reserve(text.size());
  r.al.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const Utf8Char u = utf8_at(text.data(), text.size(), i);
    const Span sp{static_cast<uint32_t>(i), static_cast<uint32_t>(i + u.len)};
    if (u.ok) r.push(text.substr(i, u.len), sp);
    else r.push(kReplacement, sp);
    i += u.len;
  }
  return r;
}

// ------------------------------------------------------------------------------------------------------------------
// Normalizers

std::string u8norm(std::string_view s, int options) {
  if (s.empty()) return {};
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          static_cast<utf8proc_ssize_t>(s.size()), &out,
                                          static_cast<utf8proc_option_t>(options | UTF8PROC_STABLE));
  if (n < 0) {  // cannot happen for valid UTF-8; keep the text rather than fail
    std::free(out);
    return std::string(s);
  }
  std::string r(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

// Unicode normalisation with alignment. Unchanged text keeps its alignment. Otherwise the text is cut into chunks
// that start at a character of combining class 0; chunks are grouped while normalising them separately would differ
// from normalising them together (composition across a starter, as in Hangul); each group that normalisation
// changes maps all its output to the union of its input ranges. If the pieces do not add up to the normal form of
// the whole (not expected), the whole text maps to its whole range.
void unicode_normalize(NormStr& ns, int options) {
  const std::string& s = ns.s;
  if (is_ascii(s)) return;  // ASCII is invariant under NFC, NFD, NFKC and NFKD
  const std::string whole = u8norm(s, options);
  if (whole == s) return;
  const size_t n = s.size();
  std::vector<size_t> cuts;
  for (size_t i = 0; i < n;) {
    const Utf8Char u = utf8_at(s.data(), n, i);
    if (i == 0 || utf8proc_get_property(static_cast<utf8proc_int32_t>(u.cp))->combining_class == 0) cuts.push_back(i);
    i += u.len;
  }
  cuts.push_back(n);
  NormStr out;
  out.s.reserve(whole.size());
  out.al.reserve(whole.size());
  auto emit = [&](size_t b, size_t e, const std::string& normed) {
    if (normed.size() == e - b && s.compare(b, e - b, normed) == 0) {
      out.s.append(normed);
      out.al.insert(out.al.end(), ns.al.begin() + static_cast<ptrdiff_t>(b), ns.al.begin() + static_cast<ptrdiff_t>(e));
    } else {
      out.push(normed, ns.span_all(b, e));
    }
  };
  const std::string_view sv(s);
  size_t gb = 0, ge = 0;  // the current group [gb, ge) and its normal form gn
  std::string gn;
  for (size_t k = 0; k + 1 < cuts.size(); ++k) {
    const size_t cb = cuts[k], ce = cuts[k + 1];
    if (ce - cb == 1 && static_cast<uint8_t>(s[cb]) < 0x80) {  // an ASCII starter never composes with what precedes
      if (ge > gb) emit(gb, ge, gn);
      emit(cb, ce, s.substr(cb, 1));
      gb = ge = ce;
      continue;
    }
    std::string cn = u8norm(sv.substr(cb, ce - cb), options);
    if (ge == gb || ce - gb > kMaxNormGroup) {
      if (ge > gb) emit(gb, ge, gn);
      gb = cb, ge = ce, gn = std::move(cn);
      continue;
    }
    std::string joined = u8norm(sv.substr(gb, ce - gb), options);
    if (joined.size() == gn.size() + cn.size() && joined.compare(0, gn.size(), gn) == 0) {
      emit(gb, ge, gn);
      gb = cb, ge = ce, gn = std::move(cn);
    } else {
      ge = ce, gn = std::move(joined);
    }
  }
  if (ge > gb) emit(gb, ge, gn);
  if (out.s != whole) {
    const Span sp = ns.span_all(0, n);
    out.s.clear();
    out.al.clear();
    out.push(whole, sp);
  }
  ns = std::move(out);
}

// Rust's char::to_lowercase per character: the simple mapping, except U+0130 -> "i̇" (SpecialCasing).
void lowercase(NormStr& ns) {
  bool change = false;
  for (char c : ns.s) {
    const auto b = static_cast<uint8_t>(c);
    if (b >= 0x80 || (b >= 'A' && b <= 'Z')) {
      change = true;
      break;
    }
  }
  if (!change) return;
  NormStr out;
  out.s.reserve(ns.s.size());
  out.al.reserve(ns.s.size());
  std::string tmp;
  for (size_t i = 0; i < ns.s.size();) {
    const Utf8Char u = utf8_at(ns.s.data(), ns.s.size(), i);
    const Span sp = ns.span(i, i + u.len);
    tmp.clear();
    if (u.cp == 0x130) tmp = "i\xCC\x87";
    else append_utf8(tmp, static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(u.cp))));
    out.push(tmp, sp);
    i += u.len;
  }
  ns = std::move(out);
}

void strip(NormStr& ns, bool left, bool right) {
  size_t b = 0, e = ns.s.size();
  if (left)
    while (b < e) {
      const Utf8Char u = utf8_at(ns.s.data(), e, b);
      if (!is_white_space(u.cp)) break;
      b += u.len;
    }
  if (right)
    while (e > b) {
      size_t k = e - 1;
      while (k > b && (static_cast<uint8_t>(ns.s[k]) & 0xC0) == 0x80) --k;
      if (!is_white_space(utf8_at(ns.s.data(), e, k).cp)) break;
      e = k;
    }
  if (b != 0 || e != ns.s.size()) ns = ns.slice(b, e);
}

struct Seg {
  size_t b, e;
  bool m;  // a match of the pattern
};

// A pattern's matches as a list of pieces covering the whole text (what `tokenizers` calls find_matches).
std::vector<Seg> regex_segs(const Regex& re, std::string_view s) {
  if (s.empty()) return {{0, 0, false}};
  std::vector<std::pair<size_t, size_t>> ms;
  re.find_all(s, ms);
  std::vector<Seg> out;
  out.reserve(2 * ms.size() + 1);
  size_t prev = 0;
  for (const auto& [b, e] : ms) {
    if (prev != b) out.push_back({prev, b, false});
    out.push_back({b, e, true});
    prev = e;
  }
  if (prev != s.size()) out.push_back({prev, s.size(), false});
  return out;
}

// Every character for which pred() holds is a match of its own; the characters between are one non-match.
template <typename Pred>
std::vector<Seg> char_segs(std::string_view s, Pred pred) {
  if (s.empty()) return {{0, 0, false}};
  std::vector<Seg> out;
  size_t last = 0;
  for (size_t i = 0; i < s.size();) {
    const Utf8Char u = utf8_at(s.data(), s.size(), i);
    if (pred(u.cp)) {
      if (last < i) out.push_back({last, i, false});
      out.push_back({i, i + u.len, true});
      last = i + u.len;
    }
    i += u.len;
  }
  if (last < s.size()) out.push_back({last, s.size(), false});
  return out;
}

// Replaces every match with `content` (an empty match inserts it).
void replace(NormStr& ns, const Regex& re, const std::string& content) {
  const std::vector<Seg> segs = regex_segs(re, ns.s);
  bool any = false;
  for (const Seg& g : segs) any |= g.m;
  if (!any) return;
  NormStr out;
  for (const Seg& g : segs) {
    if (!g.m) {
      out.s.append(ns.s, g.b, g.e - g.b);
      out.al.insert(out.al.end(), ns.al.begin() + static_cast<ptrdiff_t>(g.b), ns.al.begin() + static_cast<ptrdiff_t>(g.e));
    } else if (g.e > g.b) {
      out.push(content, ns.span_all(g.b, g.e));
    } else if (!ns.s.empty()) {
      const size_t k = std::min(g.b, ns.s.size() - 1);
      const uint32_t at = g.b < ns.s.size() ? ns.al[k].b : ns.al[k].e;
      out.push(content, {at, at});
    }
  }
  ns = std::move(out);
}

struct Normalizer {
  enum class Kind { NFC, NFD, NFKC, NFKD, Lowercase, Strip, Replace, Prepend, Sequence } kind = Kind::NFC;
  std::vector<Normalizer> seq;
  bool left = false, right = false;   // Strip
  std::shared_ptr<const Regex> re;    // Replace
  std::string content;                // Replace, Prepend

  void apply(NormStr& ns) const {
    switch (kind) {
      case Kind::NFC: unicode_normalize(ns, UTF8PROC_COMPOSE); break;
      case Kind::NFD: unicode_normalize(ns, UTF8PROC_DECOMPOSE); break;
      case Kind::NFKC: unicode_normalize(ns, UTF8PROC_COMPOSE | UTF8PROC_COMPAT); break;
      case Kind::NFKD: unicode_normalize(ns, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT); break;
      case Kind::Lowercase: lowercase(ns); break;
      case Kind::Strip: strip(ns, left, right); break;
      case Kind::Replace: replace(ns, *re, content); break;
      case Kind::Prepend:
        if (!ns.s.empty()) {
          const Utf8Char u = utf8_at(ns.s.data(), ns.s.size(), 0);
          NormStr out;
          out.push(content, ns.span(0, u.len));
          out.s += ns.s;
          out.al.insert(out.al.end(), ns.al.begin(), ns.al.end());
          ns = std::move(out);
        }
        break;
      case Kind::Sequence:
        for (const Normalizer& n : seq) n.apply(ns);
        break;
    }
  }
};

// ------------------------------------------------------------------------------------------------------------------
// Added tokens

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = true;
};

// A byte trie over token contents; find() gives leftmost-longest, non-overlapping matches (Aho-Corasick
// LeftmostLongest semantics: the earliest start wins, then the longest pattern starting there).
class Trie {
 public:
  bool empty() const { return term_.size() <= 1; }
  void add(const std::string& pat, int32_t value) {
    if (pat.empty()) return;
    if (term_.empty()) term_.push_back(-1);
    int32_t node = 0;
    for (char c : pat) {
      const uint64_t key = (uint64_t(uint32_t(node)) << 8) | static_cast<uint8_t>(c);
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        const auto next = static_cast<int32_t>(term_.size());
        term_.push_back(-1);
        it = edges_.emplace(key, next).first;
      }
      node = it->second;
    }
    first_[static_cast<uint8_t>(pat[0])] = true;
    if (term_[static_cast<size_t>(node)] < 0) term_[static_cast<size_t>(node)] = value;  // the first of duplicates wins
  }
  struct Match {
    size_t b, e;
    int32_t value;
  };
  void find(std::string_view s, std::vector<Match>& out) const {
    if (empty()) return;
    for (size_t i = 0; i < s.size();) {
      if (!first_[static_cast<uint8_t>(s[i])]) {
        ++i;
        continue;
      }
      int32_t node = 0, best = -1;
      size_t best_end = 0;
      for (size_t j = i; j < s.size(); ++j) {
        const auto it = edges_.find((uint64_t(uint32_t(node)) << 8) | static_cast<uint8_t>(s[j]));
        if (it == edges_.end()) break;
        node = it->second;
        if (term_[static_cast<size_t>(node)] >= 0) best = term_[static_cast<size_t>(node)], best_end = j + 1;
      }
      if (best >= 0) {
        out.push_back({i, best_end, best});
        i = best_end;
      } else {
        ++i;
      }
    }
  }

 private:
  std::unordered_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> term_;  // per node: the value of the pattern ending there, -1 if none
  std::array<bool, 256> first_{};
};

// A piece of the text on its way through the pipeline; id >= 0 when an added token already decided it.
struct Piece {
  NormStr ns;
  int32_t id = -1;
};

bool ends_with_word(std::string_view s, size_t end) {  // regex \w$ on s[..end]
  if (end == 0) return false;
  size_t k = end - 1;
  while (k > 0 && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
  return is_word_char(utf8_at(s.data(), end, k).cp);
}
bool starts_with_word(std::string_view s, size_t begin) {  // regex ^\w on s[begin..]
  return begin < s.size() && is_word_char(utf8_at(s.data(), s.size(), begin).cp);
}

// Cuts the added tokens found by `trie` out of `ns` (the AddedVocabulary split of `tokenizers`, with the
// single_word, lstrip and rstrip rules). Appends the non-empty pieces to `out`.
void split_added(NormStr&& ns, const Trie& trie, const std::vector<AddedToken>& toks, std::vector<Piece>& out) {
  std::vector<Trie::Match> ms;
  trie.find(ns.s, ms);
  if (ms.empty()) {
    if (!ns.s.empty()) out.push_back({std::move(ns), -1});
    return;
  }
  const std::string& s = ns.s;
  const size_t n = s.size();
  size_t start_offset = 0;
  for (const Trie::Match& m : ms) {
    const AddedToken& t = toks[static_cast<size_t>(m.value)];
    size_t start = m.b, stop = m.e;
    if (start < start_offset) continue;  // swallowed by the previous token's rstrip
    if (t.single_word) {
      const bool start_space = start == 0 || !ends_with_word(s, start);
      const bool stop_space = stop == n || !starts_with_word(s, stop);
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      size_t k = start;
      while (k > start_offset) {
        size_t j = k - 1;
        while (j > 0 && (static_cast<uint8_t>(s[j]) & 0xC0) == 0x80) --j;
        if (!is_white_space(utf8_at(s.data(), k, j).cp)) break;
        k = j;
      }
      start = k;
    }
    if (t.rstrip) {
      while (stop < n) {
        const Utf8Char u = utf8_at(s.data(), n, stop);
        if (!is_white_space(u.cp)) break;
        stop += u.len;
      }
    }
    if (start > start_offset) out.push_back({ns.slice(start_offset, start), -1});
    out.push_back({ns.slice(start, stop), t.id});
    start_offset = stop;
  }
  if (start_offset < n) out.push_back({ns.slice(start_offset, n), -1});
}

// ------------------------------------------------------------------------------------------------------------------
// Pre-tokenizers

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// Which pieces of a find_matches list survive, after merging by `beh` (SplitDelimiterBehavior of `tokenizers`).
std::vector<std::pair<size_t, size_t>> apply_behavior(const std::vector<Seg>& segs, Behavior beh) {
  std::vector<Seg> acc;  // m = "remove"
  acc.reserve(segs.size());
  bool prev = false;
  switch (beh) {
    case Behavior::Isolated:
      for (const Seg& g : segs) acc.push_back({g.b, g.e, false});
      break;
    case Behavior::Removed:
      acc = segs;
      break;
    case Behavior::Contiguous:
      for (const Seg& g : segs) {
        if (g.m == prev && !acc.empty()) acc.back().e = g.e;
        else acc.push_back({g.b, g.e, false});
        prev = g.m;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (const Seg& g : segs) {
        if (g.m && !prev && !acc.empty()) acc.back().e = g.e;
        else acc.push_back({g.b, g.e, false});
        prev = g.m;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->m && !prev && !acc.empty()) acc.back().b = it->b;
        else acc.push_back({it->b, it->e, false});
        prev = it->m;
      }
      std::reverse(acc.begin(), acc.end());
      break;
  }
  std::vector<std::pair<size_t, size_t>> out;
  out.reserve(acc.size());
  for (const Seg& g : acc)
    if (!g.m && g.e > g.b) out.emplace_back(g.b, g.e);
  return out;
}

void split_into(NormStr&& ns, const std::vector<Seg>& segs, Behavior beh, std::vector<Piece>& out) {
  const auto keep = apply_behavior(segs, beh);
  if (keep.size() == 1 && keep[0].first == 0 && keep[0].second == ns.s.size()) {
    out.push_back({std::move(ns), -1});
    return;
  }
  for (const auto& [b, e] : keep) out.push_back({ns.slice(b, e), -1});
}

void byte_map(NormStr& ns) {
  const ByteTable& t = byte_table();
  NormStr out;
  out.s.reserve(ns.s.size() * 2);
  out.al.reserve(ns.s.size() * 2);
  for (size_t i = 0; i < ns.s.size(); ++i) out.push(t.str[static_cast<uint8_t>(ns.s[i])], ns.al[i]);
  ns = std::move(out);
}

struct PreTok {
  enum class Kind { ByteLevel, Split, Digits, Punctuation, Whitespace, WhitespaceSplit, Bert, CharDelimiter, Metaspace, Sequence };
  enum class Prepend { Always, First, Never };
  Kind kind = Kind::ByteLevel;
  bool add_prefix_space = true, use_regex = true;  // ByteLevel
  std::shared_ptr<const Regex> re;                 // ByteLevel (GPT-2 regex), Split, Whitespace
  bool invert = false;                             // Split
  Behavior behavior = Behavior::Isolated;          // Split, Punctuation
  bool individual_digits = false;                  // Digits
  uint32_t delimiter = 0;                          // CharDelimiterSplit; Metaspace replacement
  Prepend prepend = Prepend::Always;               // Metaspace
  bool split = true;                               // Metaspace
  std::vector<PreTok> seq;

  void apply(std::vector<Piece>& pieces) const {
    if (kind == Kind::Sequence) {
      for (const PreTok& p : seq) p.apply(pieces);
      return;
    }
    std::vector<Piece> out;
    out.reserve(pieces.size());
    for (Piece& p : pieces) {
      if (p.id >= 0) {
        out.push_back(std::move(p));
        continue;
      }
      apply_one(std::move(p.ns), out);
    }
    pieces = std::move(out);
  }

 private:
  void apply_one(NormStr&& ns, std::vector<Piece>& out) const {
    const std::string_view s = ns.s;
    switch (kind) {
      case Kind::ByteLevel: {
        if (add_prefix_space && !ns.s.empty() && ns.s[0] != ' ') {
          NormStr p;
          p.push(" ", ns.span(0, utf8_at(ns.s.data(), ns.s.size(), 0).len));
          p.s += ns.s;
          p.al.insert(p.al.end(), ns.al.begin(), ns.al.end());
          ns = std::move(p);
        }
        const size_t first = out.size();
        if (use_regex) split_into(std::move(ns), regex_segs(*re, ns.s), Behavior::Isolated, out);
        else if (!ns.s.empty()) out.push_back({std::move(ns), -1});
        for (size_t k = first; k < out.size(); ++k) byte_map(out[k].ns);
        break;
      }
      case Kind::Split: {
        std::vector<Seg> segs = regex_segs(*re, s);
        if (invert)
          for (Seg& g : segs) g.m = !g.m;
        split_into(std::move(ns), segs, behavior, out);
        break;
      }
      case Kind::Digits:
        split_into(std::move(ns), char_segs(s, is_numeric), individual_digits ? Behavior::Isolated : Behavior::Contiguous, out);
        break;
      case Kind::Punctuation: split_into(std::move(ns), char_segs(s, is_punctuation), behavior, out); break;
      case Kind::Whitespace: {  // the matches of \w+|[^\w\s]+ are the pieces
        std::vector<Seg> segs = regex_segs(*re, s);
        for (Seg& g : segs) g.m = !g.m;
        split_into(std::move(ns), segs, Behavior::Removed, out);
        break;
      }
      case Kind::WhitespaceSplit: split_into(std::move(ns), char_segs(s, is_white_space), Behavior::Removed, out); break;
      case Kind::Bert: {
        std::vector<Piece> tmp;
        split_into(std::move(ns), char_segs(s, is_white_space), Behavior::Removed, tmp);
        for (Piece& p : tmp) {
          const std::vector<Seg> segs = char_segs(p.ns.s, is_punctuation);
          split_into(std::move(p.ns), segs, Behavior::Isolated, out);
        }
        break;
      }
      case Kind::CharDelimiter: {
        const uint32_t d = delimiter;
        split_into(std::move(ns), char_segs(s, [d](uint32_t c) { return c == d; }), Behavior::Removed, out);
        break;
      }
      case Kind::Metaspace: {
        std::string rep;
        append_utf8(rep, delimiter);
        if (ns.s.find(' ') != std::string::npos) {
          NormStr r;
          for (size_t i = 0; i < ns.s.size(); ++i) {
            if (ns.s[i] == ' ') r.push(rep, ns.al[i]);
            else r.s += ns.s[i], r.al.push_back(ns.al[i]);
          }
          ns = std::move(r);
        }
        const bool add = prepend == Prepend::Always || (prepend == Prepend::First && !ns.al.empty() && ns.al[0].b == 0);
        if (add && !ns.s.empty() && ns.s.compare(0, rep.size(), rep) != 0) {
          NormStr p;
          p.push(rep, ns.span(0, utf8_at(ns.s.data(), ns.s.size(), 0).len));
          p.s += ns.s;
          p.al.insert(p.al.end(), ns.al.begin(), ns.al.end());
          ns = std::move(p);
        }
        if (split) {
          const uint32_t d = delimiter;
          const std::vector<Seg> segs = char_segs(ns.s, [d](uint32_t c) { return c == d; });
          split_into(std::move(ns), segs, Behavior::MergedWithNext, out);
        } else if (!ns.s.empty()) {
          out.push_back({std::move(ns), -1});
        }
        break;
      }
      case Kind::Sequence: break;  // handled in apply()
    }
  }
};

// ------------------------------------------------------------------------------------------------------------------
// BPE model

struct BpeTok {
  int32_t id;
  uint32_t b, e;  // byte range inside the word
};

struct Bpe {
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<const std::string*> by_id;  // id -> key in `vocab` (nullptr for holes)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left id, right id) -> (rank, merged id)
  size_t merge_count = 0;
  std::optional<std::string> unk_token, prefix, suffix;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;

  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  const std::pair<int32_t, int32_t>* merge(int32_t a, int32_t b) const {
    const auto it = merges.find(key(a, b));
    return it == merges.end() ? nullptr : &it->second;
  }

  struct Sym {
    int32_t id, prev, next;
    uint32_t len;
  };

  // One word: one symbol per character (unknown characters: byte fallback, the unk token, or dropped), then the
  // merges, lowest rank first, ties leftmost, with the neighbours re-checked after each merge (Word::merge_all of
  // `tokenizers`: a min-heap of (rank, position) with stale entries skipped). Appends (id, length) pairs.
  void merge_word(std::string_view w, std::vector<std::pair<int32_t, uint32_t>>& out, const std::string& where) const {
    std::vector<Sym> syms;
    syms.reserve(w.size());
    auto add = [&](int32_t id, uint32_t len) {
      const auto k = static_cast<int32_t>(syms.size());
      syms.push_back({id, k - 1, -1, len});
      if (k > 0) syms[static_cast<size_t>(k - 1)].next = k;
    };
    bool have_unk = false;  // a pending unk symbol (fuse_unk joins runs of unknown characters)
    int32_t unk_id = 0;
    uint32_t unk_len = 0;
    std::string tmp;
    for (size_t i = 0; i < w.size();) {
      const uint32_t len = utf8_at(w.data(), w.size(), i).len;
      const bool is_first = i == 0, is_last = i + len >= w.size();
      tmp.assign(w.data() + i, len);
      if (prefix && !is_first) tmp = *prefix + tmp;
      if (suffix && is_last) tmp += *suffix;
      i += len;
      if (const auto it = vocab.find(tmp); it != vocab.end()) {
        if (have_unk) add(unk_id, unk_len), have_unk = false;
        add(it->second, len);
        continue;
      }
      if (byte_fallback) {
        std::vector<int32_t> ids;
        for (char c : tmp) {
          char code[8];
          std::snprintf(code, sizeof code, "<0x%02X>", static_cast<uint8_t>(c));
          const auto it = vocab.find(code);
          if (it == vocab.end()) break;
          ids.push_back(it->second);
        }
        if (ids.size() == tmp.size()) {
          for (int32_t id : ids) add(id, 1);  // one byte each, as in `tokenizers`
          continue;
        }
      }
      if (unk_token) {
        const auto it = vocab.find(*unk_token);
        if (it == vocab.end()) throw Error(where, "unk_token " + msg_quote(*unk_token) + " is not in the vocabulary");
        if (have_unk && fuse_unk) {
          unk_len += len;
        } else {
          if (have_unk) add(unk_id, unk_len);
          have_unk = true, unk_id = it->second, unk_len = len;
        }
      }
      // no unk token: the character is dropped
    }
    if (have_unk) add(unk_id, unk_len);

    struct QE {
      int32_t rank, pos, new_id;
    };
    auto worse = [](const QE& a, const QE& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
    std::priority_queue<QE, std::vector<QE>, decltype(worse)> q(worse);
    const auto n = static_cast<int32_t>(syms.size());
    for (int32_t i = 0; i + 1 < n; ++i)
      if (const auto* m = merge(syms[size_t(i)].id, syms[size_t(i + 1)].id)) q.push({m->first, i, m->second});
    while (!q.empty()) {
      const QE top = q.top();
      q.pop();
      Sym& cur = syms[size_t(top.pos)];
      if (cur.len == 0 || cur.next == -1) continue;
      const int32_t next_pos = cur.next;
      const Sym right = syms[size_t(next_pos)];
      const auto* m = merge(cur.id, right.id);
      if (!m || m->second != top.new_id) continue;  // stale entry
      cur.id = top.new_id;
      cur.len += right.len;
      cur.next = right.next;
      syms[size_t(next_pos)].len = 0;
      if (right.next > -1 && right.next < n) syms[size_t(right.next)].prev = top.pos;
      if (cur.prev >= 0)
        if (const auto* pm = merge(syms[size_t(cur.prev)].id, cur.id)) q.push({pm->first, cur.prev, pm->second});
      if (cur.next > -1 && cur.next < n)
        if (const auto* nm = merge(cur.id, syms[size_t(cur.next)].id)) q.push({nm->first, top.pos, nm->second});
    }
    for (const Sym& s : syms)
      if (s.len != 0) out.emplace_back(s.id, s.len);
  }
};

// ------------------------------------------------------------------------------------------------------------------
// Post-processors: each one wraps the encoding in a template of special tokens ("A" stands for the encoding).

struct PostProc {
  struct Item {
    bool is_seq = false;
    std::vector<int32_t> ids;
  };
  std::vector<Item> single;

  void apply(Encoding& enc) const {
    Encoding out;
    size_t pos = 0;
    for (const Item& it : single) {
      if (it.is_seq) {
        for (size_t k = 0; k < enc.ids.size(); ++k) {
          out.ids.push_back(enc.ids[k]);
          out.offsets.push_back(enc.offsets[k]);
          pos = enc.offsets[k].second;
        }
      } else {
        for (int32_t id : it.ids) {
          out.ids.push_back(id);
          out.offsets.emplace_back(pos, pos);
        }
      }
    }
    enc = std::move(out);
  }
};

// ------------------------------------------------------------------------------------------------------------------
// Decoders (decode_chain of `tokenizers`: a list of strings in, a list of strings out; the result is their
// concatenation).

struct Decoder {
  enum class Kind { ByteLevel, Replace, Fuse, Strip, ByteFallback, Metaspace, Sequence } kind = Kind::ByteLevel;
  std::vector<Decoder> seq;
  std::shared_ptr<const Regex> re;  // Replace
  std::string content;              // Replace
  uint32_t strip_char = ' ';        // Strip; Metaspace replacement
  size_t start = 0, stop = 0;       // Strip
  bool prepended = true;            // Metaspace: the pre-tokenizer added a replacement to the first word

  void apply(std::vector<std::string>& toks) const {
    switch (kind) {
      case Kind::ByteLevel: {
        const ByteTable& t = byte_table();
        std::string bytes;
        for (const std::string& tok : toks) {
          const size_t mark = bytes.size();
          bool all = true;
          for (size_t i = 0; i < tok.size();) {
            const Utf8Char u = utf8_at(tok.data(), tok.size(), i);
            if (!u.ok || u.cp >= t.byte_of_cp.size() || t.byte_of_cp[u.cp] < 0) {
              all = false;
              break;
            }
            bytes += static_cast<char>(t.byte_of_cp[u.cp]);
            i += u.len;
          }
          if (!all) {
            bytes.resize(mark);
            bytes += tok;
          }
        }
        toks.assign(1, lossy_utf8(bytes));
        break;
      }
      case Kind::Replace:
        for (std::string& tok : toks) {
          std::string r;
          for (const Seg& g : regex_segs(*re, tok)) {
            if (g.m) r += content;
            else r.append(tok, g.b, g.e - g.b);
          }
          tok = std::move(r);
        }
        break;
      case Kind::Fuse: {
        std::string all;
        for (const std::string& tok : toks) all += tok;
        toks.assign(1, std::move(all));
        break;
      }
      case Kind::Strip:
        for (std::string& tok : toks) {
          std::vector<std::pair<size_t, uint32_t>> chars;  // (byte offset, code point)
          for (size_t i = 0; i < tok.size();) {
            const Utf8Char u = utf8_at(tok.data(), tok.size(), i);
            chars.emplace_back(i, u.cp);
            i += u.len;
          }
          size_t a = 0, z = chars.size();
          for (size_t k = 0; k < start && a < z && chars[a].second == strip_char; ++k) ++a;
          for (size_t k = 0; k < stop && z > a && chars[z - 1].second == strip_char; ++k) --z;
          const size_t bb = a < chars.size() ? chars[a].first : tok.size();
          const size_t ee = z < chars.size() ? chars[z].first : tok.size();
          tok = tok.substr(bb, ee - bb);
        }
        break;
      case Kind::ByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        auto flush = [&] {
          if (pending.empty()) return;
          if (lossy_utf8(pending) == pending) out.push_back(pending);
          else
            for (size_t k = 0; k < pending.size(); ++k) out.push_back(kReplacement);
          pending.clear();
        };
        for (std::string& tok : toks) {
          if (tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>' && is_hex(tok[3]) && is_hex(tok[4])) {
            pending += static_cast<char>(std::strtoul(tok.substr(3, 2).c_str(), nullptr, 16));
          } else {
            flush();
            out.push_back(std::move(tok));
          }
        }
        flush();
        toks = std::move(out);
        break;
      }
      case Kind::Metaspace:  // replacement -> ' ', dropped in the first token when the pre-tokenizer prepends one
        for (size_t k = 0; k < toks.size(); ++k) {
          std::string r;
          const std::string& tok = toks[k];
          for (size_t i = 0; i < tok.size();) {
            const Utf8Char u = utf8_at(tok.data(), tok.size(), i);
            if (u.ok && u.cp == strip_char) {
              if (!(k == 0 && prepended)) r += ' ';
            } else {
              r.append(tok, i, u.len);
            }
            i += u.len;
          }
          toks[k] = std::move(r);
        }
        break;
      case Kind::Sequence:
        for (const Decoder& d : seq) d.apply(toks);
        break;
    }
  }
};

}  // namespace

// ------------------------------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::string name;
  std::shared_ptr<const SpmModel> spm;  // a SentencePiece tokenizer.model: everything below is unused
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;        // id -> index in `added` (the last with that id)
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_set<std::string> special_contents;
  std::unordered_set<int32_t> special_ids;
  Trie raw_trie, norm_trie;  // non-normalized / normalized added tokens (values: index in `added`)
  std::optional<Normalizer> normalizer;
  std::optional<PreTok> pretok;
  Bpe model;
  std::vector<PostProc> post;
  std::optional<Decoder> decoder;
  int64_t max_id = -1;
  std::string pretok_desc = "none";

  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<std::pair<int32_t, uint32_t>>> cache;

  const std::string* token_ptr(int32_t id) const {
    if (const auto it = added_by_id.find(id); it != added_by_id.end()) return &added[it->second].content;
    if (id >= 0 && static_cast<size_t>(id) < model.by_id.size()) return model.by_id[static_cast<size_t>(id)];
    return nullptr;
  }

  void tokenize_word(const std::string& w, std::vector<BpeTok>& out) const {
    if (w.empty()) return;
    if (model.ignore_merges)
      if (const auto it = model.vocab.find(w); it != model.vocab.end()) {
        out.push_back({it->second, 0, static_cast<uint32_t>(w.size())});
        return;
      }
    std::vector<std::pair<int32_t, uint32_t>> local;
    const std::vector<std::pair<int32_t, uint32_t>>* res = nullptr;
    const bool cacheable = w.size() <= kMaxCachedWord;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mu);
      if (const auto it = cache.find(w); it != cache.end()) local = it->second, res = &local;
    }
    if (!res) {
      model.merge_word(w, local, name);
      res = &local;
      if (cacheable) {
        std::lock_guard<std::mutex> lock(cache_mu);
        if (cache.size() >= kMaxCacheEntries) cache.clear();
        cache.emplace(w, local);
      }
    }
    // Symbol lengths add up to the word's size, except with byte fallback and a prefix or suffix (each byte token
    // counts 1, as in `tokenizers`); clamp so that every token keeps a non-empty range inside the word.
    const auto n = static_cast<uint32_t>(w.size());
    uint32_t pos = 0;
    for (const auto& [id, len] : *res) {
      const uint32_t b = std::min(pos, n - 1);
      const uint32_t e = std::max(b + 1, std::min(pos + len, n));
      out.push_back({id, b, e});
      pos = e;
    }
  }

  Encoding encode(std::string_view text) const {
    if (text.size() >= UINT32_MAX) throw Error(name, "input text of " + std::to_string(text.size()) + " bytes is too long (limit 4 GiB)");
    std::vector<Piece> pieces;
    {
      NormStr base = from_original(text);
      split_added(std::move(base), raw_trie, added, pieces);
    }
    std::vector<Piece> normed;
    normed.reserve(pieces.size());
    for (Piece& p : pieces) {
      if (p.id >= 0) {
        normed.push_back(std::move(p));
        continue;
      }
      if (normalizer) normalizer->apply(p.ns);
      split_added(std::move(p.ns), norm_trie, added, normed);
    }
    pieces.clear();
    if (pretok) pretok->apply(normed);
    Encoding enc;
    std::vector<BpeTok> toks;
    for (const Piece& p : normed) {
      if (p.ns.s.empty()) continue;
      if (p.id >= 0) {
        const Span sp = p.ns.span_all(0, p.ns.s.size());
        enc.ids.push_back(p.id);
        enc.offsets.emplace_back(sp.b, sp.e);
        continue;
      }
      toks.clear();
      tokenize_word(p.ns.s, toks);
      for (const BpeTok& t : toks) {
        const Span sp = p.ns.span(t.b, t.e);
        enc.ids.push_back(t.id);
        enc.offsets.emplace_back(sp.b, sp.e);
      }
    }
    for (const PostProc& pp : post) pp.apply(enc);
    return enc;
  }
};

namespace {

// ------------------------------------------------------------------------------------------------------------------
// Loading

// Deepest nesting of [ and { in a JSON text (outside strings).
size_t json_depth(const std::string& text) {
  size_t depth = 0, max_depth = 0;
  bool in_str = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_str) {
      if (c == '\\') ++i;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return max_depth;
}

class Loader {
 public:
  explicit Loader(Tokenizer::Impl& t) : t_(t) {}

  [[noreturn]] void fail(const std::string& why) const { throw Error(t_.name, why); }

  const json* opt(const json& o, const char* key) const {
    const auto it = o.find(key);
    return (it == o.end() || it->is_null()) ? nullptr : &*it;
  }
  void need_object(const json& j, const std::string& what) const {
    if (!j.is_object()) fail(what + " is not a JSON object");
  }
  bool boolean(const json& o, const char* key, bool def, const std::string& what) const {
    const json* v = opt(o, key);
    if (!v) return def;
    if (!v->is_boolean()) fail(what + ": '" + key + "' is not true or false");
    return v->get<bool>();
  }
  std::string str(const json& o, const char* key, const std::string& what) const {
    const json* v = opt(o, key);
    if (!v) fail(what + ": '" + key + "' is missing");
    if (!v->is_string()) fail(what + ": '" + key + "' is not a string");
    return v->get<std::string>();
  }
  std::optional<std::string> opt_str(const json& o, const char* key, const std::string& what) const {
    if (!opt(o, key)) return std::nullopt;
    return str(o, key, what);
  }
  int64_t integer(const json& v, const std::string& what) const {
    if (!v.is_number_integer()) fail(what + " is not an integer");
    if (v.is_number_unsigned()) {
      const auto u = v.get<uint64_t>();
      if (u > uint64_t(kMaxId)) fail(what + " is " + std::to_string(u) + ", above the limit " + std::to_string(kMaxId));
      return static_cast<int64_t>(u);
    }
    return v.get<int64_t>();
  }
  int32_t token_id(const json& v, const std::string& what) const {
    const int64_t id = integer(v, what);
    if (id < 0 || id > kMaxId) fail(what + " is " + std::to_string(id) + " (expected 0 to " + std::to_string(kMaxId) + ")");
    return static_cast<int32_t>(id);
  }
  std::string type_of(const json& o, const std::string& what) const {
    need_object(o, what);
    const json* v = opt(o, "type");
    if (!v) fail(what + " has no 'type'");
    if (!v->is_string()) fail(what + ": 'type' is not a string");
    return v->get<std::string>();
  }
  const json& array(const json& o, const char* key, const std::string& what) const {
    const json* v = opt(o, key);
    if (!v) fail(what + ": '" + key + "' is missing");
    if (!v->is_array()) fail(what + ": '" + key + "' is not an array");
    return *v;
  }

  // {"String": "..."} (a literal) or {"Regex": "..."} (Oniguruma syntax).
  std::shared_ptr<const Regex> pattern(const json& o, const char* key, const std::string& what) const {
    const json* p = opt(o, key);
    if (!p) fail(what + ": '" + key + "' is missing");
    if (!p->is_object() || p->size() != 1) fail(what + ": '" + key + "' is not {\"String\": ...} or {\"Regex\": ...}");
    if (const json* s = opt(*p, "String")) {
      if (!s->is_string()) fail(what + ": pattern String is not a string");
      const std::string lit = s->get<std::string>();
      check_utf8(lit, what + " pattern");
      return std::make_shared<const Regex>(regex_escape(lit), 0, t_.name, lit);
    }
    if (const json* r = opt(*p, "Regex")) {
      if (!r->is_string()) fail(what + ": pattern Regex is not a string");
      const std::string re = r->get<std::string>();
      check_utf8(re, what + " pattern");
      return std::make_shared<const Regex>(onig_to_pcre2(re), PCRE2_MULTILINE, t_.name, re);
    }
    fail(what + ": '" + key + "' is not {\"String\": ...} or {\"Regex\": ...}");
  }

  void check_utf8(const std::string& s, const std::string& what) const {
    if (lossy_utf8(s) != s) fail(what + " is not valid UTF-8");
  }

  Normalizer normalizer(const json& j, const std::string& what) const {
    const std::string type = type_of(j, what);
    Normalizer n;
    using K = Normalizer::Kind;
    if (type == "NFC") n.kind = K::NFC;
    else if (type == "NFD") n.kind = K::NFD;
    else if (type == "NFKC") n.kind = K::NFKC;
    else if (type == "NFKD") n.kind = K::NFKD;
    else if (type == "Lowercase") n.kind = K::Lowercase;
    else if (type == "Strip") {
      n.kind = K::Strip;
      n.left = boolean(j, "strip_left", false, what);
      n.right = boolean(j, "strip_right", false, what);
    } else if (type == "Replace") {
      n.kind = K::Replace;
      n.re = pattern(j, "pattern", what + " Replace");
      n.content = str(j, "content", what + " Replace");
      check_utf8(n.content, what + " Replace content");
    } else if (type == "Prepend") {
      n.kind = K::Prepend;
      n.content = str(j, "prepend", what + " Prepend");
      check_utf8(n.content, what + " Prepend");
    } else if (type == "Sequence") {
      n.kind = K::Sequence;
      const json& a = array(j, "normalizers", what + " Sequence");
      for (size_t i = 0; i < a.size(); ++i) n.seq.push_back(normalizer(a[i], what + "[" + std::to_string(i) + "]"));
    } else {
      fail(what + " type " + msg_quote(type) + " is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, Strip, Replace, Prepend, Sequence)");
    }
    return n;
  }

  uint32_t one_char(const json& o, const char* key, const std::string& what) const {
    const std::string c = str(o, key, what);
    const Utf8Char u = c.empty() ? Utf8Char{0, 0, false} : utf8_at(c.data(), c.size(), 0);
    if (!u.ok || u.len != c.size()) fail(what + ": '" + key + "' " + msg_quote(c) + " is not one character");
    return u.cp;
  }

  // Metaspace: "prepend_scheme" always | first | never; the older "add_prefix_space": false means never.
  PreTok::Prepend prepend_scheme(const json& o, const std::string& what) const {
    if (!boolean(o, "add_prefix_space", true, what)) return PreTok::Prepend::Never;
    if (!opt(o, "prepend_scheme")) return PreTok::Prepend::Always;
    const std::string s = str(o, "prepend_scheme", what);
    if (s == "always") return PreTok::Prepend::Always;
    if (s == "first") return PreTok::Prepend::First;
    if (s == "never") return PreTok::Prepend::Never;
    fail(what + ": prepend_scheme " + msg_quote(s) + " is not one of always, first, never");
  }

  static Behavior behavior_of(const std::string& s, bool* ok) {
    *ok = true;
    if (s == "Removed") return Behavior::Removed;
    if (s == "Isolated") return Behavior::Isolated;
    if (s == "MergedWithPrevious") return Behavior::MergedWithPrevious;
    if (s == "MergedWithNext") return Behavior::MergedWithNext;
    if (s == "Contiguous") return Behavior::Contiguous;
    *ok = false;
    return Behavior::Isolated;
  }
  Behavior behavior(const json& o, const std::string& what, bool required) const {
    if (!opt(o, "behavior")) {
      if (required) fail(what + ": 'behavior' is missing");
      return Behavior::Isolated;
    }
    const std::string b = str(o, "behavior", what);
    bool ok = false;
    const Behavior r = behavior_of(b, &ok);
    if (!ok) fail(what + ": behavior " + msg_quote(b) + " is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
    return r;
  }

  PreTok pre_tokenizer(const json& j, const std::string& what, std::string* desc) const {
    const std::string type = type_of(j, what);
    PreTok p;
    using K = PreTok::Kind;
    *desc = type;
    if (type == "ByteLevel") {
      p.kind = K::ByteLevel;
      p.add_prefix_space = boolean(j, "add_prefix_space", true, what);
      p.use_regex = boolean(j, "use_regex", true, what);
      if (p.use_regex) p.re = gpt2_regex();
    } else if (type == "Split") {
      p.kind = K::Split;
      p.re = pattern(j, "pattern", what + " Split");
      p.behavior = behavior(j, what + " Split", true);
      p.invert = boolean(j, "invert", false, what);
    } else if (type == "Digits") {
      p.kind = K::Digits;
      p.individual_digits = boolean(j, "individual_digits", false, what);
    } else if (type == "Punctuation") {
      p.kind = K::Punctuation;
      p.behavior = behavior(j, what + " Punctuation", false);
    } else if (type == "Whitespace") {
      p.kind = K::Whitespace;
      const std::string w = "[" + kWordClass + "]+|[^" + kWordClass + kWs + "]+";
      p.re = std::make_shared<const Regex>(w, 0, t_.name, "\\w+|[^\\w\\s]+");
    } else if (type == "WhitespaceSplit") {
      p.kind = K::WhitespaceSplit;
    } else if (type == "BertPreTokenizer") {
      p.kind = K::Bert;
    } else if (type == "CharDelimiterSplit") {
      p.kind = K::CharDelimiter;
      p.delimiter = one_char(j, "delimiter", what + " CharDelimiterSplit");
    } else if (type == "Metaspace") {
      p.kind = K::Metaspace;
      p.delimiter = one_char(j, "replacement", what + " Metaspace");
      p.prepend = prepend_scheme(j, what + " Metaspace");
      p.split = boolean(j, "split", true, what);
    } else if (type == "Sequence") {
      p.kind = K::Sequence;
      const json& a = array(j, "pretokenizers", what + " Sequence");
      std::string parts;
      for (size_t i = 0; i < a.size(); ++i) {
        std::string d;
        p.seq.push_back(pre_tokenizer(a[i], what + "[" + std::to_string(i) + "]", &d));
        if (i) parts += ", ";
        parts += d;
      }
      *desc = "Sequence[" + parts + "]";
    } else {
      fail(what + " type " + msg_quote(type) +
           " is not supported (supported: ByteLevel, Split, Digits, Punctuation, Whitespace, WhitespaceSplit, BertPreTokenizer, CharDelimiterSplit, Metaspace, Sequence)");
    }
    return p;
  }

  std::shared_ptr<const Regex> gpt2_regex() const {
    if (!gpt2_) gpt2_ = std::make_shared<const Regex>(gpt2_pattern(), 0, t_.name, "GPT-2 pre-tokenizer regex");
    return gpt2_;
  }

  // The id of a special token named in a post-processor: an added token, else the vocabulary.
  void add_post(const json& j, const std::string& what) const {
    const std::string type = type_of(j, what);
    if (type == "ByteLevel") return;  // only trims offsets, which ssmx does not do (docs/tokenizer.md)
    if (type == "Sequence") {
      const json& a = array(j, "processors", what + " Sequence");
      for (size_t i = 0; i < a.size(); ++i) add_post(a[i], what + "[" + std::to_string(i) + "]");
      return;
    }
    PostProc pp;
    if (type == "BertProcessing" || type == "RobertaProcessing") {
      auto pair_id = [&](const char* key) {
        const json* v = opt(j, key);
        if (!v || !v->is_array() || v->size() != 2 || !(*v)[0].is_string())
          fail(what + " " + type + ": '" + key + "' is not [token, id]");
        return token_id((*v)[1], what + " " + type + " " + key + " id");
      };
      const int32_t cls = pair_id("cls"), sep = pair_id("sep");
      pp.single.push_back({false, {cls}});
      pp.single.push_back({true, {}});
      pp.single.push_back({false, {sep}});
    } else if (type == "TemplateProcessing") {
      const std::string w = what + " TemplateProcessing";
      const json& single = array(j, "single", w);
      const json* sp = opt(j, "special_tokens");
      if (sp && !sp->is_object()) fail(w + ": 'special_tokens' is not an object");
      for (size_t i = 0; i < single.size(); ++i) {
        const json& item = single[i];
        const std::string wi = w + " single[" + std::to_string(i) + "]";
        need_object(item, wi);
        if (const json* seq = opt(item, "Sequence")) {
          need_object(*seq, wi);
          const std::string id = str(*seq, "id", wi);
          if (id != "A") fail(wi + ": sequence " + msg_quote(id) + " in the single template (only A is allowed)");
          pp.single.push_back({true, {}});
        } else if (const json* st = opt(item, "SpecialToken")) {
          need_object(*st, wi);
          const std::string id = str(*st, "id", wi);
          const json* def = sp ? opt(*sp, id.c_str()) : nullptr;
          if (!def) fail(wi + ": special token " + msg_quote(id) + " is not in 'special_tokens'");
          need_object(*def, wi + " special token " + msg_quote(id));
          const json& ids = array(*def, "ids", wi + " special token " + msg_quote(id));
          PostProc::Item it;
          for (size_t k = 0; k < ids.size(); ++k) it.ids.push_back(token_id(ids[k], wi + " special token " + msg_quote(id) + " id"));
          pp.single.push_back(std::move(it));
        } else {
          fail(wi + " is neither a Sequence nor a SpecialToken");
        }
      }
    } else {
      fail(what + " type " + msg_quote(type) +
           " is not supported (supported: ByteLevel, TemplateProcessing, BertProcessing, RobertaProcessing, Sequence)");
    }
    t_.post.push_back(std::move(pp));
  }

  Decoder decoder(const json& j, const std::string& what) const {
    const std::string type = type_of(j, what);
    Decoder d;
    using K = Decoder::Kind;
    if (type == "ByteLevel") d.kind = K::ByteLevel;
    else if (type == "Fuse") d.kind = K::Fuse;
    else if (type == "ByteFallback") d.kind = K::ByteFallback;
    else if (type == "Replace") {
      d.kind = K::Replace;
      d.re = pattern(j, "pattern", what + " Replace");
      d.content = str(j, "content", what + " Replace");
      check_utf8(d.content, what + " Replace content");
    } else if (type == "Strip") {
      d.kind = K::Strip;
      d.strip_char = one_char(j, "content", what + " Strip");
      const json* a = opt(j, "start");
      const json* b = opt(j, "stop");
      d.start = a ? static_cast<size_t>(std::max<int64_t>(0, integer(*a, what + " Strip start"))) : 0;
      d.stop = b ? static_cast<size_t>(std::max<int64_t>(0, integer(*b, what + " Strip stop"))) : 0;
    } else if (type == "Metaspace") {
      d.kind = K::Metaspace;
      d.strip_char = one_char(j, "replacement", what + " Metaspace");
      d.prepended = prepend_scheme(j, what + " Metaspace") != PreTok::Prepend::Never;
    } else if (type == "Sequence") {
      d.kind = K::Sequence;
      const json& a = array(j, "decoders", what + " Sequence");
      for (size_t i = 0; i < a.size(); ++i) d.seq.push_back(decoder(a[i], what + "[" + std::to_string(i) + "]"));
    } else {
      fail(what + " type " + msg_quote(type) + " is not supported (supported: ByteLevel, Replace, Fuse, Strip, ByteFallback, Metaspace, Sequence)");
    }
    return d;
  }

  void model(const json& m) const {
    need_object(m, "model");
    const json* type = opt(m, "type");
    if (type && !type->is_string()) fail("model: 'type' is not a string");
    if (type && type->get<std::string>() != "BPE")
      fail("model type " + msg_quote(type->get<std::string>()) + " is not supported (only BPE)");
    if (!type && !opt(m, "merges")) fail("model has no 'type' (and no 'merges', so it is not BPE)");
    Bpe& b = t_.model;
    b.unk_token = opt_str(m, "unk_token", "model");
    b.prefix = opt_str(m, "continuing_subword_prefix", "model");
    b.suffix = opt_str(m, "end_of_word_suffix", "model");
    b.fuse_unk = boolean(m, "fuse_unk", false, "model");
    b.byte_fallback = boolean(m, "byte_fallback", false, "model");
    b.ignore_merges = boolean(m, "ignore_merges", false, "model");
    if (const json* d = opt(m, "dropout"); d && !d->is_number()) fail("model: 'dropout' is not a number");

    const json* vocab = opt(m, "vocab");
    if (!vocab) fail("model: 'vocab' is missing");
    if (!vocab->is_object()) fail("model: 'vocab' is not an object");
    b.vocab.reserve(vocab->size());
    for (auto it = vocab->begin(); it != vocab->end(); ++it) {
      const int32_t id = token_id(it.value(), "model: id of vocab entry " + msg_quote(it.key()));
      b.vocab[it.key()] = id;
      t_.max_id = std::max<int64_t>(t_.max_id, id);
    }
    b.by_id.assign(b.vocab.empty() ? 0 : static_cast<size_t>(t_.max_id) + 1, nullptr);
    for (const auto& [tok, id] : b.vocab)
      if (!b.by_id[size_t(id)] || tok < *b.by_id[size_t(id)]) b.by_id[size_t(id)] = &tok;  // deterministic on duplicates

    const json& merges = array(m, "merges", "model");
    b.merges.reserve(merges.size());
    size_t rank = 0;
    const size_t prefix_len = b.prefix ? b.prefix->size() : 0;
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& e = merges[i];
      std::string l, r;
      if (e.is_string()) {
        const std::string& line = e.get_ref<const std::string&>();
        if (line.rfind("#version", 0) == 0) continue;  // a comment line of merges.txt
        const size_t sp = line.find(' ');
        if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
          fail("merge " + std::to_string(rank) + " " + msg_quote(line) + " is not two tokens separated by one space");
        l = line.substr(0, sp), r = line.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        l = e[0].get<std::string>(), r = e[1].get<std::string>();
      } else {
        fail("merge " + std::to_string(rank) + " is neither \"a b\" nor [\"a\", \"b\"]");
      }
      const auto li = b.vocab.find(l), ri = b.vocab.find(r);
      if (li == b.vocab.end()) fail("merge " + std::to_string(rank) + " refers to unknown token " + msg_quote(l));
      if (ri == b.vocab.end()) fail("merge " + std::to_string(rank) + " refers to unknown token " + msg_quote(r));
      if (prefix_len > 0 && r.compare(0, prefix_len, *b.prefix) != 0)
        fail("merge " + std::to_string(rank) + ": " + msg_quote(r) + " does not start with the continuing_subword_prefix");
      const std::string joined = l + r.substr(prefix_len);
      const auto ji = b.vocab.find(joined);
      if (ji == b.vocab.end()) fail("merge " + std::to_string(rank) + " makes " + msg_quote(joined) + ", which is not in the vocabulary");
      b.merges[Bpe::key(li->second, ri->second)] = {static_cast<int32_t>(rank), ji->second};  // the last duplicate wins
      ++rank;
    }
    b.merge_count = rank;
  }

  // Ids are given as `tokenizers` gives them when it loads a file (AddedVocabulary::add_tokens): a token whose
  // content is in the model vocabulary takes that id; any other takes the next id after the model vocabulary and the
  // added tokens so far. The file's "id" agrees in files written by `tokenizers`; where it does not, `tokenizers`
  // warns and uses its own id, and so does ssmx. Empty contents and repeated contents are ignored.
  void added_tokens(const json& a) const {
    if (!a.is_array()) fail("'added_tokens' is not an array");
    const auto model_size = static_cast<int64_t>(t_.model.vocab.size());
    int64_t added_max = -1;
    for (size_t i = 0; i < a.size(); ++i) {
      const std::string w = "added_tokens[" + std::to_string(i) + "]";
      const json& o = a[i];
      need_object(o, w);
      AddedToken t;
      const json* id = opt(o, "id");
      if (!id) fail(w + ": 'id' is missing");
      (void)token_id(*id, w + " id");
      t.content = str(o, "content", w);
      check_utf8(t.content, w + " content");
      t.special = boolean(o, "special", false, w);
      t.single_word = boolean(o, "single_word", false, w);
      t.lstrip = boolean(o, "lstrip", false, w);
      t.rstrip = boolean(o, "rstrip", false, w);
      t.normalized = boolean(o, "normalized", !t.special, w);
      if (t.content.empty() || t_.added_by_content.count(t.content)) continue;
      int64_t new_id;
      if (const auto it = t_.model.vocab.find(t.content); it != t_.model.vocab.end()) new_id = it->second;
      else if (added_max < 0) new_id = model_size;
      else new_id = (added_max >= model_size || model_size == 0) ? added_max + 1 : model_size;
      if (new_id > kMaxId) fail(w + " would get id " + std::to_string(new_id) + ", above the limit " + std::to_string(kMaxId));
      added_max = std::max(added_max, new_id);
      t.id = static_cast<int32_t>(new_id);
      t_.max_id = std::max<int64_t>(t_.max_id, t.id);
      t_.added_by_content.emplace(t.content, t.id);
      t_.added.push_back(std::move(t));
    }
  }

  void load(const std::string& text) const {
    if (json_depth(text) > kMaxJsonDepth) fail("JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    json j;
    try {
      j = json::parse(text);
    } catch (const json::parse_error& e) {
      std::string why = e.what();  // "[json.exception.parse_error.101] parse error at line 1, column 5: REASON"
      size_t p = why.find("parse error");
      if (p != std::string::npos) p = why.find(": ", p);
      why = p == std::string::npos ? std::string() : ": " + lossy_utf8(why.substr(p + 2));
      for (char& c : why)
        if (c == '\n' || c == '\r') c = ' ';
      fail("invalid JSON at byte " + std::to_string(e.byte) + why);
    }
    if (!j.is_object()) fail("not a tokenizer.json: the top level is not a JSON object");
    const json* m = opt(j, "model");
    if (!m) fail("not a tokenizer.json: no 'model'");
    model(*m);
    if (const json* a = opt(j, "added_tokens")) added_tokens(*a);
    if (const json* n = opt(j, "normalizer")) t_.normalizer = normalizer(*n, "normalizer");
    if (const json* p = opt(j, "pre_tokenizer")) t_.pretok = pre_tokenizer(*p, "pre_tokenizer", &t_.pretok_desc);
    if (const json* p = opt(j, "post_processor")) add_post(*p, "post_processor");
    if (const json* d = opt(j, "decoder")) t_.decoder = decoder(*d, "decoder");

    // Added-token tables. Normalized tokens are matched in their normalized form.
    for (size_t i = 0; i < t_.added.size(); ++i) {
      const AddedToken& a = t_.added[i];
      t_.added_by_id[a.id] = i;  // a later token with the same id replaces the earlier one
      if (a.special) t_.special_contents.insert(a.content);
      if (!a.normalized) {
        t_.raw_trie.add(a.content, static_cast<int32_t>(i));
      } else {
        NormStr ns = from_original(a.content);
        if (t_.normalizer) t_.normalizer->apply(ns);
        t_.norm_trie.add(ns.s, static_cast<int32_t>(i));
      }
    }
    for (const auto& [id, i] : t_.added_by_id)
      if (t_.added[i].special) t_.special_ids.insert(id);
  }

 private:
  Tokenizer::Impl& t_;
  mutable std::shared_ptr<const Regex> gpt2_;
};

}  // namespace

// ------------------------------------------------------------------------------------------------------------------
// Public API

Tokenizer Tokenizer::from_json_text(const std::string& text, const std::string& name) {
  auto impl = std::make_shared<Impl>();
  impl->name = name;
  try {
    Loader(*impl).load(text);
  } catch (const json::exception& e) {  // a JSON access the loader did not guard; still one line with the name
    std::string why = e.what();
    for (char& c : why)
      if (c == '\n' || c == '\r') c = ' ';
    throw Error(name, "unexpected tokenizer.json structure: " + why);
  } catch (const std::bad_alloc&) {
    throw Error(name, "out of memory while loading");
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  if (path.size() > 6 && path.compare(path.size() - 6, 6, ".model") == 0) {
    // SentencePiece; add_bos_token from tokenizer_config.json next to it (transformers' Gemma tokenizer default).
    bool add_bos = false;
    const std::filesystem::path cfg = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
    if (std::filesystem::exists(cfg)) {
      std::ifstream cf(cfg);
      const json c = json::parse(cf, nullptr, false);
      if (c.is_discarded() || !c.is_object()) throw Error(cfg.string(), "not a JSON object");
      if (c.contains("add_bos_token")) {
        if (!c["add_bos_token"].is_boolean()) throw Error(cfg.string(), "add_bos_token is not true or false");
        add_bos = c["add_bos_token"].get<bool>();
      }
    }
    auto impl = std::make_shared<Impl>();
    impl->name = path;
    impl->spm = spm_load(path, add_bos);
    impl->max_id = int64_t(spm_vocab_size(*impl->spm)) - 1;
    return Tokenizer(std::move(impl));
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0) throw Error(path, "cannot read the file");
  if (static_cast<uint64_t>(size) > kMaxFileBytes) throw Error(path, "file of " + std::to_string(size) + " bytes is too large for a tokenizer.json (limit 1 GiB)");
  f.seekg(0, std::ios::beg);
  std::string text(static_cast<size_t>(size), '\0');
  if (size > 0 && !f.read(text.data(), size)) throw Error(path, "cannot read the file");
  return from_json_text(text, path);
}

Encoding Tokenizer::encode(std::string_view text) const {
  if (impl_->spm) return spm_encode(*impl_->spm, text);
  return impl_->encode(text);
}

std::vector<int32_t> Tokenizer::encode_ids(std::string_view text) const { return encode(text).ids; }

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  if (impl_->spm) return spm_decode(*impl_->spm, ids, skip_special);
  std::vector<std::string> toks;
  toks.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* t = impl_->token_ptr(id);
    if (!t) continue;
    if (skip_special && impl_->special_contents.count(*t)) continue;
    toks.push_back(*t);
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < toks.size(); ++i) {
      if (i) out += ' ';
      out += toks[i];
    }
    return out;
  }
  impl_->decoder->apply(toks);
  std::string out;
  for (const std::string& t : toks) out += t;
  return out;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const std::string* t = impl_->spm ? spm_piece(*impl_->spm, id) : impl_->token_ptr(id)) return *t;
  if (id < 0 || static_cast<size_t>(id) >= vocab_size())
    throw Error(impl_->name, "token id " + std::to_string(id) + " is out of range (vocabulary size " + std::to_string(vocab_size()) + ")");
  throw Error(impl_->name, "token id " + std::to_string(id) + " names no token");
}

std::string Tokenizer::token_text(int32_t id) const {
  if (impl_->spm) return spm_token_text(*impl_->spm, id);
  if (!impl_->token_ptr(id)) return {};
  return decode({id}, false);
}

std::optional<int32_t> Tokenizer::token_to_id(const std::string& tok) const {
  if (impl_->spm) return spm_piece_id(*impl_->spm, tok);
  if (const auto it = impl_->added_by_content.find(tok); it != impl_->added_by_content.end()) return it->second;
  if (const auto it = impl_->model.vocab.find(tok); it != impl_->model.vocab.end()) return it->second;
  return std::nullopt;
}

size_t Tokenizer::vocab_size() const { return static_cast<size_t>(impl_->max_id + 1); }

bool Tokenizer::is_special(int32_t id) const {
  if (impl_->spm) return spm_is_special(*impl_->spm, id);
  return impl_->special_ids.count(id) != 0;
}

std::string Tokenizer::summary() const {
  if (impl_->spm) return spm_summary(*impl_->spm);
  return "BPE, " + std::to_string(vocab_size()) + " tokens, " + std::to_string(impl_->model.merge_count) +
         " merges, pre-tokenizer " + impl_->pretok_desc;
}

const std::string& Tokenizer::name() const { return impl_->name; }

}  // namespace ssmx

// libFuzzer target: tokenizer.json loading, encoding and decoding on arbitrary bytes. The input up to its first NUL
// byte is the tokenizer.json text; what follows (if anything) is one more text to encode. Every input must either
// load or throw ssmx::Error, and a loaded tokenizer must encode and decode without crashing (it may throw
// ssmx::Error, e.g. for a user regex that backtracks too much). Run with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/tokenizer.h"

namespace {

void exercise(const ssmx::Tokenizer& t, const std::string& text) {
  try {
    const ssmx::Encoding enc = t.encode(text);
    if (enc.ids.size() != enc.offsets.size()) __builtin_trap();
    for (const auto& [b, e] : enc.offsets)
      if (b > e || e > text.size()) __builtin_trap();
    (void)t.decode(enc.ids, false);
    (void)t.decode(enc.ids, true);
    for (int32_t id : enc.ids) (void)t.token_text(id);
  } catch (const ssmx::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* p = reinterpret_cast<const char*>(data);
  const void* nul = std::memchr(p, 0, size);
  const size_t json_len = nul ? static_cast<size_t>(static_cast<const char*>(nul) - p) : size;
  const std::string json(p, json_len);
  const std::string extra = nul ? std::string(p + json_len + 1, size - json_len - 1) : std::string();
  try {
    const ssmx::Tokenizer t = ssmx::Tokenizer::from_json_text(json, "fuzz.json");
    (void)t.summary();
    static const char* kTexts[] = {
        "Hello world", "  leading spaces", "a\n\nb\t\tc   ", "don't I'll 'RE", "1234567 3.14",
        "<|endoftext|>x<|padding|>", "caf\xC3\xA9 cafe\xCC\x81 \xEF\xBD\x86\xEF\xBD\x95", "\xE6\x88\x91\xE6\x83\xB3 \xF0\x9F\x9A\x80",
        "bad \xFF\xC0 utf8 \xE6\x88", "", " ", "!!!...???", "\xC2\x85\xC2\xA0\xE3\x80\x80x"};
    for (const char* s : kTexts) exercise(t, s);
    exercise(t, std::string("nul\0inside", 10));
    if (!extra.empty()) exercise(t, extra);
    const size_t v = t.vocab_size();
    std::vector<int32_t> ids;
    for (size_t i = 0; i < v && i < 64; ++i) ids.push_back(static_cast<int32_t>(i));
    ids.push_back(-1);
    ids.push_back(static_cast<int32_t>(v));
    (void)t.decode(ids, false);
    (void)t.decode(ids, true);
    for (int32_t id : ids) {
      try {
        (void)t.id_to_token(id);
      } catch (const ssmx::Error&) {
      }
      (void)t.is_special(id);
    }
    (void)t.token_to_id("a");
  } catch (const ssmx::Error&) {
  }
  return 0;
}

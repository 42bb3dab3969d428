// ssmx/io/sentencepiece.h — SentencePiece `tokenizer.model` files (RecurrentGemma, Gemma) through Debian's
// libsentencepiece, behind the Tokenizer interface of io/tokenizer.h (Tokenizer::from_file picks it for *.model).
//
// Encoding is the library's own (normalisation, unigram/BPE, byte fallback) with the byte offsets it reports into the
// original text. A BOS token is prepended when `add_bos` (tokenizer_config.json's add_bos_token next to the file;
// Gemma's tokenizers set it, as transformers' GemmaTokenizer does by default). token_text() of a piece turns "▁" into
// a space and a byte piece <0xNN> into that byte, so that word grouping works as for byte-level BPE.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ssmx {

struct Encoding;
struct SpmModel;

// Throws ssmx::Error(path, reason) for an unreadable or invalid model, or when ssmx was built without the library.
std::shared_ptr<const SpmModel> spm_load(const std::string& path, bool add_bos);
Encoding spm_encode(const SpmModel& m, std::string_view text);
std::string spm_decode(const SpmModel& m, const std::vector<int32_t>& ids, bool skip_special);
const std::string* spm_piece(const SpmModel& m, int32_t id);  // nullptr outside the vocabulary
std::optional<int32_t> spm_piece_id(const SpmModel& m, const std::string& piece);
std::string spm_token_text(const SpmModel& m, int32_t id);
size_t spm_vocab_size(const SpmModel& m);
bool spm_is_special(const SpmModel& m, int32_t id);  // control tokens (<bos>, <eos>, <pad>)
std::string spm_summary(const SpmModel& m);

}  // namespace ssmx

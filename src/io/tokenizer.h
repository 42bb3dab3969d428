// ssmx/io/tokenizer.h — Hugging Face `tokenizer.json` tokenizers of the BPE kind (GPT-NeoX, Falcon, GPT-2, ...).
//
// The pipeline is the one of the `tokenizers` library, stage by stage: added tokens that are not normalized are cut
// out of the raw text (leftmost-longest), the normalizer runs on what is left, normalized added tokens are cut out,
// the pre-tokenizer splits the rest into words (ByteLevel, Split, Digits, Punctuation, Whitespace, ...), and the BPE
// model merges each word (lowest rank first, ties leftmost). A post-processor may add special tokens around the
// result (TemplateProcessing, Bert, Roberta). Decoding runs the decoder chain (ByteLevel, ...) with U+FFFD for
// invalid UTF-8. Every token carries the byte range of the ORIGINAL text it came from. See docs/tokenizer.md.
//
// Loading never crashes on a bad file: every problem is an ssmx::Error "NAME: reason" on one line. A Tokenizer is
// immutable after loading (apart from an internal word cache behind a mutex), so one object may encode from several
// threads. Copies share the loaded data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ssmx {

struct Encoding {
  std::vector<int32_t> ids;
  // For each id, the byte range [begin, end) of the original UTF-8 input it stands for. Tokens that are part of a
  // multi-byte character get the whole character; tokens inserted by the post-processor get an empty range at the
  // end of the previous token. begin and end never decrease along the sequence.
  std::vector<std::pair<size_t, size_t>> offsets;
};

class Tokenizer {
 public:
  // Throws ssmx::Error(path, reason).
  static Tokenizer from_file(const std::string& path);
  // `name` stands for the file in error messages.
  static Tokenizer from_json_text(const std::string& json, const std::string& name);

  // Adds no BOS/EOS unless the post-processor says so (TemplateProcessing, BertProcessing, RobertaProcessing).
  // Invalid UTF-8 in `text` is read as U+FFFD (one per maximal invalid subsequence).
  Encoding encode(std::string_view text) const;
  std::vector<int32_t> encode_ids(std::string_view text) const;
  // Ids that name no token are skipped (as in `tokenizers`); skip_special drops special added tokens.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  // The raw vocabulary string ("Ġthe"); an added token's content. Throws ssmx::Error for ids that name no token.
  std::string id_to_token(int32_t id) const;
  // The decoded text of a single token (for display); "" for ids that name no token.
  std::string token_text(int32_t id) const;
  std::optional<int32_t> token_to_id(const std::string& tok) const;
  // 1 + the largest id of the vocabulary and the added tokens.
  size_t vocab_size() const;
  bool is_special(int32_t id) const;
  // "BPE, 50277 tokens, 50009 merges, pre-tokenizer ByteLevel"
  std::string summary() const;
  // The name given at load time (the path for from_file).
  const std::string& name() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace ssmx

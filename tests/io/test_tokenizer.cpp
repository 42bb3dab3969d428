// tokenizer.json: the GPT-NeoX conformance set (when ../shared has it), the tiny fixture tokenizer against its Python
// oracle, hand-written tokenizers for each pipeline stage, offsets, decoding, and one-line errors naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "../test_util.h"
#include "core/error.h"
#include "io/tokenizer.h"

using namespace ssmx;
namespace fs = std::filesystem;

namespace {

std::string tok_file(const std::string& name) { return test::data_dir() + "/tokenizer/" + name; }
std::string neox_dir() { return test::shared_dir() + "/data/gpt-neox-20b"; }

// Runs fn, which must throw an ssmx::Error whose one-line message contains `where` and `reason`.
void expect_error(const std::function<void()>& fn, const std::string& where, const std::string& reason) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected '" << reason << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(where), std::string::npos) << "message: " << msg << "\nexpected to name: " << where;
    EXPECT_NE(msg.find(reason), std::string::npos) << "message: " << msg << "\nexpected to contain: " << reason;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message must be one line: " << msg;
  }
}

// Offsets: one per id, inside the text, begin <= end, and neither begin nor end ever decreases.
void expect_sane_offsets(const Encoding& enc, const std::string& text) {
  ASSERT_EQ(enc.offsets.size(), enc.ids.size());
  size_t pb = 0, pe = 0;
  for (size_t i = 0; i < enc.offsets.size(); ++i) {
    const auto [b, e] = enc.offsets[i];
    EXPECT_LE(b, e) << "token " << i;
    EXPECT_LE(e, text.size()) << "token " << i;
    EXPECT_GE(b, pb) << "token " << i;
    EXPECT_GE(e, pe) << "token " << i;
    pb = b, pe = e;
  }
}

// The GPT-NeoX conformance inputs: cases are separated by "\n__ggml_vocab_test__\n" (the file ends with one), so
// a case "\n" is written as an empty line before the separator line.
std::vector<std::string> read_conformance_inputs(const std::string& path) {
  const std::string text = test::read_file(path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    const size_t k = text.find(sep, pos);
    if (k == std::string::npos) break;
    out.push_back(text.substr(pos, k - pos));
    pos = k + sep.size();
  }
  EXPECT_EQ(pos, text.size()) << "text after the last separator";
  return out;
}

std::vector<std::vector<int32_t>> read_conformance_outputs(const std::string& path) {
  const std::string text = test::read_file(path);
  std::vector<std::vector<int32_t>> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t e = text.find('\n', pos);
    if (e == std::string::npos) e = text.size();
    std::vector<int32_t> ids;
    const std::string line = text.substr(pos, e - pos);
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && line[i] == ' ') ++i;
      size_t j = i;
      while (j < line.size() && line[j] != ' ') ++j;
      if (j > i) ids.push_back(std::stoi(line.substr(i, j - i)));
      i = j;
    }
    out.push_back(ids);
    pos = e + 1;
  }
  return out;
}

std::string ids_str(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t x : v) {
    if (!s.empty()) s += ' ';
    s += std::to_string(x);
  }
  return s;
}

// The tokens of an encoding, as vocabulary strings.
std::vector<std::string> tokens_of(const Tokenizer& t, const std::string& text) {
  std::vector<std::string> out;
  for (int32_t id : t.encode_ids(text)) out.push_back(t.id_to_token(id));
  return out;
}

// A tokenizer.json whose BPE vocabulary holds the single characters of `alphabet` and the strings `pieces`, with
// ignore_merges, so that every pre-tokenized piece that is in `pieces` comes out as one token: the tokens show how
// the pre-tokenizer cut the text.
std::string piece_tokenizer_json(const nlohmann::json& pre_tokenizer, const std::string& alphabet,
                                 const std::vector<std::string>& pieces, const nlohmann::json& normalizer = nullptr) {
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  for (char c : alphabet)
    if (!vocab.contains(std::string(1, c))) vocab[std::string(1, c)] = id++;
  for (const std::string& p : pieces)
    if (!vocab.contains(p)) vocab[p] = id++;
  nlohmann::json j = {{"version", "1.0"},
                      {"added_tokens", nlohmann::json::array()},
                      {"normalizer", normalizer},
                      {"pre_tokenizer", pre_tokenizer},
                      {"post_processor", nullptr},
                      {"decoder", nullptr},
                      {"model",
                       {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}, {"ignore_merges", true}}}};
  return j.dump();
}

}  // namespace

// ---- GPT-NeoX-20B (../shared/data/gpt-neox-20b) ----

TEST(Tokenizer, NeoxConformance46Cases) {
  if (!fs::exists(neox_dir())) GTEST_SKIP() << neox_dir() << " is absent (the GPT-NeoX conformance set lives in ../shared)";
  const Tokenizer t = Tokenizer::from_file(neox_dir() + "/tokenizer.json");
  const auto inputs = read_conformance_inputs(neox_dir() + "/conformance.inp");
  const auto outputs = read_conformance_outputs(neox_dir() + "/conformance.out");
  ASSERT_EQ(inputs.size(), 46u);
  ASSERT_EQ(outputs.size(), 46u);
  int pass = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const std::vector<int32_t> got = t.encode_ids(inputs[k]);
    EXPECT_EQ(ids_str(got), ids_str(outputs[k])) << "case " << k << ": \"" << inputs[k] << "\"";
    pass += got == outputs[k];
  }
  EXPECT_EQ(pass, 46);
}

TEST(Tokenizer, NeoxRoundTripAndOffsets) {
  if (!fs::exists(neox_dir())) GTEST_SKIP() << neox_dir() << " is absent";
  const Tokenizer t = Tokenizer::from_file(neox_dir() + "/tokenizer.json");
  for (const std::string& text : read_conformance_inputs(neox_dir() + "/conformance.inp")) {
    const Encoding enc = t.encode(text);
    EXPECT_EQ(t.decode(enc.ids), text);
    expect_sane_offsets(enc, text);
    // None of these inputs changes under NFC, so the tokens tile the text exactly (a token that is part of a
    // multi-byte character covers the whole character, so neighbours may share that character).
    if (!enc.ids.empty()) {
      EXPECT_EQ(enc.offsets.front().first, 0u);
      EXPECT_EQ(enc.offsets.back().second, text.size());
      for (size_t i = 1; i < enc.offsets.size(); ++i) EXPECT_LE(enc.offsets[i].first, enc.offsets[i - 1].second);
    }
  }
}

TEST(Tokenizer, NeoxVocabularyAndSpecials) {
  if (!fs::exists(neox_dir())) GTEST_SKIP() << neox_dir() << " is absent";
  const Tokenizer t = Tokenizer::from_file(neox_dir() + "/tokenizer.json");
  // This copy (the RWKV-repo one) adds <|im_start|>, <|im_end|>, "assistant" and "RWKV" as ids 50277..50280.
  EXPECT_EQ(t.vocab_size(), 50281u);
  EXPECT_EQ(t.summary(), "BPE, 50281 tokens, 50009 merges, pre-tokenizer ByteLevel");
  EXPECT_NE(t.summary().find("pre-tokenizer ByteLevel"), std::string::npos) << t.summary();
  EXPECT_EQ(t.id_to_token(0), "<|endoftext|>");
  EXPECT_TRUE(t.is_special(0));
  EXPECT_FALSE(t.is_special(50276));
  EXPECT_EQ(t.id_to_token(50276), "  ");
  EXPECT_EQ(t.token_to_id("Ġthe"), std::optional<int32_t>(253));
  EXPECT_EQ(t.token_text(253), " the");
  EXPECT_EQ(t.encode_ids("<|endoftext|>Hello"), (std::vector<int32_t>{0, 12092}));
  EXPECT_EQ(t.decode({0, 12092}, /*skip_special=*/true), "Hello");
  expect_error([&] { (void)t.id_to_token(50281); }, "tokenizer.json", "token id 50281 is out of range");
  // Fullwidth letters survive NFC; a decomposed é is composed, and its tokens point at both original characters.
  const std::string text = "cafe\xCC\x81!";
  const Encoding enc = t.encode(text);
  EXPECT_EQ(t.decode(enc.ids), "caf\xC3\xA9!");
  expect_sane_offsets(enc, text);
  EXPECT_EQ(enc.offsets.back(), (std::pair<size_t, size_t>(6, 7)));
}

TEST(Tokenizer, NeoxLargeInputIsFast) {
  if (!fs::exists(neox_dir())) GTEST_SKIP() << neox_dir() << " is absent";
  const Tokenizer t = Tokenizer::from_file(neox_dir() + "/tokenizer.json");
  std::string text;
  for (const std::string& s : read_conformance_inputs(neox_dir() + "/conformance.inp")) text += s + " ";
  while (text.size() < (1u << 20)) text += text;
  const Encoding enc = t.encode(text);
  EXPECT_GT(enc.ids.size(), text.size() / 8);
  EXPECT_EQ(t.decode(enc.ids), text);
}

// ---- the tiny fixture tokenizer (GPT-NeoX layout) against scripts/make_tokenizer.py ----

TEST(Tokenizer, TinyFixtureMatchesPythonOracle) {
  const Tokenizer t = Tokenizer::from_file(tok_file("tiny-tokenizer.json"));
  EXPECT_EQ(t.vocab_size(), 509u);
  const auto cases = nlohmann::json::parse(test::read_file(tok_file("tiny-expected.json")));
  ASSERT_GE(cases.size(), 20u);
  for (const auto& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    const std::vector<int32_t> want = c.at("ids").get<std::vector<int32_t>>();
    const Encoding enc = t.encode(text);
    EXPECT_EQ(ids_str(enc.ids), ids_str(want)) << "text: \"" << text << "\"";
    expect_sane_offsets(enc, text);
  }
}

TEST(Tokenizer, TinyFixtureRoundTripsRandomText) {
  const Tokenizer t = Tokenizer::from_file(tok_file("tiny-tokenizer.json"));
  const std::vector<std::string> atoms = {"the", " movie", "  ", "\n", "\t", "don't", "1999", "!", "...", "\xC3\xA9",
                                          "\xE6\x88\x91", "\xF0\x9F\x98\x81", " ", "<|endoftext|>", "\xEF\xBD\x86", "'ll"};
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    const int n = int(rng() % 12);
    for (int i = 0; i < n; ++i) text += atoms[rng() % atoms.size()];
    const Encoding enc = t.encode(text);
    EXPECT_EQ(t.decode(enc.ids), text);
    expect_sane_offsets(enc, text);
  }
}

// ---- hand-written tokenizers (tests/data/tokenizer/tokenizer-*.json) ----

TEST(Tokenizer, BothMergeSerialisationsGiveTheSameIds) {
  const Tokenizer a = Tokenizer::from_file(tok_file("tokenizer-merges-strings.json"));
  const Tokenizer b = Tokenizer::from_file(tok_file("tokenizer-merges-pairs.json"));
  EXPECT_EQ(a.summary(), "BPE, 21 tokens, 7 merges, pre-tokenizer ByteLevel");
  EXPECT_EQ(b.summary(), a.summary());
  for (const std::string text : {"abcd", " abcd", "ab cd", "a  b", "ab!\n12", " ab abc", "   a"}) {
    EXPECT_EQ(ids_str(a.encode_ids(text)), ids_str(b.encode_ids(text))) << text;
  }
  // Lowest rank first with the neighbours re-checked: "abcd" is ab(r0), then abc(r2); cd(r4) never applies.
  EXPECT_EQ(a.encode_ids("abcd"), (std::vector<int32_t>{15, 7}));
  // " abcd": ab(r0) first makes Ġa(r1) stale; Ġab(r3) is beaten by abc(r2), then Ġabc(r5).
  EXPECT_EQ(a.encode_ids(" abcd"), (std::vector<int32_t>{18, 7}));
  EXPECT_EQ(a.encode_ids("ab!\n12"), (std::vector<int32_t>{12, 9, 3, 10, 11}));
  // Characters without a vocabulary entry (unk_token null) are dropped before merging: "axb" gives "ab".
  EXPECT_EQ(a.encode_ids("axb"), (std::vector<int32_t>{12}));
}

TEST(Tokenizer, SpecialTokensAreCutOutFirst) {
  const Tokenizer t = Tokenizer::from_file(tok_file("tokenizer-merges-strings.json"));
  EXPECT_EQ(t.encode_ids("a<|endoftext|>b"), (std::vector<int32_t>{4, 0, 5}));
  EXPECT_EQ(t.encode_ids("<|pad|><|endoftext|>"), (std::vector<int32_t>{1, 0}));
  // The special token splits the words: "ab" is not merged across it, and " a" after it keeps its space.
  EXPECT_EQ(t.encode_ids("a<|pad|>b a"), (std::vector<int32_t>{4, 1, 5, 13}));
  // A broken special is ordinary text ('<', '|' and 'p' have no vocabulary entry and are dropped).
  EXPECT_EQ(t.encode_ids("<|pad|"), (std::vector<int32_t>{4, 7}));
  const Encoding enc = t.encode("ab<|endoftext|>cd");
  EXPECT_EQ(enc.ids, (std::vector<int32_t>{12, 0, 16}));
  EXPECT_EQ(enc.offsets, (std::vector<std::pair<size_t, size_t>>{{0, 2}, {2, 15}, {15, 17}}));
  EXPECT_TRUE(t.is_special(0));
  EXPECT_TRUE(t.is_special(1));
  EXPECT_FALSE(t.is_special(19));
  EXPECT_FALSE(t.is_special(4));
  EXPECT_EQ(t.token_to_id("<|pad|>"), std::optional<int32_t>(1));
  EXPECT_EQ(t.token_to_id("zz"), std::nullopt);
}

TEST(Tokenizer, SpaceRunAddedTokens) {
  const Tokenizer t = Tokenizer::from_file(tok_file("tokenizer-merges-strings.json"));
  // Runs of spaces are normalized added tokens, matched leftmost-longest before pre-tokenization.
  EXPECT_EQ(t.encode_ids("a  b"), (std::vector<int32_t>{4, 19, 5}));
  EXPECT_EQ(t.encode_ids("a   b"), (std::vector<int32_t>{4, 20, 5}));
  EXPECT_EQ(t.encode_ids("a    b"), (std::vector<int32_t>{4, 20, 2, 5}));
  EXPECT_EQ(t.encode_ids("a     b"), (std::vector<int32_t>{4, 20, 19, 5}));
  // A single space stays with the next word.
  EXPECT_EQ(t.encode_ids("a ab"), (std::vector<int32_t>{4, 14}));
  const Encoding enc = t.encode("a    b");
  EXPECT_EQ(enc.offsets, (std::vector<std::pair<size_t, size_t>>{{0, 1}, {1, 4}, {4, 5}, {5, 6}}));
  EXPECT_EQ(t.decode(enc.ids), "a    b");
  EXPECT_EQ(t.id_to_token(20), "   ");
  EXPECT_EQ(t.token_text(20), "   ");
}

TEST(Tokenizer, DecodeSkipsSpecialTokensOnRequest) {
  const Tokenizer t = Tokenizer::from_file(tok_file("tokenizer-merges-strings.json"));
  const std::vector<int32_t> ids = t.encode_ids("<|endoftext|>ab cd<|pad|>  ab");
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 12, 2, 16, 1, 19, 12}));
  EXPECT_EQ(t.decode(ids), "<|endoftext|>ab cd<|pad|>  ab");
  EXPECT_EQ(t.decode(ids, /*skip_special=*/true), "ab cd  ab");
  // Ids that name no token are skipped, as `tokenizers` does.
  EXPECT_EQ(t.decode({12, 999, -1, 16}), "abcd");
  EXPECT_EQ(t.token_text(999), "");
  EXPECT_EQ(t.token_text(2), " ");
  EXPECT_EQ(t.id_to_token(2), "Ġ");
  EXPECT_EQ(t.vocab_size(), 21u);
  expect_error([&] { (void)t.id_to_token(21); }, "tokenizer-merges-strings.json", "token id 21 is out of range (vocabulary size 21)");
  expect_error([&] { (void)t.id_to_token(-3); }, "tokenizer-merges-strings.json", "token id -3 is out of range");
}

TEST(Tokenizer, FalconStyleSequenceOfPunctuationByteLevelDigitsSplit) {
  const Tokenizer t = Tokenizer::from_file(tok_file("tokenizer-falcon-style.json"));
  EXPECT_EQ(t.summary(), "BPE, 20 tokens, 8 merges, pre-tokenizer Sequence[Punctuation, ByteLevel, Digits, Split]");
  // Punctuation (Contiguous) runs first, so " !." is cut into " " and "!." (ByteLevel alone would give "Ġ!.").
  EXPECT_EQ(t.encode_ids("a !."), (std::vector<int32_t>{3, 1, 16}));
  // Digits cuts "Ġ12345" into "Ġ" | "12345"; Split [0-9]{3} then isolates "123" from "45".
  EXPECT_EQ(t.encode_ids("a 12345"), (std::vector<int32_t>{3, 1, 12, 14}));
  EXPECT_EQ(t.encode_ids(">>TITLE<<a a"), (std::vector<int32_t>{19, 3, 18}));
  EXPECT_EQ(t.decode({3, 1, 12, 14}), "a 12345");
}

TEST(Tokenizer, SplitBehaviors) {
  // The example of the `tokenizers` documentation, with "the-final--countdown" shortened to "a-b--c".
  const std::string text = "a-b--c";
  auto split = [&](const std::string& behavior, const std::vector<std::string>& want, bool invert = false,
                   const nlohmann::json& pattern = {{"String", "-"}}) {
    const nlohmann::json pre = {{"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", invert}};
    const Tokenizer t = Tokenizer::from_json_text(piece_tokenizer_json(pre, "abc-", want), "split.json");
    EXPECT_EQ(tokens_of(t, text), want) << behavior;
  };
  split("Removed", {"a", "b", "c"});
  split("Isolated", {"a", "-", "b", "-", "-", "c"});
  split("MergedWithPrevious", {"a-", "b-", "-", "c"});
  split("MergedWithNext", {"a", "-b", "-", "-c"});
  split("Contiguous", {"a", "-", "b", "--", "c"});
  // invert: what [a-z]+ does not match (the dashes) counts as the match, so Removed drops the dashes.
  split("Removed", {"a", "b", "c"}, true, {{"Regex", "[a-z]+"}});
  split("Removed", {"-", "--"}, true, {{"Regex", "-+"}});
  split("Isolated", {"a", "-", "b", "--", "c"}, false, {{"Regex", "-+"}});
}

TEST(Tokenizer, DigitsPunctuationWhitespacePreTokenizers) {
  auto pieces = [](const nlohmann::json& pre, const std::string& text, const std::vector<std::string>& want) {
    const Tokenizer t = Tokenizer::from_json_text(piece_tokenizer_json(pre, "ab12$!. ", want), "pre.json");
    EXPECT_EQ(tokens_of(t, text), want) << pre.dump() << " on \"" << text << "\"";
  };
  pieces({{"type", "Digits"}, {"individual_digits", false}}, "ab12a1", {"ab", "12", "a", "1"});
  pieces({{"type", "Digits"}, {"individual_digits", true}}, "ab12a1", {"ab", "1", "2", "a", "1"});
  pieces({{"type", "Punctuation"}}, "a!!b.", {"a", "!", "!", "b", "."});
  pieces({{"type", "Punctuation"}, {"behavior", "Contiguous"}}, "a!!b.", {"a", "!!", "b", "."});
  pieces({{"type", "Punctuation"}, {"behavior", "MergedWithPrevious"}}, "a!b$", {"a!", "b$"});
  pieces({{"type", "Whitespace"}}, "ab  $!a1 ", {"ab", "$!", "a1"});
  pieces({{"type", "WhitespaceSplit"}}, "ab  $!a1 ", {"ab", "$!a1"});
  pieces({{"type", "Sequence"}, {"pretokenizers", {{{"type", "WhitespaceSplit"}}, {{"type", "Digits"}}}}}, "a1 b2",
         {"a", "1", "b", "2"});
  // ByteLevel with add_prefix_space adds the space to every piece that lacks one.
  const Tokenizer t = Tokenizer::from_json_text(
      piece_tokenizer_json({{"type", "ByteLevel"}, {"add_prefix_space", true}}, "ab", {"Ġ", "Ġab", "Ġa"}), "bl.json");
  EXPECT_EQ(tokens_of(t, "ab a"), (std::vector<std::string>{"Ġab", "Ġa"}));
  const Encoding enc = t.encode("ab a");
  EXPECT_EQ(enc.offsets, (std::vector<std::pair<size_t, size_t>>{{0, 2}, {2, 4}}));
}

TEST(Tokenizer, MetaspacePreTokenizerAndDecoder) {
  const nlohmann::json ms = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", true}};
  nlohmann::json j = nlohmann::json::parse(piece_tokenizer_json(ms, "ab", {"\u2581", "\u2581ab", "\u2581b"}));
  j["decoder"] = ms;
  j["added_tokens"] = {{{"id", 9}, {"content", "<s>"}, {"special", true}}};
  const Tokenizer t = Tokenizer::from_json_text(j.dump(), "metaspace.json");
  EXPECT_EQ(tokens_of(t, "ab b"), (std::vector<std::string>{"\u2581ab", "\u2581b"}));
  EXPECT_EQ(tokens_of(t, " b"), (std::vector<std::string>{"\u2581b"}));
  // "first": only the piece at the start of the text gets the prepended replacement.
  EXPECT_EQ(tokens_of(t, "b<s>ab"), (std::vector<std::string>{"\u2581b", "<s>", "a", "b"}));
  EXPECT_EQ(t.decode(t.encode_ids("ab b")), "ab b");
  const Encoding enc = t.encode("ab b");
  EXPECT_EQ(enc.offsets, (std::vector<std::pair<size_t, size_t>>{{0, 2}, {2, 4}}));
}

TEST(Tokenizer, NormalizersAndOffsets) {
  const nlohmann::json seq = {{"type", "Sequence"},
                              {"normalizers", {{{"type", "NFKC"}}, {{"type", "Lowercase"}}}}};
  const Tokenizer t = Tokenizer::from_json_text(
      piece_tokenizer_json({{"type", "WhitespaceSplit"}}, "abc", {"abc", "ab"}, seq), "norm.json");
  // Fullwidth "ＡＢ" (3 bytes each) becomes "ab" under NFKC + Lowercase; the token points at the original 6 bytes.
  const std::string text = "\xEF\xBC\xA1\xEF\xBC\xA2 ABC";
  const Encoding enc = t.encode(text);
  EXPECT_EQ(tokens_of(t, text), (std::vector<std::string>{"ab", "abc"}));
  EXPECT_EQ(enc.offsets, (std::vector<std::pair<size_t, size_t>>{{0, 6}, {7, 10}}));
  // NFD splits é into e + U+0301 (not in the vocabulary: dropped), both pieces point into the original é.
  const Tokenizer d = Tokenizer::from_json_text(
      piece_tokenizer_json(nullptr, "e", {}, {{"type", "NFD"}}), "nfd.json");
  const Encoding e2 = d.encode("\xC3\xA9");
  ASSERT_EQ(e2.ids.size(), 1u);
  EXPECT_EQ(e2.offsets[0], (std::pair<size_t, size_t>(0, 2)));
  // Replace and Strip normalizers.
  const nlohmann::json rep = {{"type", "Sequence"},
                              {"normalizers",
                               {{{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                                {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "b"}}}}};
  const Tokenizer r = Tokenizer::from_json_text(piece_tokenizer_json(nullptr, "ab", {"aba"}, rep), "rep.json");
  const Encoding e3 = r.encode("  a a ");
  EXPECT_EQ(tokens_of(r, "  a a "), (std::vector<std::string>{"aba"}));
  EXPECT_EQ(e3.offsets, (std::vector<std::pair<size_t, size_t>>{{2, 5}}));
}

TEST(Tokenizer, InvalidUtf8InputBecomesReplacementCharacters) {
  const Tokenizer t = Tokenizer::from_file(tok_file("tiny-tokenizer.json"));
  const std::string text = std::string("a\xFF") + "b\xE6\x88";
  const Encoding enc = t.encode(text);
  EXPECT_EQ(t.decode(enc.ids), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  expect_sane_offsets(enc, text);
  EXPECT_EQ(enc.offsets.back().second, text.size());
}

TEST(Tokenizer, TemplateProcessingAddsSpecialTokens) {
  nlohmann::json j = nlohmann::json::parse(test::read_file(tok_file("tokenizer-merges-strings.json")));
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                  {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
      {"pair", nlohmann::json::array()},
      {"special_tokens",
       {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<|pad|>"}}}},
        {"</s>", {{"id", "</s>"}, {"ids", {0}}, {"tokens", {"<|endoftext|>"}}}}}}};
  const Tokenizer t = Tokenizer::from_json_text(j.dump(), "template.json");
  const Encoding enc = t.encode("ab");
  EXPECT_EQ(enc.ids, (std::vector<int32_t>{1, 12, 0}));
  EXPECT_EQ(enc.offsets, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {0, 2}, {2, 2}}));
  EXPECT_EQ(t.encode_ids(""), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(t.decode(enc.ids, true), "ab");
  j["post_processor"] = {{"type", "BertProcessing"}, {"sep", {"<|endoftext|>", 0}}, {"cls", {"<|pad|>", 1}}};
  EXPECT_EQ(Tokenizer::from_json_text(j.dump(), "bert.json").encode_ids("ab"), (std::vector<int32_t>{1, 12, 0}));
  j["post_processor"]["type"] = "Unknown";
  expect_error([&] { Tokenizer::from_json_text(j.dump(), "bert.json"); }, "bert.json", "post_processor type 'Unknown' is not supported");
}

TEST(Tokenizer, EncodesLargeText) {
  const Tokenizer t = Tokenizer::from_file(tok_file("tiny-tokenizer.json"));
  const std::vector<std::string> words = {"the", "movie", "was", "not", "good", "I", "really", "loved", "acting",
                                          "1999", "caf\xC3\xA9", "\xE6\x88\x91", "don't", "!", "\n", "  ", "\t"};
  std::mt19937 rng(1);
  std::string text;
  while (text.size() < 200 * 1024) {
    text += words[rng() % words.size()];
    text += (rng() % 5 == 0) ? ". " : " ";
  }
  const Encoding enc = t.encode(text);
  EXPECT_GT(enc.ids.size(), text.size() / 10);
  EXPECT_EQ(t.decode(enc.ids), text);
  expect_sane_offsets(enc, text);
  // Encoding a second time (word cache warm) gives the same ids.
  EXPECT_EQ(t.encode_ids(text), enc.ids);
}

TEST(Tokenizer, LlamaStyleByteFallbackUnkStripAndSingleWord) {
  const Tokenizer t = Tokenizer::from_file(tok_file("tokenizer-llama-style.json"));
  EXPECT_EQ(t.summary(), "BPE, 20 tokens, 6 merges, pre-tokenizer none");
  // Prepend + Replace normalizer, no pre-tokenizer, byte fallback for '\n', BOS from the template.
  const Encoding enc = t.encode("ab\nab");
  EXPECT_EQ(enc.ids, (std::vector<int32_t>{1, 14, 3, 13}));
  EXPECT_EQ(enc.offsets, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {0, 2}, {2, 3}, {3, 5}}));
  EXPECT_EQ(t.decode(enc.ids), "<s> ab\nab");
  EXPECT_EQ(t.decode(enc.ids, true), "ab\nab");
  // Unknown characters without byte tokens: one fused <unk>.
  const Encoding unk = t.encode("xyz");
  EXPECT_EQ(unk.ids, (std::vector<int32_t>{1, 6, 0}));
  EXPECT_EQ(unk.offsets.back(), (std::pair<size_t, size_t>(0, 3)));
  // é has byte tokens <0xC3> <0xA9>; both point at the whole character.
  const Encoding e = t.encode("\xC3\xA9");
  EXPECT_EQ(e.ids, (std::vector<int32_t>{1, 6, 4, 5}));
  EXPECT_EQ(e.offsets[2], (std::pair<size_t, size_t>(0, 2)));
  EXPECT_EQ(e.offsets[3], (std::pair<size_t, size_t>(0, 2)));
  EXPECT_EQ(t.decode(e.ids, true), "\xC3\xA9");
  EXPECT_EQ(t.decode({4}), "\xEF\xBF\xBD");  // a lone byte token decodes to U+FFFD
  // lstrip/rstrip: [MASK] swallows the spaces around it.
  const Encoding m = t.encode("a [MASK] b");
  EXPECT_EQ(m.ids, (std::vector<int32_t>{1, 11, 18, 6, 8}));  // "▁b" is in the vocabulary but no merge makes it
  EXPECT_EQ(m.offsets[2], (std::pair<size_t, size_t>(1, 9)));
  // single_word: "tac" is an added token only as a whole word.
  EXPECT_EQ(t.encode_ids("a tac"), (std::vector<int32_t>{1, 11, 6, 19}));
  EXPECT_EQ(t.encode_ids("tacs"), (std::vector<int32_t>{1, 6, 10, 7, 9, 0}));
  EXPECT_EQ(t.encode_ids("cat tac"), (std::vector<int32_t>{1, 17, 6, 19}));
  EXPECT_EQ(t.decode({1, 17, 6, 19}, true), "cat tac");
  EXPECT_TRUE(t.is_special(18));
  EXPECT_FALSE(t.is_special(19));
}

TEST(Tokenizer, SuffixPrefixAndUnknownTokens) {
  auto make = [](const nlohmann::json& vocab, const nlohmann::json& merges, const nlohmann::json& extra) {
    nlohmann::json model = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
    model.update(extra);
    const nlohmann::json j = {{"model", model}, {"pre_tokenizer", {{"type", "WhitespaceSplit"}}}};
    return Tokenizer::from_json_text(j.dump(), "mem.json");
  };
  const Tokenizer suf = make({{"a", 0}, {"b", 1}, {"a</w>", 2}, {"b</w>", 3}, {"ab</w>", 4}}, {"a b</w>"},
                             {{"end_of_word_suffix", "</w>"}});
  EXPECT_EQ(suf.encode_ids("ab b a"), (std::vector<int32_t>{4, 3, 2}));
  const Tokenizer pre = make({{"a", 0}, {"b", 1}, {"##a", 2}, {"##b", 3}, {"ab", 4}}, {"a ##b"},
                             {{"continuing_subword_prefix", "##"}});
  EXPECT_EQ(pre.encode_ids("ab ba"), (std::vector<int32_t>{4, 1, 2}));
  EXPECT_EQ(pre.decode({4, 1, 2}), "ab b ##a");  // no decoder: tokens joined by spaces
  const Tokenizer unk = make({{"<unk>", 0}, {"a", 1}}, nlohmann::json::array(), {{"unk_token", "<unk>"}});
  EXPECT_EQ(unk.encode_ids("axya"), (std::vector<int32_t>{1, 0, 0, 1}));
  const Tokenizer bad_unk = make({{"a", 1}}, nlohmann::json::array(), {{"unk_token", "<unk>"}});
  EXPECT_EQ(bad_unk.encode_ids("a"), (std::vector<int32_t>{1}));
  expect_error([&] { (void)bad_unk.encode_ids("ax"); }, "mem.json", "unk_token '<unk>' is not in the vocabulary");
  // Byte fallback with a prefix: "##x" falls back to three byte tokens for a one-byte character; the ranges stay
  // inside the word.
  const Tokenizer bf = make({{"a", 0}, {"<0x23>", 1}, {"<0x78>", 2}}, nlohmann::json::array(),
                            {{"continuing_subword_prefix", "##"}, {"byte_fallback", true}});
  const Encoding bfe = bf.encode("ax");
  EXPECT_EQ(bfe.ids, (std::vector<int32_t>{0, 1, 1, 2}));
  expect_sane_offsets(bfe, "ax");
  EXPECT_EQ(bfe.offsets.back(), (std::pair<size_t, size_t>(1, 2)));
  // ignore_merges: a word that is itself in the vocabulary is one token even if the merges would not make it.
  const Tokenizer im = make({{"a", 0}, {"b", 1}, {"c", 2}, {"abc", 3}}, nlohmann::json::array(), {{"ignore_merges", true}});
  EXPECT_EQ(im.encode_ids("abc cab"), (std::vector<int32_t>{3, 2, 0, 1}));
}

TEST(Tokenizer, AddedTokenIdsFollowTokenizersRules) {
  // A content that is in the vocabulary takes its vocabulary id; the others are numbered after the vocabulary,
  // whatever the file says (as `tokenizers` does, with a warning).
  const nlohmann::json j = {
      {"added_tokens",
       {{{"id", 7}, {"content", "b"}, {"special", true}},
        {{"id", 50}, {"content", "<x>"}, {"special", true}},
        {{"id", 60}, {"content", "<y>"}, {"special", false}},
        {{"id", 70}, {"content", "<x>"}, {"special", true}},
        {{"id", 80}, {"content", ""}, {"special", true}}}},
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}}}, {"merges", nlohmann::json::array()}}}};
  const Tokenizer t = Tokenizer::from_json_text(j.dump(), "ids.json");
  EXPECT_EQ(t.token_to_id("b"), std::optional<int32_t>(1));
  EXPECT_EQ(t.token_to_id("<x>"), std::optional<int32_t>(3));
  EXPECT_EQ(t.token_to_id("<y>"), std::optional<int32_t>(4));
  EXPECT_EQ(t.vocab_size(), 5u);
  EXPECT_TRUE(t.is_special(1));
  EXPECT_TRUE(t.is_special(3));
  EXPECT_FALSE(t.is_special(4));
  EXPECT_EQ(t.encode_ids("a<x>c<y>b"), (std::vector<int32_t>{0, 3, 2, 4, 1}));
  EXPECT_EQ(t.decode({0, 3, 2, 4, 1}, true), "a c <y>");
}

// ---- errors ----

TEST(Tokenizer, UnknownModelTypeIsAnError) {
  const std::string p = tok_file("tokenizer-unigram.json");
  expect_error([&] { Tokenizer::from_file(p); }, p, "model type 'Unigram' is not supported");
}

TEST(Tokenizer, InvalidJsonIsAnError) {
  const std::string p = tok_file("tokenizer-invalid.json");
  expect_error([&] { Tokenizer::from_file(p); }, p, "invalid JSON at byte ");
  expect_error([&] { Tokenizer::from_json_text("", "empty.json"); }, "empty.json", "invalid JSON at byte ");
  expect_error([&] { Tokenizer::from_json_text(std::string(2000, '['), "deep.json"); }, "deep.json", "nested deeper than");
}

TEST(Tokenizer, MergeWithUnknownTokenIsAnError) {
  const std::string p = tok_file("tokenizer-bad-merge.json");
  expect_error([&] { Tokenizer::from_file(p); }, p, "merge 1 refers to unknown token 'y'");
}

TEST(Tokenizer, OtherLoadErrorsNameTheFileAndReason) {
  expect_error([&] { Tokenizer::from_file(tok_file("no-such-tokenizer.json")); }, "no-such-tokenizer.json", "cannot open");
  const std::string base = test::read_file(tok_file("tokenizer-merges-strings.json"));
  auto with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = nlohmann::json::parse(base);
    j[key] = value;
    return j.dump();
  };
  auto model_with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = nlohmann::json::parse(base);
    j["model"][key] = value;
    return j.dump();
  };
  struct Case {
    std::string json, reason;
  };
  const std::vector<Case> cases = {
      {"[1, 2]", "the top level is not a JSON object"},
      {"{}", "no 'model'"},
      {with("normalizer", {{"type", "BertNormalizer"}}), "normalizer type 'BertNormalizer' is not supported"},
      {with("pre_tokenizer", {{"type", "UnicodeScripts"}}), "pre_tokenizer type 'UnicodeScripts' is not supported"},
      {with("pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "ab"}}), "'replacement' 'ab' is not one character"},
      {with("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}}),
       "invalid regex '(a'"},
      {with("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"String", "a"}}}, {"behavior", "Sideways"}}),
       "behavior 'Sideways' is not one of"},
      {with("decoder", {{"type", "WordPiece"}}), "decoder type 'WordPiece' is not supported"},
      {with("added_tokens", {{{"id", "x"}, {"content", "a"}}}), "added_tokens[0] id is not an integer"},
      {model_with("vocab", {{"a", -1}}), "id of vocab entry 'a' is -1"},
      {model_with("vocab", {{"a", 1u << 30}}), "above the limit"},
      {model_with("merges", {"a  b"}), "merge 0 'a  b' is not two tokens separated by one space"},
      {model_with("merges", {"a b", "ab cd"}), "merge 1 makes 'abcd', which is not in the vocabulary"},
      {model_with("merges", {{"a"}}), "merge 0 is neither"},
      {model_with("vocab", "nope"), "'vocab' is not an object"},
  };
  for (const Case& c : cases) expect_error([&] { Tokenizer::from_json_text(c.json, "bad.json"); }, "bad.json", c.reason);
}

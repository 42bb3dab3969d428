// SentencePiece tokenizer.model through the Tokenizer interface, against the ids Debian's spm_encode gave for the
// same model (tests/data/tokenizer/spm, scripts/make_spm_fixture.sh).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tokenizer.h"
#include "../test_util.h"

namespace ssmx {
namespace {

const std::string kDir = test::data_dir() + "/tokenizer/spm";

#ifdef SSMX_HAVE_SENTENCEPIECE

TEST(SentencePiece, EncodesAsSpmEncodeAndDecodesBack) {
  const Tokenizer tok = Tokenizer::from_file(kDir + "/tokenizer.model");
  const nlohmann::json ex = nlohmann::json::parse(test::read_file(kDir + "/expected.json"));
  ASSERT_GE(ex["cases"].size(), 5u);
  for (const auto& c : ex["cases"]) {
    const std::string text = c["text"];
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    const Encoding e = tok.encode(text);
    EXPECT_EQ(e.ids, want) << text;
    EXPECT_EQ(tok.decode(e.ids), text) << text;
    // Offsets: inside the text, never decreasing, and together they cover the text's bytes.
    ASSERT_EQ(e.offsets.size(), e.ids.size());
    size_t prev = 0, covered_to = 0;
    for (const auto& [b, en] : e.offsets) {
      EXPECT_GE(b, prev);
      EXPECT_LE(b, en);
      EXPECT_LE(en, text.size());
      prev = b;
      covered_to = std::max(covered_to, en);
    }
    EXPECT_EQ(covered_to, text.size()) << text;
  }
  EXPECT_EQ(tok.vocab_size(), 320u);
  EXPECT_TRUE(tok.is_special(2));   // <s>
  EXPECT_FALSE(tok.is_special(263));
  EXPECT_EQ(tok.token_to_id("<s>"), std::optional<int32_t>(2));
  EXPECT_EQ(tok.token_to_id("no such piece"), std::nullopt);
  // Token text: "▁" reads as a space, byte pieces as their byte.
  EXPECT_EQ(tok.id_to_token(296), "\xE2\x96\x81");
  EXPECT_EQ(tok.token_text(296), " ");
  EXPECT_EQ(tok.token_text(54), "2");  // <0x32>
  EXPECT_NE(tok.summary().find("SentencePiece, 320 pieces"), std::string::npos);
  EXPECT_THROW(tok.id_to_token(100000), Error);
}

TEST(SentencePiece, AddsBosWhenTheTokenizerConfigSaysSo) {
  test::TempDir d;
  std::filesystem::copy_file(kDir + "/tokenizer.model", d.file("tokenizer.model"));
  test::write_file(d.file("tokenizer_config.json"), R"({"add_bos_token": true})");
  const Tokenizer tok = Tokenizer::from_file(d.file("tokenizer.model"));
  const Encoding e = tok.encode("the");
  EXPECT_EQ(e.ids, (std::vector<int32_t>{2, 263, 300}));
  EXPECT_EQ(e.offsets[0], (std::pair<size_t, size_t>{0, 0}));
  EXPECT_EQ(tok.decode(e.ids, true), "the");
  test::write_file(d.file("tokenizer_config.json"), R"({"add_bos_token": "yes"})");
  EXPECT_THROW(Tokenizer::from_file(d.file("tokenizer.model")), Error);
}

TEST(SentencePiece, BadFilesAreOneLineErrors) {
  test::TempDir d;
  test::write_file(d.file("tokenizer.model"), "this is not a protobuf");
  try {
    Tokenizer::from_file(d.file("tokenizer.model"));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("tokenizer.model"), std::string::npos) << w;
    EXPECT_EQ(w.find('\n'), std::string::npos) << w;
  }
  EXPECT_THROW(Tokenizer::from_file(d.file("missing.model")), Error);
}

#else

TEST(SentencePiece, WithoutTheLibraryTheErrorSaysWhatIsMissing) {
  try {
    Tokenizer::from_file(kDir + "/tokenizer.model");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("libsentencepiece"), std::string::npos);
  }
  GTEST_SKIP() << "built without libsentencepiece: the encoding checks did not run";
}

#endif

}  // namespace
}  // namespace ssmx

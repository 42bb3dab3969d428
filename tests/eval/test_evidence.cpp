// Evidence scores (pointing game, recall@|E|, hit@k), the token/span overlap and the JSONL reader's errors.
#include <gtest/gtest.h>

#include "../test_util.h"
#include "core/error.h"
#include "eval/evidence.h"

using namespace ssmx;

TEST(Evidence, Scores) {
  // ranking: t2 (0.9), t0 (0.5), t3 (0.1), t1 (-1)
  const std::vector<float> r = {0.5f, -1.0f, 0.9f, 0.1f};
  auto s = score_evidence(r, {2}, 1);
  EXPECT_EQ(s[0], 1.0);
  EXPECT_EQ(s[1], 1.0);
  EXPECT_EQ(s[2], 1.0);
  s = score_evidence(r, {0, 1}, 1);
  EXPECT_EQ(s[0], 0.0);  // top-1 is t2
  EXPECT_EQ(s[1], 0.5);  // top-2 = {t2, t0}: one of two
  EXPECT_EQ(s[2], 0.0);
  s = score_evidence(r, {0, 1}, 2);
  EXPECT_EQ(s[2], 1.0);
  s = score_evidence(r, {}, 2);
  EXPECT_EQ(s[0], 0.0);
  // ties keep the earlier position first
  s = score_evidence({1.0f, 1.0f}, {1}, 1);
  EXPECT_EQ(s[0], 0.0);
  // a candidate window [1, 3): t2 still wins; evidence outside the window does not count
  s = score_evidence(r, {0, 3}, 1, 1, 3);
  EXPECT_EQ(s[0], 0.0);
  s = score_evidence(r, {1}, 1, 0, 2);  // candidates t0, t1: t0 (0.5) first
  EXPECT_EQ(s[0], 0.0);
  EXPECT_EQ(s[2], 0.0);
  s = score_evidence(r, {1}, 2, 0, 2);
  EXPECT_EQ(s[2], 1.0);
  s = score_evidence(r, {2, 0}, 1, 3, 4);  // no evidence in the window
  EXPECT_EQ(s[1], 0.0);
  s = score_evidence(r, {3}, 1, 3, -1);  // last < 0: to the end
  EXPECT_EQ(s[0], 1.0);
}

TEST(Evidence, TokensOverlappingSpans) {
  Encoding enc;
  enc.ids = {1, 2, 3, 4};
  enc.offsets = {{0, 3}, {3, 7}, {7, 11}, {11, 12}};
  EXPECT_EQ(evidence_tokens(enc, {{4, 6}}), (std::vector<int64_t>{1}));
  EXPECT_EQ(evidence_tokens(enc, {{2, 8}}), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(evidence_tokens(enc, {{11, 12}, {0, 1}}), (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(evidence_tokens(enc, {{12, 13}}).empty());
}

TEST(Evidence, ReaderRejectsBadLinesWithTheirNumber) {
  test::TempDir td;
  const std::string p = td.file("d.jsonl");
  test::write_file(p, "{\"text\": \"a good film\", \"target\": \" positive\", \"evidence_char_spans\": [[2, 6]]}\n\n");
  auto d = read_evidence_jsonl(p);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].evidence[0], (std::pair<size_t, size_t>{2, 6}));
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"not json\n", ":1: not a JSON object"},
      {"{\"target\": \"x\", \"evidence_char_spans\": []}\n", "'text'"},
      {"{\"text\": \"ab\", \"target\": \"x\", \"evidence_char_spans\": [[1, 9]]}\n", "outside the text"},
      {"{\"text\": \"ab\", \"target\": \"x\", \"evidence_char_spans\": [[1]]}\n", "pairs"},
      {"", "no examples"},
  };
  for (const auto& [content, needle] : bad) {
    test::write_file(p, content);
    try {
      read_evidence_jsonl(p);
      ADD_FAILURE() << "accepted: " << content;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(read_evidence_jsonl(td.file("missing.jsonl")), Error);
}

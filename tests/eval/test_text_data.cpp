// Text data readers (CSV, TSV as GLUE SST-2 ships it, JSONL) on the fixtures of scripts/make_text_data_fixtures.py,
// their errors with line numbers, label maps and templates.
#include <gtest/gtest.h>

#include "../test_util.h"
#include "core/error.h"
#include "eval/text_data.h"

using namespace ssmx;

namespace {
std::string fx(const std::string& n) { return test::data_dir() + "/eval/" + n; }

void expect_error(const std::string& content, TextFormat fmt, const std::string& needle, const TextFields& f = {}) {
  test::TempDir td;
  const std::string p = td.file("d.txt");
  test::write_file(p, content);
  try {
    read_text_data(p, fmt, f);
    ADD_FAILURE() << "accepted: " << content;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(TextData, Sst2Tsv) {
  const auto r = read_text_data(fx("sst2_dev.tsv"), parse_text_format("", fx("sst2_dev.tsv")));
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].text, "it 's a charming and often affecting journey . ");
  EXPECT_EQ(r[0].label, "1");
  EXPECT_EQ(r[0].line, 2);
  EXPECT_EQ(r[3].text, "\" it 's slow -- very , very slow . \" ");  // raw quotes, no quoting in TSV
  EXPECT_EQ(r[3].label, "0");
  EXPECT_EQ(r[3].line, 5);
}

TEST(TextData, QuotedCsv) {
  TextFields f;
  f.text = "review";
  const auto r = read_text_data(fx("reviews.csv"), TextFormat::Csv, f);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].text, "a good film, really");
  EXPECT_EQ(r[1].text, "she said \"dull\" twice");
  EXPECT_EQ(r[2].text, "two\nlines");
  EXPECT_EQ(r[2].line, 4);
  EXPECT_EQ(r[3].text, "plain");
  EXPECT_EQ(r[3].line, 6);
  EXPECT_EQ(r[3].label, "0");
  // the default text column ("sentence", else "text") is missing here
  try {
    read_text_data(fx("reviews.csv"), TextFormat::Csv);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reviews.csv:1: no column 'text'"), std::string::npos) << e.what();
  }
}

TEST(TextData, Jsonl) {
  const auto r = read_text_data(fx("reviews.jsonl"), TextFormat::Jsonl);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].label, "1");  // integer labels become their decimal text
  EXPECT_EQ(r[1].text, "caf\xC3\xA9 \"noir\"\tbad");
  EXPECT_EQ(r[1].label, "0");
  EXPECT_EQ(r[2].line, 4);
  EXPECT_EQ(r[2].label, "");
  EXPECT_EQ(r[2].target, " positive");
}

TEST(TextData, ErrorsNameTheLine) {
  expect_error("sentence\tlabel\nok\t1\nan\tembedded tab\t0\n", TextFormat::Tsv, "d.txt:3: 3 tab-separated fields where the header has 2 (a tab inside a field");
  expect_error("sentence\tlabel\nok\t1\nno label\n", TextFormat::Tsv, "d.txt:3: 1 tab-separated");
  expect_error("text,label\n\"open,1\n", TextFormat::Csv, "d.txt:2: unterminated quoted field");
  expect_error("text,label\nsa\"id,1\n", TextFormat::Csv, "d.txt:2: quote inside an unquoted field");
  expect_error("text,label\n\"a\"b,1\n", TextFormat::Csv, "d.txt:2: text after the closing quote");
  expect_error("text,label\n\"x\ny\",1\na,b,c\n", TextFormat::Csv, "d.txt:4: 3 comma-separated");
  expect_error("", TextFormat::Csv, "empty file");
  expect_error("text,label\n", TextFormat::Csv, "no examples");
  expect_error("{\"text\": 1}\n", TextFormat::Jsonl, "d.txt:1: missing string field 'text'");
  expect_error("{\"text\": \"a\"}\n[1]\n", TextFormat::Jsonl, "d.txt:2: not a JSON object");
  expect_error("{\"text\": \"a\", \"label\": 0.5}\n", TextFormat::Jsonl, "d.txt:1: field 'label'");
  expect_error("{\"text\": \"a\", \"target\": 3}\n", TextFormat::Jsonl, "d.txt:1: field 'target'");
  TextFields f;
  f.label = "y";
  expect_error("text,label\na,1\n", TextFormat::Csv, "no column 'y'", f);
  EXPECT_THROW(read_text_data(fx("missing.tsv"), TextFormat::Tsv), Error);
  EXPECT_THROW(parse_text_format("xml", "a.csv"), Error);
  EXPECT_THROW(parse_text_format("", "a.txt"), Error);
  EXPECT_EQ(parse_text_format("", "a.JSONL"), TextFormat::Jsonl);
}

TEST(TextData, LabelMapsAndTemplates) {
  auto m = parse_label_map("0: negative,1: positive");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m["0"], " negative");  // the text after the colon, leading space kept
  EXPECT_EQ(m["1"], " positive");
  m = parse_label_map(fx("labels.json"));
  EXPECT_EQ(m["1"], " positive");
  EXPECT_THROW(parse_label_map("0 negative"), Error);
  EXPECT_THROW(parse_label_map("0:a,0:b"), Error);
  EXPECT_THROW(parse_label_map("0:a,"), Error);
  EXPECT_EQ(apply_template("review: {text} sentiment:", "good"), "review: good sentiment:");
  EXPECT_EQ(apply_template("", "good"), "good");
  EXPECT_EQ(apply_template("{text}/{text}", "a"), "a/a");
  EXPECT_THROW(apply_template("no slot", "a"), Error);
}

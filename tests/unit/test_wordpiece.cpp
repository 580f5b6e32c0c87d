// BERT WordPiece tokenizer against reference ids from Hugging Face tokenizers
// (tests/data/tokenizer/vectors.jsonl, made by tests/reference/tokenizer/make_vectors.mjs).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "skim/error.hpp"
#include "text/unicode.hpp"
#include "text/wordpiece.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using skim::ErrorCode;
using namespace skim::testing;
using skim::text::WordPieceTokenizer;

const fs::path kDataDir = SKIM_TEST_DATA_DIR;
const fs::path kVocabTxt = kDataDir / "vocab" / "bert-base-uncased-vocab.txt";
const fs::path kTokenizerJson = kDataDir / "vocab" / "all-MiniLM-L6-v2-tokenizer.json";
constexpr std::size_t kNoLimit = 1 << 20;

struct Vector {
  std::string text;
  std::vector<std::int32_t> ids_json, ids_vocab;
};

const std::vector<Vector>& vectors() {
  static const std::vector<Vector> loaded = [] {
    std::vector<Vector> out;
    std::ifstream in(kDataDir / "tokenizer" / "vectors.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const auto row = nlohmann::json::parse(line);
      out.push_back({row.at("text").get<std::string>(),
                     row.at("ids_json").get<std::vector<std::int32_t>>(),
                     row.at("ids_vocab").get<std::vector<std::int32_t>>()});
    }
    return out;
  }();
  return loaded;
}

const WordPieceTokenizer& json_tokenizer() {
  static const WordPieceTokenizer tokenizer = WordPieceTokenizer::from_tokenizer_json(kTokenizerJson);
  return tokenizer;
}

const WordPieceTokenizer& vocab_tokenizer() {
  static const WordPieceTokenizer tokenizer = WordPieceTokenizer::from_vocab_txt(kVocabTxt);
  return tokenizer;
}

std::string pieces_of(const WordPieceTokenizer& tokenizer, const std::vector<std::int32_t>& ids) {
  std::string out;
  for (std::int32_t id : ids) out += tokenizer.id_to_token(id) + " ";
  return out;
}

fs::path write_temp(const std::string& name, const std::string& content) {
  const fs::path path = fs::path(::testing::TempDir()) / ("skim_wordpiece_" + name);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

TEST(WordPieceVectors, AtLeastEightyVectors) { EXPECT_GE(vectors().size(), 80u); }

TEST(WordPieceVectors, MatchTokenizerJson) {
  const WordPieceTokenizer& tokenizer = json_tokenizer();
  for (const Vector& v : vectors()) {
    const auto encoding = tokenizer.encode(v.text, kNoLimit);
    EXPECT_EQ(encoding.ids, v.ids_json) << "text: " << v.text << "\n got:      "
                                        << pieces_of(tokenizer, encoding.ids) << "\n expected: "
                                        << pieces_of(tokenizer, v.ids_json);
    EXPECT_FALSE(encoding.truncated);
  }
}

TEST(WordPieceVectors, MatchVocabTxt) {
  const WordPieceTokenizer& tokenizer = vocab_tokenizer();
  for (const Vector& v : vectors()) {
    const auto encoding = tokenizer.encode(v.text, kNoLimit);
    EXPECT_EQ(encoding.ids, v.ids_vocab) << "text: " << v.text << "\n got:      "
                                         << pieces_of(tokenizer, encoding.ids) << "\n expected: "
                                         << pieces_of(tokenizer, v.ids_vocab);
  }
}

TEST(WordPieceVectors, BothSourcesGiveTheSameIds) {
  for (const Vector& v : vectors()) {
    EXPECT_EQ(v.ids_json, v.ids_vocab) << "reference differs for: " << v.text;
    EXPECT_EQ(json_tokenizer().encode(v.text, kNoLimit).ids,
              vocab_tokenizer().encode(v.text, kNoLimit).ids)
        << "text: " << v.text;
  }
}

TEST(WordPieceTokenizer, SpecialIdsAndVocabulary) {
  for (const WordPieceTokenizer* t : {&json_tokenizer(), &vocab_tokenizer()}) {
    EXPECT_EQ(t->vocab_size(), 30522u);
    EXPECT_EQ(t->pad_id(), 0);
    EXPECT_EQ(t->unk_id(), 100);
    EXPECT_EQ(t->cls_id(), 101);
    EXPECT_EQ(t->sep_id(), 102);
    EXPECT_EQ(t->token_to_id("[MASK]"), 103);
    EXPECT_EQ(t->token_to_id("##ing"), 2075);
    EXPECT_EQ(t->token_to_id("no-such-token"), -1);
    EXPECT_EQ(t->id_to_token(7592), "hello");
  }
}

TEST(WordPieceTokenizer, TokenizeGivesPiecesWithoutSpecials) {
  const std::vector<std::string> expected = {"hello", ",", "cafe", "!", "[MASK]", "una", "##ffa",
                                             "##ble"};
  EXPECT_EQ(vocab_tokenizer().tokenize("Hello, Café! [MASK] unaffable"), expected);
  EXPECT_TRUE(vocab_tokenizer().tokenize("").empty());
  EXPECT_TRUE(vocab_tokenizer().tokenize(" \t\u3000 ").empty());
}

TEST(WordPieceTokenizer, LongWordsBecomeUnknownByCharacterCount) {
  const WordPieceTokenizer& t = vocab_tokenizer();
  // 100 two-byte characters is within the limit (chars, not bytes) ...
  std::string hundred;
  for (int i = 0; i < 100; ++i) hundred += "\u00e9";
  EXPECT_NE(t.tokenize(hundred), std::vector<std::string>{"[UNK]"});
  // ... 101 is not.
  EXPECT_EQ(t.tokenize(hundred + "\u00e9"), std::vector<std::string>{"[UNK]"});
}

TEST(WordPieceTokenizer, Truncation) {
  const WordPieceTokenizer& t = json_tokenizer();
  const std::string text = "the quick brown fox jumps over the lazy dog";  // 9 pieces
  const auto full = t.encode(text, kNoLimit);
  ASSERT_EQ(full.ids.size(), 11u);
  EXPECT_FALSE(full.truncated);

  const auto exact = t.encode(text, 11);
  EXPECT_EQ(exact.ids, full.ids);
  EXPECT_FALSE(exact.truncated);

  const auto cut = t.encode(text, 6);
  ASSERT_EQ(cut.ids.size(), 6u);
  EXPECT_TRUE(cut.truncated);
  EXPECT_EQ(cut.ids.front(), t.cls_id());
  EXPECT_EQ(cut.ids.back(), t.sep_id());
  EXPECT_TRUE(std::equal(cut.ids.begin(), cut.ids.end() - 1, full.ids.begin()));

  const auto minimal = t.encode(text, 2);
  EXPECT_EQ(minimal.ids, (std::vector<std::int32_t>{t.cls_id(), t.sep_id()}));
  EXPECT_TRUE(minimal.truncated);

  const auto empty = t.encode("", 2);
  EXPECT_EQ(empty.ids, (std::vector<std::int32_t>{t.cls_id(), t.sep_id()}));
  EXPECT_FALSE(empty.truncated);

  expect_error([&] { t.encode(text, 1); }, ErrorCode::invalid_argument, {"max_length 1"});
}

TEST(WordPieceTokenizer, InvalidUtf8IsRejectedNamingTheByteOffset) {
  const WordPieceTokenizer& t = vocab_tokenizer();
  struct Case {
    std::string text, needle;
  };
  const std::vector<Case> cases = {
      {"abc\x80" "def", "byte 3: unexpected continuation byte 0x80"},
      {"x\xC0\xAF", "byte 1: overlong"},
      {"ab\xED\xA0\x80", "byte 2: encoded surrogate U+D800"},
      {"hello\xF0\x9F\x98", "byte 5: truncated 4-byte sequence"},
      {"ok \xF4\x90\x80\x80", "byte 3: code point U+110000 is above U+10FFFF"},
      {"\xE2\x82" "A", "byte 0: 3-byte sequence cut short by 0x41 at byte 2"},
      {"caf\xC3\xA9 \xFF", "byte 6: invalid lead byte 0xFF"},
      {"\xE0\x80\xAF", "byte 0: overlong 3-byte encoding"},
  };
  for (const Case& c : cases) {
    expect_error([&] { t.encode(c.text, kNoLimit); }, ErrorCode::text, {c.needle});
    expect_error([&] { t.tokenize(c.text); }, ErrorCode::text, {c.needle});
  }
}

TEST(WordPieceTokenizer, MissingFilesAreIoErrorsNamingThePath) {
  const fs::path missing = kDataDir / "vocab" / "no-such-vocab.txt";
  expect_error([&] { WordPieceTokenizer::from_vocab_txt(missing); }, ErrorCode::io,
               {missing.string()});
  const fs::path missing_json = kDataDir / "vocab" / "no-such-tokenizer.json";
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(missing_json); }, ErrorCode::io,
               {missing_json.string()});
}

TEST(WordPieceTokenizer, VocabTxtProblemsNameTheFile) {
  const fs::path empty = write_temp("empty.txt", "");
  expect_error([&] { WordPieceTokenizer::from_vocab_txt(empty); }, ErrorCode::model,
               {empty.string()});
  const fs::path no_cls = write_temp("no_cls.txt", "[PAD]\n[UNK]\n[SEP]\nhello\n");
  expect_error([&] { WordPieceTokenizer::from_vocab_txt(no_cls); }, ErrorCode::model, {"[CLS]"});
  expect_error([&] { WordPieceTokenizer::from_vocab_txt(no_cls); }, ErrorCode::model,
               {no_cls.string()});
  const fs::path no_pad = write_temp("no_pad.txt", "[CLS]\n[UNK]\n[SEP]\nhello\n");
  expect_error([&] { WordPieceTokenizer::from_vocab_txt(no_pad); }, ErrorCode::model, {"[PAD]"});
}

TEST(WordPieceTokenizer, VocabTxtToleratesCrlf) {
  const fs::path crlf =
      write_temp("crlf.txt", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello\r\n##s\r\nworld");
  const auto t = WordPieceTokenizer::from_vocab_txt(crlf);
  EXPECT_EQ(t.vocab_size(), 7u);
  EXPECT_EQ(t.token_to_id("world"), 6);
  EXPECT_EQ(t.encode("Hellos world xyz", 16).ids, (std::vector<std::int32_t>{2, 4, 5, 6, 1, 3}));
}

// Expected pieces checked with Hugging Face tokenizers' BertNormalizer.
TEST(WordPieceTokenizer, NormalizerOptionsOfVocabTxt) {
  using Pieces = std::vector<std::string>;
  skim::text::BertNormalizerOptions cased;
  cased.lowercase = false;  // strip_accents unset follows lowercase: off too
  const auto c = WordPieceTokenizer::from_vocab_txt(kVocabTxt, cased);
  EXPECT_EQ(c.tokenize("Hello hello"), (Pieces{"[UNK]", "hello"}));
  EXPECT_EQ(c.tokenize("caf\u00e9"), (Pieces{"[UNK]"}));

  skim::text::BertNormalizerOptions keep_accents;
  keep_accents.strip_accents = 0;
  const auto k = WordPieceTokenizer::from_vocab_txt(kVocabTxt, keep_accents);
  EXPECT_EQ(k.tokenize("Hello hello"), (Pieces{"hello", "hello"}));
  EXPECT_EQ(k.tokenize("Caf\u00e9 na\u00efve"), (Pieces{"[UNK]", "[UNK]"}));
  EXPECT_EQ(k.tokenize("\u0130stanbul"), (Pieces{"[UNK]"}));  // lowercases to i + U+0307

  skim::text::BertNormalizerOptions strip_only;
  strip_only.lowercase = false;
  strip_only.strip_accents = 1;
  const auto s = WordPieceTokenizer::from_vocab_txt(kVocabTxt, strip_only);
  EXPECT_EQ(s.tokenize("Caf\u00e9 na\u00efve"), (Pieces{"[UNK]", "naive"}));
}

// The tokenizer.json of all-MiniLM-L6-v2 with one field replaced.
fs::path json_variant(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  std::ifstream in(kTokenizerJson);
  auto root = nlohmann::json::parse(in);
  edit(root);
  return write_temp(name, root.dump());
}

TEST(WordPieceTokenizer, TokenizerJsonWithBpeModelIsUnsupported) {
  const fs::path bpe = json_variant("bpe.json", [](nlohmann::json& root) {
    root["model"] = {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", nlohmann::json::array()}};
  });
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(bpe); }, ErrorCode::unsupported,
               {"model.type"});
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(bpe); }, ErrorCode::unsupported,
               {bpe.string()});
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(bpe); }, ErrorCode::unsupported,
               {"BPE"});
}

TEST(WordPieceTokenizer, TokenizerJsonOtherProblems) {
  const fs::path bad = write_temp("bad.json", "{\"model\": ");
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(bad); }, ErrorCode::format,
               {bad.string()});
  const fs::path metaspace = json_variant("metaspace.json", [](nlohmann::json& root) {
    root["pre_tokenizer"] = {{"type", "Metaspace"}};
  });
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(metaspace); },
               ErrorCode::unsupported, {"pre_tokenizer.type"});
  const fs::path nfc = json_variant("nfc.json", [](nlohmann::json& root) {
    root["normalizer"] = {{"type", "NFC"}};
  });
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(nfc); }, ErrorCode::unsupported,
               {"normalizer.type"});
  const fs::path no_vocab = json_variant("no_vocab.json", [](nlohmann::json& root) {
    root["model"].erase("vocab");
  });
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(no_vocab); }, ErrorCode::format,
               {"model.vocab"});
}

TEST(WordPieceTokenizer, TokenizerJsonNormalizerOptions) {
  const fs::path cased = json_variant("cased.json", [](nlohmann::json& root) {
    root["normalizer"]["lowercase"] = false;
  });
  const auto t = WordPieceTokenizer::from_tokenizer_json(cased);
  EXPECT_EQ(t.tokenize("Hello hello"), (std::vector<std::string>{"[UNK]", "hello"}));
  const fs::path strip = json_variant("strip.json", [](nlohmann::json& root) {
    root["normalizer"]["lowercase"] = false;
    root["normalizer"]["strip_accents"] = true;
  });
  EXPECT_EQ(WordPieceTokenizer::from_tokenizer_json(strip).tokenize("caf\u00e9"),
            (std::vector<std::string>{"cafe"}));
}

TEST(Unicode, CharacterClassesAndMaps) {
  using namespace skim::text;
  char32_t lower[3];
  ASSERT_EQ(to_lowercase(U'\u0130', lower), 2);
  EXPECT_EQ(lower[0], U'i');
  EXPECT_EQ(lower[1], U'\u0307');
  ASSERT_EQ(to_lowercase(U'\u1E9E', lower), 1);  // capital sharp s
  EXPECT_EQ(lower[0], U'\u00DF');
  ASSERT_EQ(to_lowercase(U'\u0102', lower), 1);
  EXPECT_EQ(lower[0], U'\u0103');
  ASSERT_EQ(to_lowercase(U'\u0103', lower), 1);
  EXPECT_EQ(lower[0], U'\u0103');

  std::u32string nfd;
  append_nfd(U"\uD55C\u00C5\u1E69", nfd);  // 한 Å ṩ
  EXPECT_EQ(nfd, U"\u1112\u1161\u11AB\u0041\u030A\u0073\u0323\u0307");
  nfd.clear();
  append_nfd(U"a\u0307\u0323", nfd);  // canonical order puts ccc 220 before 230
  EXPECT_EQ(nfd, U"a\u0323\u0307");

  EXPECT_TRUE(is_whitespace(U'\u3000'));
  EXPECT_TRUE(is_whitespace(U'\u00A0'));
  EXPECT_FALSE(is_whitespace(U'\u200B'));
  EXPECT_TRUE(is_control(U'\u200B'));
  EXPECT_TRUE(is_control(U'\uE123'));
  EXPECT_FALSE(is_control(U'\t'));
  EXPECT_TRUE(is_punctuation(U'$'));
  EXPECT_TRUE(is_punctuation(U'\u00AB'));
  EXPECT_FALSE(is_punctuation(U'\u20AC'));
  EXPECT_TRUE(is_chinese_char(U'\u4E2D'));
  EXPECT_FALSE(is_chinese_char(U'\u3042'));
  EXPECT_TRUE(is_nonspacing_mark(U'\u0301'));
  EXPECT_EQ(combining_class(U'\u0301'), 230);
  EXPECT_STREQ(unicode_version(), "15.0.0");

  EXPECT_EQ(encode_utf8(decode_utf8("a\u00e9\u4e2d\U0001F600")), "a\u00e9\u4e2d\U0001F600");
}

}  // namespace

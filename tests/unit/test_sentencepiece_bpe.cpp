// SentencePiece BPE tokenizer (LLaMA family) against reference ids from
// SentencePiece itself (tests/data/tokenizer/spm_tok512_vectors.jsonl, made by
// tests/reference/tokenizer/make_spm_vectors.py from stories260K's tok512.model).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "skim/error.hpp"
#include "text/sentencepiece_bpe.hpp"

namespace {

namespace fs = std::filesystem;
using skim::Error;
using skim::ErrorCode;
using skim::text::SentencePieceBpe;
using skim::text::Utf8Stream;
using Ids = std::vector<std::int32_t>;

const fs::path kDataDir = SKIM_TEST_DATA_DIR;
const fs::path kTok512 = kDataDir / "models" / "stories260K" / "tok512.bin";
const std::string kFffd = "\xEF\xBF\xBD";   // U+FFFD
const std::string kSpace = "\xE2\x96\x81";  // U+2581 "▁"

struct Vector {
  std::string text;
  Ids ids;
  std::string decoded;
  bool byte_fallback = true;
};

// tok512.model's trainer_spec.unk_surface is the 14-character text
// " \342\201\207 " (the octal escapes of "⁇" written out literally, a quirk of
// how it was trained), so sp.decode prints that for <unk>; skim decodes <unk>
// as SentencePiece's default surface " ⁇ ".
std::string with_default_unk_surface(std::string decoded) {
  const std::string quirk = " \\342\\201\\207 ", surface = " \xE2\x81\x87 ";
  for (std::size_t at; (at = decoded.find(quirk)) != std::string::npos;) {
    decoded.replace(at, quirk.size(), surface);
  }
  return decoded;
}

const std::vector<Vector>& vectors() {
  static const std::vector<Vector> loaded = [] {
    std::vector<Vector> out;
    std::ifstream in(kDataDir / "tokenizer" / "spm_tok512_vectors.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const auto row = nlohmann::json::parse(line);
      out.push_back({row.at("text").get<std::string>(), row.at("ids").get<Ids>(),
                     row.at("decoded").get<std::string>(),
                     row.value("variant", std::string()) != "no_byte_fallback"});
    }
    return out;
  }();
  return loaded;
}

// tok512.bin as llama2.c uses it (Vocab defaults: extra whitespace kept).
const SentencePieceBpe& llama2c_tokenizer() {
  static const SentencePieceBpe tokenizer = SentencePieceBpe::from_llama2c(kTok512, 512);
  return tokenizer;
}

// tok512.bin with tok512.model's normalizer: exactly SentencePiece.
const SentencePieceBpe& spm_tokenizer() {
  static const SentencePieceBpe tokenizer = [] {
    SentencePieceBpe::Vocab vocab = SentencePieceBpe::read_llama2c_vocab(kTok512, 512);
    vocab.remove_extra_whitespaces = true;
    return SentencePieceBpe::from_vocab(std::move(vocab));
  }();
  return tokenizer;
}

// The same model as SentencePiece with byte_fallback off: byte pieces are
// "unused" pieces, unknown characters become <unk>.
const SentencePieceBpe& no_byte_fallback_tokenizer() {
  static const SentencePieceBpe tokenizer = [] {
    SentencePieceBpe::Vocab vocab = SentencePieceBpe::read_llama2c_vocab(kTok512, 512);
    vocab.remove_extra_whitespaces = true;
    vocab.types.assign(vocab.pieces.size(), SentencePieceBpe::normal);
    vocab.types[0] = SentencePieceBpe::unknown;
    vocab.types[1] = vocab.types[2] = SentencePieceBpe::control;
    for (int id = 3; id < 259; ++id) vocab.types[id] = SentencePieceBpe::unused;
    return SentencePieceBpe::from_vocab(std::move(vocab));
  }();
  return tokenizer;
}

std::string pieces_of(const SentencePieceBpe& tokenizer, const Ids& ids) {
  std::string out;
  for (const auto id : ids) out += (out.empty() ? "" : " ") + tokenizer.id_to_piece(id);
  return out;
}

// Streams ids through decode_piece and a Utf8Stream, as a generation loop would.
std::string stream_decode(const SentencePieceBpe& tokenizer, const Ids& ids,
                          std::size_t* replaced = nullptr) {
  Utf8Stream stream;
  std::string out;
  std::int32_t prev = -1;
  for (const auto id : ids) {
    stream.push(tokenizer.decode_piece(prev, id), out);
    prev = id;
  }
  const std::size_t at_end = stream.finish(out);
  if (replaced != nullptr) *replaced = at_end;
  return out;
}

bool is_ascii(std::string_view s) {
  for (const char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(SentencePieceBpe, LoadsTok512) {
  const SentencePieceBpe& t = llama2c_tokenizer();
  ASSERT_EQ(t.vocab_size(), 512u);
  EXPECT_EQ(t.id_to_piece(0), "<unk>");
  EXPECT_EQ(t.id_to_piece(1), "<s>");  // "\n<s>\n" in tok512.bin
  EXPECT_EQ(t.id_to_piece(2), "</s>");
  EXPECT_EQ(t.id_to_piece(259), "\xE2\x96\x81t");  // " t" in tok512.bin
  EXPECT_EQ(t.type(0), SentencePieceBpe::unknown);
  EXPECT_EQ(t.type(1), SentencePieceBpe::control);
  EXPECT_EQ(t.type(2), SentencePieceBpe::control);
  EXPECT_EQ(t.type(3), SentencePieceBpe::byte);
  EXPECT_EQ(t.type(258), SentencePieceBpe::byte);
  EXPECT_EQ(t.type(259), SentencePieceBpe::normal);
  EXPECT_TRUE(t.has_byte_fallback());
  EXPECT_EQ(t.byte_to_id(0x0A), 13);
  EXPECT_EQ(t.piece_to_id("<0x0A>"), 13);
  EXPECT_EQ(t.piece_to_id("<s>"), 1);
  EXPECT_EQ(t.piece_to_id("nope"), -1);
  EXPECT_FLOAT_EQ(t.score(260), -1.0f);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.unk_id(), 0);
  EXPECT_FALSE(t.remove_extra_whitespaces());
}

TEST(SentencePieceBpe, MatchesSentencePieceVectors) {
  std::size_t main = 0, without_fallback = 0, failures = 0;
  for (const Vector& v : vectors()) {
    const SentencePieceBpe& t = v.byte_fallback ? spm_tokenizer() : no_byte_fallback_tokenizer();
    (v.byte_fallback ? main : without_fallback) += 1;
    const Ids ids = t.encode(v.text, false, false);
    EXPECT_EQ(ids, v.ids) << "text: " << nlohmann::json(v.text).dump()
                          << "\n  skim: " << pieces_of(t, ids)
                          << "\n  spm:  " << pieces_of(t, v.ids);
    EXPECT_EQ(t.decode(v.ids), with_default_unk_surface(v.decoded))
        << "ids of " << nlohmann::json(v.text).dump();
    failures += ids != v.ids;
  }
  EXPECT_GE(main, 60u);
  EXPECT_GE(without_fallback, 5u);
  std::printf("[          ] %zu SentencePiece vectors (+%zu without byte fallback), %zu differ\n",
              main, without_fallback, failures);
}

TEST(SentencePieceBpe, Llama2cDefaultsKeepExtraWhitespace) {
  // llama2.c's run.c (and llama.cpp) keep every space; tok512.model strips
  // and collapses them. Both agree on text without extra spaces.
  const SentencePieceBpe& l2c = llama2c_tokenizer();
  const SentencePieceBpe& spm = spm_tokenizer();
  EXPECT_EQ(l2c.encode("Hello world", false, false), spm.encode("Hello world", false, false));
  EXPECT_EQ(pieces_of(spm, spm.encode("  Hello  world ", false, false)),
            "\xE2\x96\x81He ll o \xE2\x96\x81w or ld");
  const Ids kept = l2c.encode("  Hello  world ", false, false);
  EXPECT_EQ(pieces_of(l2c, kept),
            "\xE2\x96\x81 \xE2\x96\x81 \xE2\x96\x81He ll o \xE2\x96\x81 \xE2\x96\x81w or ld "
            "\xE2\x96\x81");
  EXPECT_EQ(l2c.decode(kept), "  Hello  world ");  // only the dummy prefix is dropped
  EXPECT_TRUE(l2c.encode("", true, false) == Ids{1});
  EXPECT_TRUE(l2c.encode("", false, false).empty());
}

TEST(SentencePieceBpe, RoundTripsAsciiStories) {
  std::size_t checked = 0;
  for (const Vector& v : vectors()) {
    if (!v.byte_fallback || !is_ascii(v.text)) continue;
    // Kept whitespace: lossless, with BOS and the leading-space rule.
    const Ids ids = llama2c_tokenizer().encode(v.text, true, false);
    EXPECT_EQ(stream_decode(llama2c_tokenizer(), ids), v.text);
    EXPECT_EQ(llama2c_tokenizer().decode(ids), v.text);
    // tok512.model's normalizer: lossless up to extra spaces.
    if (v.text.find("  ") == std::string::npos && !v.text.starts_with(' ') &&
        !v.text.ends_with(' ')) {
      EXPECT_EQ(stream_decode(spm_tokenizer(), spm_tokenizer().encode(v.text, true, true)), v.text);
    }
    ++checked;
  }
  EXPECT_GE(checked, 40u);
}

TEST(SentencePieceBpe, DecodesGoldenGeneration) {
  // stories260K's greedy generation from BOS; the text is what llama2.c prints.
  std::istringstream in(
      read_text(kDataDir / "models" / "stories260K" / "expected_greedy_from_bos_256.ids.txt"));
  Ids ids{1};
  for (std::int32_t id; in >> id;) ids.push_back(id);
  ASSERT_EQ(ids.size(), 257u);
  std::string expected =
      read_text(kDataDir / "models" / "stories260K" / "expected_greedy_from_bos_256.txt");
  std::string decoded = stream_decode(llama2c_tokenizer(), ids);
  if (!decoded.ends_with('\n') && expected.ends_with('\n')) expected.pop_back();
  EXPECT_EQ(decoded, expected);
}

TEST(SentencePieceBpe, ByteFallbackAcrossTokens) {
  const SentencePieceBpe& t = spm_tokenizer();
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, not in the vocabulary
  const Ids ids = t.encode(emoji, true, false);
  ASSERT_EQ(ids.size(), 6u);  // <s> ▁ and four byte tokens
  EXPECT_EQ(pieces_of(t, ids), "<s> \xE2\x96\x81 <0xF0> <0x9F> <0x98> <0x80>");
  Utf8Stream stream;
  std::string out;
  std::vector<std::string> steps;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::size_t before = out.size();
    stream.push(t.decode_piece(i == 0 ? -1 : ids[i - 1], ids[i]), out);
    steps.push_back(out.substr(before));
  }
  // "▁" after BOS loses its space; the emoji comes out whole with its last byte.
  EXPECT_EQ(steps, (std::vector<std::string>{"", "", "", "", "", emoji}));
  EXPECT_EQ(stream.finish(out), 0u);
  EXPECT_EQ(out, emoji);
  EXPECT_EQ(stream.replaced(), 0u);

  // Mixed text: each character's bytes reassemble, whatever the neighbours.
  const std::string mixed = "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x90\xB6!";
  EXPECT_EQ(stream_decode(t, t.encode(mixed, true, false)), mixed);
  EXPECT_EQ(t.decode(t.encode(mixed, false, true)), mixed);
  // A byte token alone is a raw byte, not UTF-8.
  EXPECT_EQ(t.decode_piece(-1, t.byte_to_id(0xF0)), "\xF0");
  EXPECT_EQ(t.decode_piece(-1, t.byte_to_id(' ')), " ");
  EXPECT_EQ(t.decode_piece(1, t.byte_to_id(' ')), " ");  // bytes keep their space after BOS
}

TEST(SentencePieceBpe, BosEosAndControlTokens) {
  const SentencePieceBpe& t = spm_tokenizer();
  const Ids plain = t.encode("Hello world", false, false);
  const Ids both = t.encode("Hello world", true, true);
  ASSERT_EQ(both.size(), plain.size() + 2);
  EXPECT_EQ(both.front(), 1);
  EXPECT_EQ(both.back(), 2);
  EXPECT_TRUE(std::equal(plain.begin(), plain.end(), both.begin() + 1));
  EXPECT_EQ(t.encode("Hello world", false, true).back(), 2);
  // The text "<s>" is characters, never the control token.
  EXPECT_EQ(pieces_of(t, t.encode("<s>", false, false)), "\xE2\x96\x81 < s >");

  const std::int32_t he = t.piece_to_id("\xE2\x96\x81He");
  ASSERT_GE(he, 0);
  EXPECT_EQ(t.decode_piece(1, he), "He");  // after BOS: leading space dropped
  EXPECT_EQ(t.decode_piece(-1, he), " He");
  EXPECT_EQ(t.decode_piece(2, he), " He");
  EXPECT_EQ(t.decode_piece(he, 1), "");  // control tokens decode to nothing
  EXPECT_EQ(t.decode_piece(he, 2), "");
  EXPECT_EQ(t.decode_piece(he, 0), " \xE2\x81\x87 ");  // <unk>: " ⁇ "
  EXPECT_EQ(t.decode(both), "Hello world");
  EXPECT_EQ(stream_decode(t, both), "Hello world");

  // A vocabulary without BOS/EOS.
  SentencePieceBpe::Vocab vocab = SentencePieceBpe::read_llama2c_vocab(kTok512, 512);
  vocab.bos = vocab.eos = -1;
  vocab.types.assign(vocab.pieces.size(), SentencePieceBpe::normal);
  vocab.types[0] = SentencePieceBpe::unknown;
  vocab.types[1] = vocab.types[2] = SentencePieceBpe::control;
  for (int id = 3; id < 259; ++id) vocab.types[id] = SentencePieceBpe::byte;
  const SentencePieceBpe none = SentencePieceBpe::from_vocab(vocab);
  EXPECT_EQ(none.encode("Hello world", false, false), plain);
  try {
    (void)none.encode("Hello", true, false);
    FAIL() << "expected skim::Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("BOS"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)none.encode("Hello", false, true), Error);
}

TEST(SentencePieceBpe, GgufStyleTypesMatchInferredOnes) {
  // stories260K.gguf's token_type array: 2, 3, 3, 256 × 6, then 1.
  SentencePieceBpe::Vocab vocab = SentencePieceBpe::read_llama2c_vocab(kTok512, 512);
  vocab.remove_extra_whitespaces = true;
  vocab.types.assign(vocab.pieces.size(), 1);
  vocab.types[0] = 2;
  vocab.types[1] = vocab.types[2] = 3;
  for (int id = 3; id < 259; ++id) vocab.types[id] = 6;
  const SentencePieceBpe typed = SentencePieceBpe::from_vocab(std::move(vocab));
  for (const Vector& v : vectors()) {
    if (v.byte_fallback) {
      EXPECT_EQ(typed.encode(v.text, true, true), spm_tokenizer().encode(v.text, true, true));
    }
  }
}

TEST(SentencePieceBpe, InvalidUtf8NamesTheOffset) {
  const SentencePieceBpe& t = spm_tokenizer();
  const auto expect_error_at = [&](std::string_view text, std::size_t offset) {
    try {
      (void)t.encode(text, true, false);
      ADD_FAILURE() << "no error for " << nlohmann::json::binary({text.begin(), text.end()}).dump();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::text);
      EXPECT_NE(std::string(e.what()).find("byte " + std::to_string(offset)), std::string::npos)
          << e.what();
    }
  };
  expect_error_at("ab\xC3(", 2);
  expect_error_at("\xFFhello", 0);
  expect_error_at("Once upon a time \xE2\x82", 17);     // truncated at the end
  expect_error_at("x \xED\xA0\x80 y", 2);               // surrogate
  expect_error_at("ok \xC0\xAF", 3);                    // overlong
  expect_error_at(std::string_view("a\0b\x80", 4), 3);  // stray continuation byte
}

TEST(SentencePieceBpe, UnknownIdIsAnError) {
  const SentencePieceBpe& t = spm_tokenizer();
  for (const std::int32_t bad : {512, -1, 1 << 30}) {
    try {
      (void)t.decode_piece(1, bad);
      ADD_FAILURE() << "no error for id " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
  }
  try {
    (void)t.decode(Ids{1, 300, 600, 2});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("600"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)t.id_to_piece(512), Error);
  EXPECT_THROW((void)t.type(-3), Error);
  EXPECT_NO_THROW((void)t.decode_piece(99999, 300));  // prev_id is only compared with BOS
}

TEST(Utf8Stream, HoldsBackUnfinishedCharacters) {
  Utf8Stream s;
  std::string out;
  s.push("a\xE2\x82", out);  // "a" and the first two bytes of "€"
  EXPECT_EQ(out, "a");
  EXPECT_EQ(s.pending(), 2u);
  s.push("\xAC", out);
  EXPECT_EQ(out, "a\xE2\x82\xAC");
  EXPECT_EQ(s.pending(), 0u);
  EXPECT_EQ(s.finish(out), 0u);
  EXPECT_EQ(s.replaced(), 0u);
  // One byte at a time.
  std::string emoji;
  for (const char c : std::string("\xF0\x9F\x98\x80")) s.push(std::string_view(&c, 1), emoji);
  EXPECT_EQ(emoji, "\xF0\x9F\x98\x80");
}

TEST(Utf8Stream, ReplacesAnUnfinishedSequenceAtTheEnd) {
  // Chosen behaviour: the unfinished bytes become U+FFFD (one per byte, as
  // SentencePiece's decode), finish() returns how many, replaced() counts them.
  Utf8Stream s;
  std::string out;
  s.push("ok \xF0\x9F\x98", out);
  EXPECT_EQ(out, "ok ");
  EXPECT_EQ(s.pending(), 3u);
  EXPECT_EQ(s.finish(out), 3u);
  EXPECT_EQ(out, "ok " + kFffd + kFffd + kFffd);
  EXPECT_EQ(s.replaced(), 3u);
  EXPECT_EQ(s.pending(), 0u);
  // Reusable after finish.
  out.clear();
  s.reset();
  s.push("\xC3\xA9", out);
  EXPECT_EQ(s.finish(out), 0u);
  EXPECT_EQ(out, "\xC3\xA9");

  // Through the tokenizer: ids ending inside a character. SentencePiece's
  // decode gives "\uFFFD\uFFFD" for <0xE2> <0x82>.
  const SentencePieceBpe& t = spm_tokenizer();
  const Ids cut{t.byte_to_id(0xE2), t.byte_to_id(0x82)};
  std::size_t replaced = 0;
  EXPECT_EQ(stream_decode(t, cut, &replaced), kFffd + kFffd);
  EXPECT_EQ(replaced, 2u);
  EXPECT_EQ(t.decode(cut, &replaced), kFffd + kFffd);
  EXPECT_EQ(replaced, 2u);
  // A control token ends a byte run in decode() (as in SentencePiece:
  // "a" <0xE2> <s> <0x82> <0xAC> → "a\uFFFD\uFFFD\uFFFD"), not in a stream.
  const Ids split{t.piece_to_id(kSpace + "a"), t.byte_to_id(0xE2), 1, t.byte_to_id(0x82),
                  t.byte_to_id(0xAC)};
  EXPECT_EQ(t.decode(split), "a" + kFffd + kFffd + kFffd);
  EXPECT_EQ(stream_decode(t, split), " a\xE2\x82\xAC");
}

TEST(Utf8Stream, ReplacesInvalidBytesOneByOne) {
  // The same replacements SentencePiece's decode makes for these byte tokens.
  const auto run = [](std::string_view bytes) {
    Utf8Stream s;
    std::string out;
    s.push(bytes, out);
    s.finish(out);
    return out;
  };
  EXPECT_EQ(run(std::string("\xF0") + "A"), kFffd + "A");             // cut short by "A"
  EXPECT_EQ(run("\xFF"), kFffd);                                      // never valid
  EXPECT_EQ(run("\xC0\x80"), kFffd + kFffd);                          // overlong
  EXPECT_EQ(run("\xED\xA0\x80"), kFffd + kFffd + kFffd);              // surrogate
  EXPECT_EQ(run("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // > U+10FFFF
  EXPECT_EQ(run(std::string("\x80") + "abc"), kFffd + "abc");         // stray continuation
  EXPECT_EQ(run("\xE2\x82\xC3\xA9"), kFffd + kFffd + "\xC3\xA9");
  EXPECT_EQ(run("\xF4\x8F\xBF\xBF"), "\xF4\x8F\xBF\xBF");  // U+10FFFF is fine
}

// Vocabularies made up for the rarer rules. make_spm_vectors.py checks the
// same expectations with SentencePiece on models holding the same pieces.
SentencePieceBpe::Vocab tiny_vocab(std::vector<std::string> extra, std::vector<float> scores,
                                   std::vector<std::int32_t> types) {
  SentencePieceBpe::Vocab vocab;
  vocab.pieces = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "c"};
  vocab.scores = {0, 0, 0, -10, -11, -12, -13};
  vocab.types = {2, 3, 3, 1, 1, 1, 1};
  vocab.pieces.insert(vocab.pieces.end(), extra.begin(), extra.end());
  vocab.scores.insert(vocab.scores.end(), scores.begin(), scores.end());
  vocab.types.insert(vocab.types.end(), types.begin(), types.end());
  vocab.add_dummy_prefix = false;
  return vocab;
}

TEST(SentencePieceBpe, EqualScoresMergeLeftmostFirst) {
  // "ab" and "ba" score the same: in "aba" and "bab" the leftmost pair wins.
  const auto t = SentencePieceBpe::from_vocab(tiny_vocab({"ab", "ba"}, {-1, -1}, {1, 1}));
  EXPECT_EQ(pieces_of(t, t.encode("aba", false, false)), "ab a");
  EXPECT_EQ(pieces_of(t, t.encode("bab", false, false)), "ba b");
  EXPECT_EQ(pieces_of(t, t.encode("ababab", false, false)), "ab ab ab");
  // A higher score wins wherever it is.
  const auto u = SentencePieceBpe::from_vocab(tiny_vocab({"ab", "ba"}, {-2, -1}, {1, 1}));
  EXPECT_EQ(pieces_of(u, u.encode("aba", false, false)), "a ba");
  // No byte tokens: a run of unknown characters is one <unk>.
  EXPECT_EQ(pieces_of(u, u.encode("xyab\xC3\xA9z", false, false)), "<unk> ab <unk>");
  EXPECT_FALSE(u.has_byte_fallback());
}

TEST(SentencePieceBpe, UserDefinedAndUnusedPieces) {
  // "<sep>" is user-defined: matched whole, never merged with neighbours.
  // "bc" is unused: it may be merged on the way to "bca", but on its own it
  // goes back to "b" "c".
  const auto t = SentencePieceBpe::from_vocab(
      tiny_vocab({"<sep>", "bc", "bca", "a<"}, {0, -1, -2, -0.5f}, {4, 5, 1, 1}));
  EXPECT_EQ(pieces_of(t, t.encode("a<sep>bc", false, false)), "a <sep> b c");
  EXPECT_EQ(pieces_of(t, t.encode("bca<sep>", false, false)), "bca <sep>");
  EXPECT_EQ(pieces_of(t, t.encode("a<", false, false)), "a<");
}

TEST(SentencePieceBpe, WordByWordMergingChangesNothing) {
  // encode() merges word by word unless some piece has "▁" after another
  // character; "x▁y" (never formed: no piece ends in "x▁") turns that off.
  SentencePieceBpe::Vocab vocab = SentencePieceBpe::read_llama2c_vocab(kTok512, 512);
  vocab.remove_extra_whitespaces = true;
  vocab.pieces.push_back("x\xE2\x96\x81y");
  vocab.scores.push_back(-1000);
  const SentencePieceBpe whole = SentencePieceBpe::from_vocab(std::move(vocab));
  std::string all;
  for (const Vector& v : vectors()) {
    if (!v.byte_fallback) continue;
    EXPECT_EQ(whole.encode(v.text, false, false), v.ids) << nlohmann::json(v.text).dump();
    all += v.text + " ";
  }
  EXPECT_EQ(whole.encode(all, true, true), spm_tokenizer().encode(all, true, true));
  // A piece across a space is merged when the text has it.
  const auto t = SentencePieceBpe::from_vocab(
      tiny_vocab({"a" + kSpace, "a" + kSpace + "b"}, {-1, -2}, {1, 1}));
  EXPECT_EQ(pieces_of(t, t.encode("ca b", false, false)), "c a" + kSpace + "b");
}

TEST(SentencePieceBpe, RejectsBadVocabularies) {
  const auto expect_model_error = [](SentencePieceBpe::Vocab vocab, const std::string& needle) {
    try {
      (void)SentencePieceBpe::from_vocab(std::move(vocab));
      ADD_FAILURE() << "no error (" << needle << ")";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::model);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  SentencePieceBpe::Vocab base = tiny_vocab({}, {}, {});
  auto v = base;
  v.scores.pop_back();
  expect_model_error(v, "scores");
  v = base;
  v.unk = 7;
  expect_model_error(v, "unknown-token id 7");
  v = base;
  v.types[4] = 9;
  expect_model_error(v, "type 9");
  v = base;
  v.types[4] = 6;
  expect_model_error(v, "byte type");
  v = base;
  v.pieces.push_back("<0x41>");
  v.scores.push_back(0);
  v.types.push_back(6);
  expect_model_error(v, "only 1 of the 256");
  v = base;
  v.pieces.clear();
  v.scores.clear();
  v.types.clear();
  expect_model_error(v, "no pieces");
  EXPECT_THROW((void)SentencePieceBpe::from_llama2c(kDataDir / "no-such-tokenizer.bin", 512),
               Error);
  EXPECT_THROW((void)SentencePieceBpe::from_llama2c(kTok512, 500), Error);  // bytes left over
}

TEST(SentencePieceBpe, LongDocumentEncodesFast) {
  // Every vector text, over and over: about 1 MB of mostly TinyStories prose.
  std::string document;
  while (document.size() < (1u << 20)) {
    for (const Vector& v : vectors()) {
      if (v.text.find("\xE2\x96\x81") == std::string::npos) document += v.text + "\n";
    }
  }
  const SentencePieceBpe& t = llama2c_tokenizer();
  Ids ids;
  const auto start = std::chrono::steady_clock::now();
  t.encode(document, true, false, ids);
  const auto stop = std::chrono::steady_clock::now();
  const double us = std::chrono::duration<double, std::micro>(stop - start).count();
  std::printf("[          ] encoded %zu bytes into %zu ids in %.0f us (%.1f MB/s)\n",
              document.size(), ids.size(), us, document.size() / us);
  EXPECT_EQ(t.decode(ids), document);

  // One story, as a request would send it (mean of 200 calls), and a 100 KB
  // word without spaces (one segment: the worst case for the merge queue).
  const std::string& story = vectors().front().text;
  Ids story_ids;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) {
    story_ids.clear();
    t.encode(story, true, false, story_ids);
  }
  const auto t1 = std::chrono::steady_clock::now();
  const std::string word(100000, 'a');
  const Ids word_ids = t.encode(word, false, false);
  const auto t2 = std::chrono::steady_clock::now();
  std::printf("[          ] one story (%zu bytes, %zu ids): %.1f us; %zu-byte word: %.0f us\n",
              story.size(), story_ids.size(),
              std::chrono::duration<double, std::micro>(t1 - t0).count() / 200, word.size(),
              std::chrono::duration<double, std::micro>(t2 - t1).count());
  EXPECT_EQ(t.decode(word_ids), word);
  // Generous bound (shared machine, unoptimized builds): quadratic merging
  // would take minutes here.
  EXPECT_LT(us, 20e6);
}

}  // namespace

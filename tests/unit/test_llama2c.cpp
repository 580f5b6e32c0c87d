// The llama2.c checkpoint and tokenizer readers: stories260K.bin reads as
// tests/data/README.md documents it and agrees bit for bit with
// stories260K.gguf; a small synthetic checkpoint pins the layout (with and
// without a separate classifier); each malformed file has its own test.
#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <vector>

#include "format/gguf.hpp"
#include "format/llama2c.hpp"
#include "format/tensor.hpp"
#include "skim/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using skim::ErrorCode;
using namespace skim::format;
using namespace skim::testing;

namespace {

const fs::path stories_dir = fs::path(SKIM_TEST_DATA_DIR) / "models" / "stories260K";

void expect_open_error(const fs::path& file, ErrorCode code, std::initializer_list<std::string> needles) {
  expect_error([&] { Llama2cCheckpoint opened(file); }, code, needles);
}

// A header followed by `floats` float32 values 0, 1, 2, ... so each tensor's
// first value is its offset (in floats) after the header.
fs::path write_checkpoint(const fs::path& path, std::initializer_list<std::int32_t> header, std::size_t floats) {
  std::vector<std::byte> bytes;
  for (std::int32_t field : header) append_bytes(bytes, field);
  for (std::size_t i = 0; i < floats; ++i) append_bytes(bytes, static_cast<float>(i));
  write_file_bytes(path, bytes);
  return path;
}

bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

// ---- checkpoints --------------------------------------------------------------

TEST(Llama2cCheckpoint, ReadsStories260K) {
  const Llama2cCheckpoint checkpoint(stories_dir / "stories260K.bin");
  const Llama2cHeader& h = checkpoint.header();
  EXPECT_EQ(h.dim, 64);
  EXPECT_EQ(h.hidden_dim, 172);
  EXPECT_EQ(h.n_layers, 5);
  EXPECT_EQ(h.n_heads, 8);
  EXPECT_EQ(h.n_kv_heads, 4);
  EXPECT_EQ(h.vocab_size, 512);
  EXPECT_EQ(h.seq_len, 512);
  EXPECT_TRUE(h.shared_classifier);
  EXPECT_EQ(h.head_size(), 8);
  EXPECT_EQ(h.kv_dim(), 32);

  EXPECT_EQ(checkpoint.names().size(), 1u + 9u * 5u + 1u);
  EXPECT_EQ(checkpoint.find("output.weight"), nullptr);  // shared with token_embd.weight
  EXPECT_EQ(checkpoint.source(), checkpoint.path());
  checkpoint.require("token_embd.weight", {512, 64});
  checkpoint.require("output_norm.weight", {64});
  for (const auto& [name, shape] : stories260k_block_tensors()) checkpoint.require(name, shape);
  expect_error([&] { checkpoint.require("output.weight", {512, 64}); }, ErrorCode::model,
               {"'output.weight' not found", "stories260K.bin"});
  // Zero-copy: the token table starts right after the 28-byte header.
  const std::vector<std::byte> file = read_file_bytes(stories_dir / "stories260K.bin");
  const TensorView& embedding = *checkpoint.find("token_embd.weight");
  EXPECT_EQ(std::memcmp(embedding.bytes.data(), file.data() + 28, embedding.bytes.size()), 0);
  const Llama2cCheckpoint moved = Llama2cCheckpoint(stories_dir / "stories260K.bin");
  EXPECT_EQ(moved.find("blk.4.ffn_up.weight")->bytes.data() + moved.find("blk.4.ffn_up.weight")->bytes.size() +
                4 * 64 /* output_norm */ + 2 * 4 * 512 * 4 /* freq_cis */,
            moved.find("token_embd.weight")->bytes.data() + file.size() - 28);
  for (const TensorView& tensor : checkpoint.tensors()) {
    EXPECT_EQ(tensor.dtype, DType::f32);
    EXPECT_EQ(tensor.bytes.size(), static_cast<std::size_t>(tensor.numel()) * 4) << tensor.name;
    EXPECT_EQ(tensor.file, checkpoint.path());
  }
}

// Every weight of the checkpoint is bit-identical to the GGUF tensor of the
// same name, Q and K included: this GGUF was converted from the llama2.c
// checkpoint directly, without the Q/K row permutation the Hugging Face
// converter applies. The GGUF's output.weight is a copy of the token table.
TEST(Llama2cCheckpoint, MatchesStories260KGgufBitForBit) {
  const Llama2cCheckpoint checkpoint(stories_dir / "stories260K.bin");
  const GgufFile gguf(stories_dir / "stories260K.gguf");
  EXPECT_EQ(gguf.tensors().size(), checkpoint.tensors().size() + 1);
  for (const TensorView& tensor : checkpoint.tensors()) {
    const TensorView* twin = gguf.find(tensor.name);
    ASSERT_NE(twin, nullptr) << tensor.name;
    EXPECT_EQ(twin->shape, tensor.shape) << tensor.name;
    EXPECT_TRUE(same_bytes(twin->bytes, tensor.bytes)) << tensor.name;
  }
  EXPECT_TRUE(same_bytes(gguf.find("blk.0.attn_q.weight")->bytes, checkpoint.find("blk.0.attn_q.weight")->bytes));
  EXPECT_TRUE(same_bytes(gguf.find("output.weight")->bytes, checkpoint.find("token_embd.weight")->bytes));
  EXPECT_EQ(gguf.get_u32("llama.embedding_length"), static_cast<std::uint32_t>(checkpoint.header().dim));
  EXPECT_EQ(gguf.get_u32("llama.feed_forward_length"), static_cast<std::uint32_t>(checkpoint.header().hidden_dim));
  EXPECT_EQ(gguf.get_u32("llama.block_count"), static_cast<std::uint32_t>(checkpoint.header().n_layers));
  EXPECT_EQ(gguf.get_u32("llama.attention.head_count_kv"), static_cast<std::uint32_t>(checkpoint.header().n_kv_heads));
}

TEST(Llama2cCheckpoint, LaysOutWeightsInRunCOrder) {
  const TemporaryDirectory dir;
  // dim 8, hidden 12, 2 layers, 2 heads, 1 kv head (kv_dim 4), vocab 10,
  // seq_len 4 (head_size 4: RoPE tables 4 × 2 each). Offsets in floats:
  // embd 0, attn_norm 80, wq 96, wk 224, wv 288, wo 352, ffn_norm 480, w1 496,
  // w2 688, w3 880, rms_final 1072, freq_cis 1080 and 1088, wcls 1096.
  const fs::path separate = write_checkpoint(dir / "separate.bin", {8, 12, 2, 2, 1, -10, 4}, 1176);
  const Llama2cCheckpoint checkpoint(separate);
  EXPECT_FALSE(checkpoint.header().shared_classifier);
  EXPECT_EQ(checkpoint.header().vocab_size, 10);
  EXPECT_EQ(checkpoint.tensors().size(), 1u + 9u * 2u + 2u);
  const auto first = [&](const std::string& name, const std::vector<std::int64_t>& shape) {
    return to_f32(checkpoint.require(name, shape)).front();
  };
  EXPECT_EQ(first("token_embd.weight", {10, 8}), 0.0f);
  EXPECT_EQ(first("blk.0.attn_norm.weight", {8}), 80.0f);
  EXPECT_EQ(first("blk.1.attn_norm.weight", {8}), 88.0f);
  EXPECT_EQ(first("blk.0.attn_q.weight", {8, 8}), 96.0f);
  EXPECT_EQ(first("blk.1.attn_q.weight", {8, 8}), 160.0f);
  EXPECT_EQ(first("blk.0.attn_k.weight", {4, 8}), 224.0f);
  EXPECT_EQ(first("blk.1.attn_k.weight", {4, 8}), 256.0f);
  EXPECT_EQ(first("blk.0.attn_v.weight", {4, 8}), 288.0f);
  EXPECT_EQ(first("blk.1.attn_v.weight", {4, 8}), 320.0f);
  EXPECT_EQ(first("blk.0.attn_output.weight", {8, 8}), 352.0f);
  EXPECT_EQ(first("blk.1.attn_output.weight", {8, 8}), 416.0f);
  EXPECT_EQ(first("blk.0.ffn_norm.weight", {8}), 480.0f);
  EXPECT_EQ(first("blk.1.ffn_norm.weight", {8}), 488.0f);
  EXPECT_EQ(first("blk.0.ffn_gate.weight", {12, 8}), 496.0f);
  EXPECT_EQ(first("blk.1.ffn_gate.weight", {12, 8}), 592.0f);
  EXPECT_EQ(first("blk.0.ffn_down.weight", {8, 12}), 688.0f);
  EXPECT_EQ(first("blk.1.ffn_down.weight", {8, 12}), 784.0f);
  EXPECT_EQ(first("blk.0.ffn_up.weight", {12, 8}), 880.0f);
  EXPECT_EQ(first("blk.1.ffn_up.weight", {12, 8}), 976.0f);
  EXPECT_EQ(first("output_norm.weight", {8}), 1072.0f);
  const std::vector<float> classifier = to_f32(checkpoint.require("output.weight", {10, 8}));
  EXPECT_EQ(classifier.front(), 1096.0f);
  EXPECT_EQ(classifier.back(), 1175.0f);

  const fs::path shared = write_checkpoint(dir / "shared.bin", {8, 12, 2, 2, 1, 10, 4}, 1096);
  const Llama2cCheckpoint shared_checkpoint(shared);
  EXPECT_TRUE(shared_checkpoint.header().shared_classifier);
  EXPECT_EQ(shared_checkpoint.find("output.weight"), nullptr);
  EXPECT_EQ(shared_checkpoint.tensors().size(), 1u + 9u * 2u + 1u);
}

TEST(Llama2cCheckpoint, RejectsFileSizeNotMatchingHeader) {
  const TemporaryDirectory dir;
  std::vector<std::byte> bytes = read_file_bytes(stories_dir / "stories260K.bin");
  ASSERT_EQ(bytes.size(), 1056540u);
  write_file_bytes(dir / "short.bin", std::span(bytes).first(bytes.size() - 4));
  // 1056540 with the shared classifier, 1056540 + 4·512·64 = 1187612 with a separate one.
  expect_open_error(dir / "short.bin", ErrorCode::format,
                    {"short.bin", "dim 64, hidden_dim 172, n_layers 5, n_heads 8, n_kv_heads 4, vocab_size 512, seq_len 512",
                     "1056540 bytes", "1187612 bytes", "positive vocab_size", "the file is 1056536 bytes"});
  // A negative vocab_size promises a classifier the file does not have.
  bytes = read_file_bytes(stories_dir / "stories260K.bin");
  const std::int32_t negative_vocab = -512;
  std::memcpy(bytes.data() + 20, &negative_vocab, 4);
  write_file_bytes(dir / "negative.bin", bytes);
  expect_open_error(dir / "negative.bin", ErrorCode::format,
                    {"negative.bin", "vocab_size -512", "1187612 bytes with a separate classifier", "negative vocab_size",
                     "the file is 1056540 bytes"});
  // Sizes that would overflow 64 bits are computed without wrapping.
  write_checkpoint(dir / "huge.bin", {2147483646, 2147483647, 2147483647, 1, 1, 2147483647, 2147483647}, 4);
  expect_open_error(dir / "huge.bin", ErrorCode::format, {"huge.bin", "more than 2^64", "the file is 44 bytes"});
}

TEST(Llama2cCheckpoint, RejectsBadHeaderValues) {
  const TemporaryDirectory dir;
  expect_open_error(write_checkpoint(dir / "heads0.bin", {64, 172, 5, 0, 4, 512, 512}, 0), ErrorCode::format,
                    {"heads0.bin", "n_heads = 0 must be positive"});
  expect_open_error(write_checkpoint(dir / "seq.bin", {64, 172, 5, 8, 4, 512, -1}, 0), ErrorCode::format,
                    {"seq_len = -1 must be positive"});
  expect_open_error(write_checkpoint(dir / "vocab.bin", {64, 172, 5, 8, 4, 0, 512}, 0), ErrorCode::format,
                    {"vocab_size = 0"});
  expect_open_error(write_checkpoint(dir / "dim.bin", {64, 172, 5, 7, 7, 512, 512}, 0), ErrorCode::model,
                    {"dim.bin", "dim 64 is not a multiple of n_heads 7"});
  expect_open_error(write_checkpoint(dir / "kv.bin", {64, 172, 5, 8, 3, 512, 512}, 0), ErrorCode::model,
                    {"kv.bin", "n_heads 8 is not a multiple of n_kv_heads 3"});
  expect_open_error(write_checkpoint(dir / "odd.bin", {63, 172, 5, 9, 9, 512, 512}, 0), ErrorCode::model,
                    {"odd.bin", "head size 7", "odd"});
  write_file_bytes(dir / "tiny.bin", std::vector<std::byte>(10));
  expect_open_error(dir / "tiny.bin", ErrorCode::format, {"tiny.bin", "10 bytes", "28-byte"});
  expect_open_error(dir / "missing.bin", ErrorCode::io, {"missing.bin"});
}

// ---- tokenizer ----------------------------------------------------------------

TEST(Llama2cTokenizer, ReadsTok512) {
  const Llama2cTokenizer tokenizer = read_llama2c_tokenizer(stories_dir / "tok512.bin", 512);
  // 7, the longest tokens being " friend" and " little" (the shared data
  // README says 9, which is the longest GGUF token: "▁little" in UTF-8).
  EXPECT_EQ(tokenizer.max_token_length, 7);
  ASSERT_EQ(tokenizer.tokens.size(), 512u);
  ASSERT_EQ(tokenizer.scores.size(), 512u);
  EXPECT_EQ(tokenizer.tokens[0], "<unk>");
  EXPECT_EQ(tokenizer.tokens[1], "\n<s>\n");
  EXPECT_EQ(tokenizer.tokens[2], "\n</s>\n");
  EXPECT_EQ(tokenizer.tokens[3], "<0x00>");
  EXPECT_EQ(tokenizer.tokens[258], "<0xFF>");
  EXPECT_EQ(tokenizer.tokens[259], " t");
  for (const std::string& token : tokenizer.tokens) EXPECT_LE(token.size(), 7u);
  // The GGUF carries the same vocabulary and scores, except that BOS/EOS are
  // spelled <s>/</s> and a word-initial space is SentencePiece's U+2581 "▁"
  // (llama2.c's exporter writes it as a plain space).
  const auto with_spaces = [](std::string token) {
    for (std::size_t at = token.find("\xE2\x96\x81"); at != std::string::npos; at = token.find("\xE2\x96\x81", at + 1)) {
      token.replace(at, 3, " ");
    }
    return token;
  };
  int tokens_with_marker = 0;
  const GgufFile gguf(stories_dir / "stories260K.gguf");
  const auto tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  const auto scores = gguf.get_f32_array("tokenizer.ggml.scores");
  for (std::size_t i = 0; i < 512; ++i) {
    if (i != 1 && i != 2) {
      EXPECT_EQ(tokenizer.tokens[i], with_spaces(tokens[i])) << i;
    }
    if (tokens[i] != tokenizer.tokens[i]) ++tokens_with_marker;
    EXPECT_EQ(std::bit_cast<std::uint32_t>(tokenizer.scores[i]), std::bit_cast<std::uint32_t>(scores[i])) << i;
  }
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(tokens[259], "\xE2\x96\x81t");
  EXPECT_EQ(tokens_with_marker, 2 + 91);
}

TEST(Llama2cTokenizer, RejectsTruncatedFile) {
  const TemporaryDirectory dir;
  const std::vector<std::byte> bytes = read_file_bytes(stories_dir / "tok512.bin");
  ASSERT_EQ(bytes.size(), 6227u);
  write_file_bytes(dir / "cut.bin", std::span(bytes).first(3000));
  expect_error([&] { read_llama2c_tokenizer(dir / "cut.bin", 512); }, ErrorCode::format,
               {"cut.bin", "of 512", "truncated"});
  write_file_bytes(dir / "cut_inside.bin", std::span(bytes).first(bytes.size() - 2));  // inside the last token
  expect_error([&] { read_llama2c_tokenizer(dir / "cut_inside.bin", 512); }, ErrorCode::format,
               {"cut_inside.bin", "token 511", "run past the end", "truncated"});
  // Fewer entries than the model's vocabulary.
  expect_error([&] { read_llama2c_tokenizer(stories_dir / "tok512.bin", 513); }, ErrorCode::format,
               {"tok512.bin", "after 512 of 513 tokens"});
  write_file_bytes(dir / "header_only.bin", std::span(bytes).first(2));
  expect_error([&] { read_llama2c_tokenizer(dir / "header_only.bin", 512); }, ErrorCode::format,
               {"header_only.bin", "2 bytes", "max_token_length"});
}

TEST(Llama2cTokenizer, RejectsTrailingBytesAndBadLengths) {
  const TemporaryDirectory dir;
  std::vector<std::byte> bytes = read_file_bytes(stories_dir / "tok512.bin");
  expect_error([&] { read_llama2c_tokenizer(stories_dir / "tok512.bin", 511); }, ErrorCode::format,
               {"tok512.bin", "follow the last of 511 tokens"});
  bytes.insert(bytes.end(), 3, std::byte{0x7f});
  write_file_bytes(dir / "trailing.bin", bytes);
  expect_error([&] { read_llama2c_tokenizer(dir / "trailing.bin", 512); }, ErrorCode::format,
               {"trailing.bin", "3 bytes follow the last of 512 tokens"});

  std::vector<std::byte> custom;
  append_bytes<std::int32_t>(custom, 3);  // max_token_length
  append_bytes<float>(custom, 0.0f);
  append_bytes<std::int32_t>(custom, 2);
  custom.push_back(std::byte{'a'});
  custom.push_back(std::byte{'b'});
  append_bytes<float>(custom, -1.0f);
  append_bytes<std::int32_t>(custom, 5);  // longer than max_token_length
  custom.insert(custom.end(), 5, std::byte{'x'});
  write_file_bytes(dir / "long.bin", custom);
  expect_error([&] { read_llama2c_tokenizer(dir / "long.bin", 2); }, ErrorCode::format,
               {"long.bin", "token 1", "length 5 exceeds max_token_length 3"});
  const std::int32_t negative = -1;
  std::memcpy(custom.data() + 4 + 4 + 4 + 2 + 4, &negative, 4);
  write_file_bytes(dir / "negative.bin", custom);
  expect_error([&] { read_llama2c_tokenizer(dir / "negative.bin", 2); }, ErrorCode::format,
               {"negative.bin", "token 1", "length -1 is negative"});
  expect_error([&] { read_llama2c_tokenizer(stories_dir / "tok512.bin", 0); }, ErrorCode::invalid_argument,
               {"vocab_size 0"});
}

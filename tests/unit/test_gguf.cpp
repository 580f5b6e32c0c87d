// The GGUF reader and writer, and Q8_0: the real stories260K.gguf reads as
// documented in tests/data/README.md; files written by write_gguf round-trip;
// each hostile or corrupt file (built here byte by byte) has its own test
// checking the error code and that the message names the file and what is
// wrong, and lying counts are rejected before anything large is allocated.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "format/gguf.hpp"
#include "format/gguf_writer.hpp"
#include "format/tensor.hpp"
#include "skim/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using skim::Error;
using skim::ErrorCode;
using namespace skim::format;
using namespace skim::testing;

namespace {

const fs::path stories_dir = fs::path(SKIM_TEST_DATA_DIR) / "models" / "stories260K";

void expect_open_error(const fs::path& file, ErrorCode code, std::initializer_list<std::string> needles) {
  expect_error([&] { GgufFile opened(file); }, code, needles);
}

// Writes GGUF bytes field by field, so a test can say anything, lies included.
class GgufBytes {
 public:
  template <typename T>
  GgufBytes& put(T value) {
    append_bytes(bytes_, value);
    return *this;
  }
  GgufBytes& raw(std::string_view text) {
    for (char c : text) bytes_.push_back(static_cast<std::byte>(c));
    return *this;
  }
  GgufBytes& str(std::string_view text) { return put<std::uint64_t>(text.size()).raw(text); }
  // Magic, version, tensor count, metadata count.
  GgufBytes& header(std::uint64_t tensors, std::uint64_t metadata, std::uint32_t version = 3) {
    return raw("GGUF").put<std::uint32_t>(version).put<std::uint64_t>(tensors).put<std::uint64_t>(metadata);
  }
  GgufBytes& kv_u32(std::string_view key, std::uint32_t value) {
    return str(key).put<std::uint32_t>(4).put<std::uint32_t>(value);
  }
  GgufBytes& kv_string(std::string_view key, std::string_view value) {
    return str(key).put<std::uint32_t>(8).str(value);
  }
  GgufBytes& tensor(std::string_view name, std::initializer_list<std::uint64_t> ne, std::uint32_t type,
                    std::uint64_t offset) {
    str(name).put<std::uint32_t>(static_cast<std::uint32_t>(ne.size()));
    for (std::uint64_t dim : ne) put<std::uint64_t>(dim);
    return put<std::uint32_t>(type).put<std::uint64_t>(offset);
  }
  GgufBytes& align(std::size_t alignment = 32) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(std::byte{0});
    return *this;
  }
  GgufBytes& zeros(std::size_t count) {
    bytes_.resize(bytes_.size() + count, std::byte{0});
    return *this;
  }
  std::size_t size() const { return bytes_.size(); }
  fs::path write(const fs::path& path) const {
    write_file_bytes(path, bytes_);
    return path;
  }

 private:
  std::vector<std::byte> bytes_;
};

}  // namespace

// ---- the real file ------------------------------------------------------------

TEST(GgufFile, ReadsStories260KHeaderAndMetadata) {
  const GgufFile gguf(stories_dir / "stories260K.gguf");
  EXPECT_EQ(gguf.version(), 3u);
  EXPECT_EQ(gguf.alignment(), 32u);
  EXPECT_EQ(gguf.data_offset(), 14176u);
  EXPECT_EQ(gguf.tensors().size(), 48u);
  EXPECT_EQ(gguf.names().size(), 48u);
  ASSERT_EQ(gguf.metadata().size(), 19u);
  EXPECT_EQ(gguf.metadata().front().key, "tokenizer.ggml.tokens");  // file order is kept

  EXPECT_EQ(gguf.get_string("general.architecture"), "llama");
  EXPECT_EQ(gguf.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(gguf.get_u32("llama.embedding_length"), 64u);
  EXPECT_EQ(gguf.get_u32("llama.context_length"), 2048u);
  EXPECT_EQ(gguf.get_u32("llama.feed_forward_length"), 172u);
  EXPECT_EQ(gguf.get_u32("llama.attention.head_count"), 8u);
  EXPECT_EQ(gguf.get_u32("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(gguf.get_u32("llama.block_count"), 5u);
  EXPECT_EQ(gguf.get_u32("llama.rope.dimension_count"), 8u);
  EXPECT_EQ(gguf.get_f32("llama.attention.layer_norm_rms_epsilon"), 1e-5f);
  EXPECT_DOUBLE_EQ(gguf.get_f64("llama.attention.layer_norm_rms_epsilon"), static_cast<double>(1e-5f));
  // Integer accessors accept any integer type whose value fits.
  EXPECT_EQ(gguf.get_i64("llama.block_count"), 5);
  EXPECT_EQ(gguf.get_i32("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(gguf.get_u64("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(gguf.get_u32("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_EQ(gguf.get_u32("tokenizer.ggml.padding_token_id"), 4294967295u);
  expect_error([&] { gguf.get_i32("tokenizer.ggml.padding_token_id"); }, ErrorCode::model,
               {"stories260K.gguf", "'tokenizer.ggml.padding_token_id'", "4294967295", "does not fit"});

  const std::span<const std::string> tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 512u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(tokens[258], "<0xFF>");
  EXPECT_EQ(gguf.get_f32_array("tokenizer.ggml.scores").size(), 512u);
  const std::vector<std::int32_t> token_types = gguf.get_i32_array("tokenizer.ggml.token_type");
  ASSERT_EQ(token_types.size(), 512u);
  EXPECT_EQ(token_types[0], 2);  // unknown
  EXPECT_EQ(token_types[1], 3);  // control
  EXPECT_EQ(token_types[3], 6);  // byte
  const GgufValue* tokens_value = gguf.find_metadata("tokenizer.ggml.tokens");
  ASSERT_NE(tokens_value, nullptr);
  EXPECT_EQ(tokens_value->type(), GgufType::array);
  EXPECT_EQ(tokens_value->describe(), "array of 512 string");

  EXPECT_EQ(gguf.find_u32("llama.block_count"), std::optional<std::uint32_t>(5u));
  EXPECT_EQ(gguf.find_u32("llama.no_such_key"), std::nullopt);
  EXPECT_EQ(gguf.find_string("general.name"), std::optional<std::string>("llama"));
  EXPECT_FALSE(gguf.find_string_array("tokenizer.ggml.merges").has_value());
  EXPECT_FALSE(gguf.find_f32("general.alignment").has_value());
}

TEST(GgufFile, ReadsStories260KTensors) {
  const GgufFile gguf(stories_dir / "stories260K.gguf");
  for (const TensorView& tensor : gguf.tensors()) {
    EXPECT_EQ(tensor.dtype, DType::f32) << tensor.name;
    EXPECT_EQ(tensor.bytes.size(), static_cast<std::size_t>(tensor.numel()) * 4) << tensor.name;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(tensor.bytes.data()) % 32, 0u) << tensor.name;
    EXPECT_EQ(tensor.file, gguf.path());
  }
  // Shapes are row-major: GGUF's ne[] reversed.
  EXPECT_EQ(gguf.require("token_embd.weight", {512, 64}).name, "token_embd.weight");
  gguf.require("output.weight", {512, 64});
  gguf.require("output_norm.weight", {64});
  for (const auto& [name, shape] : stories260k_block_tensors()) gguf.require(name, shape);
  expect_error([&] { gguf.require("blk.0.ffn_down.weight", {172, 64}); }, ErrorCode::model,
               {"stories260K.gguf", "'blk.0.ffn_down.weight'", "[64, 172]", "[172, 64]"});
  expect_error([&] { gguf.require("blk.5.attn_q.weight", {64, 64}); }, ErrorCode::model,
               {"'blk.5.attn_q.weight' not found", "stories260K.gguf"});

  // token_embd.weight is bit-identical to the token table of the llama2.c
  // checkpoint, read here straight from its bytes (after the 28-byte header).
  const std::vector<std::byte> bin = read_file_bytes(stories_dir / "stories260K.bin");
  const TensorView& embedding = *gguf.find("token_embd.weight");
  ASSERT_GE(bin.size(), 28 + embedding.bytes.size());
  EXPECT_EQ(std::memcmp(bin.data() + 28, embedding.bytes.data(), embedding.bytes.size()), 0);
  const std::vector<float> values = to_f32(embedding);
  float first;
  std::memcpy(&first, bin.data() + 28, 4);
  EXPECT_EQ(bits_of(values[0]), bits_of(first));

  // Views point into the map, so they stay valid when the file object moves.
  const std::byte* data = embedding.bytes.data();
  GgufFile moved = GgufFile(stories_dir / "stories260K.gguf");
  const GgufFile target = std::move(moved);
  EXPECT_EQ(target.find("token_embd.weight")->bytes.size(), embedding.bytes.size());
  EXPECT_EQ(std::memcmp(target.find("token_embd.weight")->bytes.data(), data, embedding.bytes.size()), 0);
  EXPECT_EQ(target.get_u32("llama.embedding_length"), 64u);
}

// ---- Q8_0 and byte sizes ------------------------------------------------------

TEST(GgufQ8_0, ByteSizes) {
  EXPECT_EQ(element_size(DType::f32), 4u);
  EXPECT_EQ(element_size(DType::bf16), 2u);
  EXPECT_EQ(block_elements(DType::q8_0), 32);
  EXPECT_EQ(block_bytes(DType::q8_0), 34u);
  EXPECT_EQ(byte_size(DType::q8_0, 0), 0u);
  EXPECT_EQ(byte_size(DType::q8_0, 64), 68u);
  EXPECT_EQ(byte_size(DType::f32, 3), 12u);
  EXPECT_EQ(byte_size(DType::f16, 3), 6u);
  EXPECT_EQ(to_string(DType::q8_0), "Q8_0");
  expect_error([] { byte_size(DType::q8_0, 33); }, ErrorCode::format, {"Q8_0", "33", "32"});
  expect_error([] { byte_size(DType::f32, std::int64_t{1} << 62); }, ErrorCode::format, {"overflow"});
  expect_error([] { byte_size(DType::f32, -1); }, ErrorCode::invalid_argument, {"-1"});
}

TEST(GgufQ8_0, DequantizesBlocks) {
  // Two blocks: d = 0.5 (fp16 0x3800) with q = -128..-97, d = -2 (0xc000) with q = 0..31.
  std::vector<std::byte> bytes(68);
  const std::uint16_t half_a = 0x3800, half_b = 0xc000;
  std::memcpy(bytes.data(), &half_a, 2);
  std::memcpy(bytes.data() + 34, &half_b, 2);
  for (int i = 0; i < 32; ++i) {
    bytes[2 + i] = static_cast<std::byte>(static_cast<std::int8_t>(-128 + i));
    bytes[36 + i] = static_cast<std::byte>(static_cast<std::int8_t>(i));
  }
  TensorView view;
  view.name = "q";
  view.dtype = DType::q8_0;
  view.shape = {2, 32};
  view.bytes = bytes;
  const std::vector<float> values = to_f32(view);
  ASSERT_EQ(values.size(), 64u);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(values[i], 0.5f * static_cast<float>(-128 + i)) << i;
    EXPECT_EQ(values[32 + i], -2.0f * static_cast<float>(i)) << i;
  }
  view.bytes = std::span<const std::byte>(bytes).first(67);
  expect_error([&] { to_f32(view); }, ErrorCode::internal, {"'q'"});
}

// ---- the writer ---------------------------------------------------------------

TEST(GgufWriter, RoundTripsEveryValueTypeAndDtype) {
  const TemporaryDirectory dir;
  const fs::path path = dir / "all.gguf";

  std::vector<GgufMetadataEntry> metadata;
  metadata.push_back({"t.u8", {std::uint8_t{200}}});
  metadata.push_back({"t.i8", {std::int8_t{-100}}});
  metadata.push_back({"t.u16", {std::uint16_t{60000}}});
  metadata.push_back({"t.i16", {std::int16_t{-30000}}});
  metadata.push_back({"t.u32", {std::uint32_t{4000000000u}}});
  metadata.push_back({"t.i32", {std::int32_t{-2000000000}}});
  metadata.push_back({"t.f32", {0.25f}});
  metadata.push_back({"t.bool", {true}});
  metadata.push_back({"t.string", {std::string("héllo")}});
  metadata.push_back({"t.u64", {std::uint64_t{1} << 40}});
  metadata.push_back({"t.i64", {-(std::int64_t{1} << 40)}});
  metadata.push_back({"t.f64", {0.1}});
  metadata.push_back({"t.strings", {GgufArray{std::vector<std::string>{"a", "", "ccc"}}}});
  metadata.push_back({"t.floats", {GgufArray{std::vector<float>{1.5f, -2.0f}}}});
  metadata.push_back({"t.i16s", {GgufArray{std::vector<std::int16_t>{-1, 2, 3}}}});
  metadata.push_back({"t.u64s", {GgufArray{std::vector<std::uint64_t>{1, std::uint64_t{1} << 40}}}});
  metadata.push_back({"t.bools", {GgufArray{std::vector<bool>{true, false, true}}}});
  metadata.push_back({"t.empty", {GgufArray{std::vector<double>{}}}});
  metadata.push_back({"t.nested",
                      {GgufArray{std::vector<GgufArray>{GgufArray{std::vector<std::int32_t>{1, 2}},
                                                        GgufArray{std::vector<std::int32_t>{3}}}}}});

  const std::vector<float> f32_values = {1.0f, -2.5f, 3.25f, 0.0f, 7.0f, 8.0f};
  const std::vector<std::uint16_t> f16_values = {0x3c00, 0xc000, 0x3800};     // 1, -2, 0.5
  const std::vector<std::uint16_t> bf16_values = {0x3f80, 0x4040, 0xbf00, 0};  // 1, 3, -0.5, 0
  std::vector<std::byte> q8_0_values(34, std::byte{0});
  const std::uint16_t scale = 0x3c00;  // 1.0
  std::memcpy(q8_0_values.data(), &scale, 2);
  for (int i = 0; i < 32; ++i) q8_0_values[2 + i] = static_cast<std::byte>(static_cast<std::int8_t>(i - 16));
  const std::vector<GgufTensorToWrite> tensors = {
      {"w.f32", DType::f32, {2, 3}, bytes_of(f32_values)},
      {"w.f16", DType::f16, {3}, bytes_of(f16_values)},
      {"w.bf16", DType::bf16, {2, 1, 2}, bytes_of(bf16_values)},
      {"w.q8_0", DType::q8_0, {1, 32}, q8_0_values},
  };
  for (std::uint32_t alignment : {32u, 64u}) {
    write_gguf(path, metadata, tensors, alignment);
    const GgufFile gguf(path);
    EXPECT_EQ(gguf.version(), 3u);
    EXPECT_EQ(gguf.alignment(), alignment);
    EXPECT_EQ(gguf.data_offset() % alignment, 0u);
    EXPECT_EQ(gguf.metadata().size(), metadata.size() + (alignment == 32 ? 0 : 1));
    for (std::size_t i = 0; i < metadata.size(); ++i) {
      EXPECT_EQ(gguf.metadata()[i].key, metadata[i].key);
      EXPECT_EQ(gguf.metadata()[i].value.type(), metadata[i].value.type()) << metadata[i].key;
    }
    EXPECT_EQ(gguf.get_u32("t.u8"), 200u);
    EXPECT_EQ(gguf.get_i32("t.i8"), -100);
    EXPECT_EQ(gguf.get_u32("t.u16"), 60000u);
    EXPECT_EQ(gguf.get_i64("t.i16"), -30000);
    EXPECT_EQ(gguf.get_u32("t.u32"), 4000000000u);
    EXPECT_EQ(gguf.get_i32("t.i32"), -2000000000);
    EXPECT_EQ(gguf.get_f32("t.f32"), 0.25f);
    EXPECT_TRUE(gguf.get_bool("t.bool"));
    EXPECT_EQ(gguf.get_string("t.string"), "héllo");
    EXPECT_EQ(gguf.get_u64("t.u64"), std::uint64_t{1} << 40);
    EXPECT_EQ(gguf.get_i64("t.i64"), -(std::int64_t{1} << 40));
    EXPECT_EQ(gguf.get_f64("t.f64"), 0.1);
    const std::span<const std::string> strings = gguf.get_string_array("t.strings");
    EXPECT_EQ(std::vector<std::string>(strings.begin(), strings.end()),
              (std::vector<std::string>{"a", "", "ccc"}));
    const std::span<const float> floats = gguf.get_f32_array("t.floats");
    EXPECT_EQ(std::vector<float>(floats.begin(), floats.end()), (std::vector<float>{1.5f, -2.0f}));
    EXPECT_EQ(gguf.get_i32_array("t.i16s"), (std::vector<std::int32_t>{-1, 2, 3}));
    expect_error([&] { gguf.get_i32_array("t.u64s"); }, ErrorCode::model,
                 {"'t.u64s'", "element 1", "1099511627776"});
    EXPECT_EQ(std::get<std::vector<bool>>(gguf.get_array("t.bools").elements), (std::vector<bool>{true, false, true}));
    EXPECT_EQ(gguf.get_array("t.empty").size(), 0u);
    EXPECT_EQ(gguf.get_array("t.empty").element_type(), GgufType::float64);
    const auto& nested = std::get<std::vector<GgufArray>>(gguf.get_array("t.nested").elements);
    ASSERT_EQ(nested.size(), 2u);
    EXPECT_EQ(std::get<std::vector<std::int32_t>>(nested[0].elements), (std::vector<std::int32_t>{1, 2}));
    EXPECT_EQ(std::get<std::vector<std::int32_t>>(nested[1].elements), (std::vector<std::int32_t>{3}));

    ASSERT_EQ(gguf.tensors().size(), 4u);
    for (const TensorView& tensor : gguf.tensors()) {
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(tensor.bytes.data()) % alignment, 0u) << tensor.name;
    }
    EXPECT_EQ(to_f32(gguf.require("w.f32", {2, 3})), f32_values);
    EXPECT_EQ(to_f32(gguf.require("w.f16", {3})), (std::vector<float>{1.0f, -2.0f, 0.5f}));
    EXPECT_EQ(to_f32(gguf.require("w.bf16", {2, 1, 2})), (std::vector<float>{1.0f, 3.0f, -0.5f, 0.0f}));
    const TensorView& q8 = gguf.require("w.q8_0", {1, 32});
    EXPECT_EQ(q8.dtype, DType::q8_0);
    const std::vector<float> dequantized = to_f32(q8);
    for (int i = 0; i < 32; ++i) EXPECT_EQ(dequantized[i], static_cast<float>(i - 16));
  }
}

TEST(GgufWriter, RejectsBadArguments) {
  const TemporaryDirectory dir;
  const fs::path path = dir / "bad.gguf";
  const std::vector<float> six(6, 1.0f);
  expect_error([&] { write_gguf(path, {}, {{"w", DType::f32, {2, 2}, bytes_of(six)}}); },
               ErrorCode::invalid_argument, {"bad.gguf", "'w'", "16", "24"});
  expect_error([&] { write_gguf(path, {}, {{"w", DType::f32, {6}, bytes_of(six)}, {"w", DType::f32, {6}, bytes_of(six)}}); },
               ErrorCode::invalid_argument, {"'w'", "twice"});
  expect_error([&] { write_gguf(path, {}, {{"w", DType::f32, {1, 1, 1, 1, 6}, bytes_of(six)}}); },
               ErrorCode::invalid_argument, {"'w'", "5 dimensions"});
  expect_error([&] { write_gguf(path, {{"k", {1.0f}}, {"k", {2.0f}}}, {}); }, ErrorCode::invalid_argument,
               {"'k'", "twice"});
  expect_error([&] { write_gguf(path, {}, {}, 48); }, ErrorCode::invalid_argument, {"48", "power of two"});
  expect_error([&] { write_gguf(path, {{"general.alignment", {std::uint32_t{32}}}}, {}, 64); },
               ErrorCode::invalid_argument, {"general.alignment", "64"});
  std::vector<std::byte> q8(34);
  expect_error([&] { write_gguf(path, {}, {{"q", DType::q8_0, {2, 16}, q8}}); }, ErrorCode::invalid_argument,
               {"'q'", "16", "blocks of 32"});
  EXPECT_FALSE(fs::exists(path));
}

// ---- hostile and corrupt files ------------------------------------------------

TEST(GgufFile, RejectsBadMagic) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().raw("GGML").put<std::uint32_t>(3).zeros(16).write(dir / "magic.gguf");
  expect_open_error(path, ErrorCode::format, {"magic.gguf", "not a GGUF file", "'GGML'"});
  const fs::path tiny = GgufBytes().raw("GG").write(dir / "tiny.gguf");
  expect_open_error(tiny, ErrorCode::format, {"tiny.gguf", "2 bytes"});
}

TEST(GgufFile, RejectsVersion1) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().raw("GGUF").put<std::uint32_t>(1).put<std::uint32_t>(0).put<std::uint32_t>(0)
                            .write(dir / "v1.gguf");
  expect_open_error(path, ErrorCode::unsupported, {"v1.gguf", "GGUF version 1", "versions 2 and 3"});
}

TEST(GgufFile, RejectsVersion4) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().header(0, 0, 4).write(dir / "v4.gguf");
  expect_open_error(path, ErrorCode::unsupported, {"v4.gguf", "GGUF version 4", "versions 2 and 3"});
}

TEST(GgufFile, RejectsBigEndianFile) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().raw("GGUF").put<std::uint32_t>(0x03000000u).zeros(16).write(dir / "be.gguf");
  expect_open_error(path, ErrorCode::unsupported, {"be.gguf", "big-endian", "version 3"});
}

TEST(GgufFile, ReadsVersion2) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().header(1, 1, 2).kv_u32("general.alignment", 32)
                            .tensor("w", {4}, 0, 0).align().zeros(16).write(dir / "v2.gguf");
  const GgufFile gguf(path);
  EXPECT_EQ(gguf.version(), 2u);
  EXPECT_EQ(gguf.require("w", {4}).bytes.size(), 16u);
}

TEST(GgufFile, RejectsAbsurdTensorCount) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().header(std::uint64_t{1} << 60, 0).zeros(100).write(dir / "tensors.gguf");
  expect_open_error(path, ErrorCode::format,
                    {"tensors.gguf", "tensor count 1152921504606846976 cannot fit", "24 bytes", "100 bytes are left"});
  // 2^63 tensors × 24 bytes overflows 64 bits; still a clean message.
  const fs::path overflow = GgufBytes().header(~std::uint64_t{0}, 0).write(dir / "overflow.gguf");
  expect_open_error(overflow, ErrorCode::format, {"tensor count 18446744073709551615 cannot fit"});
}

TEST(GgufFile, RejectsAbsurdMetadataCount) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().header(0, 4000000000ull).kv_u32("a", 1).write(dir / "metadata.gguf");
  expect_open_error(path, ErrorCode::format,
                    {"metadata.gguf", "metadata count 4000000000 cannot fit", "13 bytes", "17 bytes are left"});
}

TEST(GgufFile, RejectsAbsurdArrayLength) {
  const TemporaryDirectory dir;
  // An array of 2^32 strings where 1000 bytes remain: refused before any reserve.
  const fs::path strings = GgufBytes().header(0, 1).str("tokenizer.ggml.tokens")
                               .put<std::uint32_t>(9).put<std::uint32_t>(8).put<std::uint64_t>(4294967296ull)
                               .zeros(1000).write(dir / "strings.gguf");
  expect_open_error(strings, ErrorCode::format,
                    {"strings.gguf", "metadata key 'tokenizer.ggml.tokens'",
                     "array of 4294967296 strings cannot fit in the 1000 bytes left"});
  // n × 4 bytes overflows 64 bits.
  const fs::path numbers = GgufBytes().header(0, 1).str("tokenizer.ggml.scores")
                               .put<std::uint32_t>(9).put<std::uint32_t>(6).put<std::uint64_t>(std::uint64_t{1} << 62)
                               .zeros(64).write(dir / "numbers.gguf");
  expect_open_error(numbers, ErrorCode::format,
                    {"'tokenizer.ggml.scores'", "array of 4611686018427387904 float32", "64 bytes left"});
  // One element too many for the bytes present.
  const fs::path short_by_one = GgufBytes().header(0, 1).str("k")
                                    .put<std::uint32_t>(9).put<std::uint32_t>(4).put<std::uint64_t>(5)
                                    .zeros(16).write(dir / "short.gguf");
  expect_open_error(short_by_one, ErrorCode::format, {"'k'", "array of 5 uint32", "16 bytes left"});
  // Nested arrays: an absurd inner count, and nesting deeper than allowed.
  const fs::path nested = GgufBytes().header(0, 1).str("k")
                              .put<std::uint32_t>(9).put<std::uint32_t>(9).put<std::uint64_t>(1)
                              .put<std::uint32_t>(9).put<std::uint64_t>(std::uint64_t{1} << 40)
                              .zeros(48).write(dir / "nested.gguf");
  expect_open_error(nested, ErrorCode::format, {"'k'", "array of 1099511627776 arrays cannot fit"});
  GgufBytes deep;
  deep.header(0, 1).str("deep").put<std::uint32_t>(9);
  for (int level = 0; level < 20; ++level) deep.put<std::uint32_t>(9).put<std::uint64_t>(1);
  deep.zeros(64);
  expect_open_error(deep.write(dir / "deep.gguf"), ErrorCode::format, {"'deep'", "nested more than 8 deep"});
}

TEST(GgufFile, RejectsAbsurdStringLength) {
  const TemporaryDirectory dir;
  const fs::path value = GgufBytes().header(0, 1).str("general.name").put<std::uint32_t>(8)
                             .put<std::uint64_t>(std::uint64_t{1} << 63).raw("llama").write(dir / "value.gguf");
  expect_open_error(value, ErrorCode::format,
                    {"value.gguf", "metadata key 'general.name'",
                     "string of 9223372036854775808 bytes cannot fit in the 5 bytes left"});
  const fs::path key = GgufBytes().header(0, 1).put<std::uint64_t>(1000000).raw("general.name")
                           .zeros(8).write(dir / "key.gguf");
  expect_open_error(key, ErrorCode::format,
                    {"key.gguf", "metadata entry 1 of 1", "key of 1000000 bytes cannot fit in the 20 bytes left"});
  // A string inside an array.
  const fs::path element = GgufBytes().header(0, 1).str("tokenizer.ggml.tokens")
                               .put<std::uint32_t>(9).put<std::uint32_t>(8).put<std::uint64_t>(2)
                               .str("<unk>").put<std::uint64_t>(~std::uint64_t{0}).zeros(8)
                               .write(dir / "element.gguf");
  expect_open_error(element, ErrorCode::format,
                    {"'tokenizer.ggml.tokens'", "string of 18446744073709551615 bytes cannot fit in the 8 bytes left"});
  // A tensor name.
  const fs::path name = GgufBytes().header(1, 0).put<std::uint64_t>(5000).raw("w").zeros(24)
                            .write(dir / "name.gguf");
  expect_open_error(name, ErrorCode::format, {"tensor info 1 of 1", "name of 5000 bytes cannot fit"});
}

TEST(GgufFile, RejectsTruncatedHeader) {
  const TemporaryDirectory dir;
  // The first tensor info ends in the middle of its offset field.
  GgufBytes bytes;
  bytes.header(2, 0).tensor("a", {4}, 0, 0).str("b").put<std::uint32_t>(1).put<std::uint64_t>(4);
  bytes.put<std::uint32_t>(0).put<std::uint32_t>(0);
  const fs::path path = bytes.write(dir / "truncated.gguf");
  expect_open_error(path, ErrorCode::format, {"truncated.gguf", "tensor 'b'", "8-byte data offset", "truncated"});
}

TEST(GgufFile, RejectsTensorDataPastTheEnd) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().header(2, 0).tensor("a", {8}, 0, 0).tensor("b", {64}, 0, 32)
                            .align().zeros(32 + 128).write(dir / "past.gguf");
  expect_open_error(path, ErrorCode::format,
                    {"past.gguf", "tensor 'b'", "offset 32", "256 bytes", "runs past the end of the file", "160 bytes"});
  // An offset near 2^64: offset + size must not wrap around.
  const fs::path wrap = GgufBytes().header(1, 0).tensor("w", {8}, 0, ~std::uint64_t{0} - 31)
                            .align().zeros(32).write(dir / "wrap.gguf");
  expect_open_error(wrap, ErrorCode::format, {"tensor 'w'", "runs past the end of the file"});
  // No data section at all.
  const fs::path none = GgufBytes().header(1, 0).tensor("w", {8}, 0, 0).write(dir / "none.gguf");
  expect_open_error(none, ErrorCode::format, {"tensor 'w'", "holds 0 bytes"});
}

TEST(GgufFile, RejectsMisalignedTensorOffset) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().header(1, 0).tensor("blk.0.attn_q.weight", {8}, 0, 4)
                            .align().zeros(64).write(dir / "misaligned.gguf");
  expect_open_error(path, ErrorCode::format,
                    {"misaligned.gguf", "tensor 'blk.0.attn_q.weight'", "data offset 4",
                     "not a multiple of the alignment 32"});
  // With general.alignment = 64, offset 32 is misaligned.
  const fs::path aligned64 = GgufBytes().header(1, 1).kv_u32("general.alignment", 64).tensor("w", {8}, 0, 32)
                                 .align(64).zeros(128).write(dir / "align64.gguf");
  expect_open_error(aligned64, ErrorCode::format, {"tensor 'w'", "data offset 32", "alignment 64"});
}

TEST(GgufFile, RejectsBadAlignment) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().header(0, 1).kv_u32("general.alignment", 48).write(dir / "align.gguf");
  expect_open_error(path, ErrorCode::format, {"align.gguf", "general.alignment = 48", "power of two"});
  const fs::path zero = GgufBytes().header(0, 1).kv_u32("general.alignment", 0).write(dir / "zero.gguf");
  expect_open_error(zero, ErrorCode::format, {"general.alignment = 0"});
  const fs::path text = GgufBytes().header(0, 1).kv_string("general.alignment", "32").write(dir / "text.gguf");
  expect_open_error(text, ErrorCode::format, {"'general.alignment' is string"});
}

TEST(GgufFile, RejectsOverlappingTensors) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().header(2, 0).tensor("first", {64}, 0, 0).tensor("second", {64}, 0, 128)
                            .align().zeros(512).write(dir / "overlap.gguf");
  expect_open_error(path, ErrorCode::format,
                    {"overlap.gguf", "'first' [0, 256)", "'second' [128, 384)", "overlap"});
  // The same offset twice.
  const fs::path same = GgufBytes().header(2, 0).tensor("a", {8}, 0, 0).tensor("b", {8}, 0, 0)
                            .align().zeros(64).write(dir / "same.gguf");
  expect_open_error(same, ErrorCode::format, {"'a'", "'b'", "overlap"});
}

TEST(GgufFile, RejectsUnsupportedTensorType) {
  const TemporaryDirectory dir;
  const fs::path path = GgufBytes().header(1, 0).tensor("blk.0.ffn_up.weight", {256, 4}, 12, 0)
                            .align().zeros(1024).write(dir / "q4k.gguf");
  expect_open_error(path, ErrorCode::unsupported,
                    {"q4k.gguf", "tensor 'blk.0.ffn_up.weight'", "type Q4_K (12)", "not supported"});
  const fs::path unknown = GgufBytes().header(1, 0).tensor("w", {8}, 99, 0).align().zeros(64)
                               .write(dir / "unknown.gguf");
  expect_open_error(unknown, ErrorCode::format, {"tensor 'w'", "unknown ggml type 99"});
  EXPECT_EQ(ggml_type_name(2), "Q4_0");
  EXPECT_EQ(ggml_type_name(14), "Q6_K");
  EXPECT_EQ(ggml_type_name(23), "IQ4_XS");
  EXPECT_EQ(ggml_type_name(24), "I8");
  EXPECT_EQ(ggml_type_name(28), "F64");
  EXPECT_EQ(ggml_type_name(30), "BF16");
  EXPECT_EQ(ggml_type_name(1000), "type 1000");
}

TEST(GgufFile, RejectsBadTensorShapes) {
  const TemporaryDirectory dir;
  const fs::path dims = GgufBytes().header(1, 0).tensor("w", {1, 1, 1, 1, 8}, 0, 0).align().zeros(32)
                            .write(dir / "dims.gguf");
  expect_open_error(dims, ErrorCode::format, {"tensor 'w'", "5 dimensions", "at most 4"});
  const fs::path huge = GgufBytes().header(1, 0).tensor("w", {std::uint64_t{1} << 40, std::uint64_t{1} << 40}, 0, 0)
                            .align().zeros(32).write(dir / "huge.gguf");
  expect_open_error(huge, ErrorCode::format, {"tensor 'w'", "overflows"});
  const fs::path q8 = GgufBytes().header(1, 0).tensor("w", {16, 2}, 8, 0).align().zeros(64).write(dir / "q8.gguf");
  expect_open_error(q8, ErrorCode::format, {"tensor 'w'", "Q8_0", "rows of 16 values", "blocks of 32"});
  const fs::path twice = GgufBytes().header(2, 0).tensor("w", {8}, 0, 0).tensor("w", {8}, 0, 32).align()
                             .zeros(64).write(dir / "twice.gguf");
  expect_open_error(twice, ErrorCode::format, {"tensor 'w'", "appears twice"});
}

TEST(GgufFile, RejectsBadMetadataValues) {
  const TemporaryDirectory dir;
  const fs::path type = GgufBytes().header(0, 1).str("k").put<std::uint32_t>(13).zeros(8).write(dir / "type.gguf");
  expect_open_error(type, ErrorCode::format, {"metadata key 'k'", "unknown value type 13"});
  const fs::path flag = GgufBytes().header(0, 1).str("k").put<std::uint32_t>(7).put<std::uint8_t>(2)
                            .write(dir / "bool.gguf");
  expect_open_error(flag, ErrorCode::format, {"metadata key 'k'", "bool value 2"});
  const fs::path twice = GgufBytes().header(0, 2).kv_u32("k", 1).kv_u32("k", 2).write(dir / "twice.gguf");
  expect_open_error(twice, ErrorCode::format, {"metadata key 'k'", "appears twice"});
}

TEST(GgufFile, ReportsMissingAndMistypedMetadata) {
  const GgufFile gguf(stories_dir / "stories260K.gguf");
  expect_error([&] { gguf.get_u32("llama.expert_count"); }, ErrorCode::model,
               {"stories260K.gguf", "metadata key 'llama.expert_count' not found"});
  expect_error([&] { gguf.get_string_array("tokenizer.ggml.merges"); }, ErrorCode::model,
               {"stories260K.gguf", "'tokenizer.ggml.merges' not found"});
  expect_error([&] { gguf.get_u32("general.architecture"); }, ErrorCode::model,
               {"stories260K.gguf", "'general.architecture' is string", "unsigned 32-bit integer"});
  expect_error([&] { gguf.get_string("llama.block_count"); }, ErrorCode::model,
               {"'llama.block_count' is uint32", "expected a string"});
  expect_error([&] { gguf.get_f32("llama.block_count"); }, ErrorCode::model, {"'llama.block_count'", "float"});
  expect_error([&] { gguf.get_f32_array("tokenizer.ggml.tokens"); }, ErrorCode::model,
               {"'tokenizer.ggml.tokens' is array of 512 string", "array of float32"});
  expect_error([&] { gguf.get_i32_array("tokenizer.ggml.scores"); }, ErrorCode::model,
               {"'tokenizer.ggml.scores'", "array of integers"});
  expect_error([&] { gguf.get_bool("general.name"); }, ErrorCode::model, {"'general.name'", "bool"});
  // find_* are quiet only about a missing key.
  expect_error([&] { gguf.find_u32("general.name"); }, ErrorCode::model, {"'general.name' is string"});
}

TEST(GgufFile, SurvivesTruncationAndCorruption) {
  const TemporaryDirectory dir;
  const std::vector<std::byte> original = read_file_bytes(stories_dir / "stories260K.gguf");
  ASSERT_EQ(original.size(), 1185376u);
  const std::size_t header_size = 14176;
  // Every truncation inside the header and metadata fails cleanly.
  for (std::size_t length = 0; length < header_size; length += 211) {
    const fs::path path = dir / "cut.gguf";
    write_file_bytes(path, std::span(original).first(length));
    expect_open_error(path, ErrorCode::format, {"cut.gguf"});
  }
  // Truncating the data section is reported against the last tensor.
  write_file_bytes(dir / "cut.gguf", std::span(original).first(original.size() - 1));
  expect_open_error(dir / "cut.gguf", ErrorCode::format, {"tensor 'blk.4.ffn_norm.weight'", "runs past the end"});
  // Random byte damage in the header of the full file: it either still opens
  // (a changed value that is still valid) or fails with skim::Error, never
  // anything else. The damage is patched in place and undone each trial.
  const fs::path damaged = dir / "damaged.gguf";
  write_file_bytes(damaged, original);
  std::mt19937 random(12345);
  int opened = 0, rejected = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::size_t> positions;
    {
      std::fstream stream(damaged, std::ios::binary | std::ios::in | std::ios::out);
      for (int hit = 0; hit < 3; ++hit) {
        positions.push_back(random() % header_size);
        stream.seekp(static_cast<std::streamoff>(positions.back()));
        stream.put(static_cast<char>(random() & 0xff));
      }
    }
    try {
      const GgufFile gguf(damaged);
      ++opened;
    } catch (const Error&) {
      ++rejected;
    }
    std::fstream stream(damaged, std::ios::binary | std::ios::in | std::ios::out);
    for (std::size_t position : positions) {
      stream.seekp(static_cast<std::streamoff>(position));
      stream.put(static_cast<char>(original[position]));
    }
  }
  EXPECT_EQ(opened + rejected, 200);
  EXPECT_GT(rejected, 0);
}

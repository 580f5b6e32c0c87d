// The safetensors reader, the tensor store and the writer: good files written
// with write_safetensors round-trip; each corruption the reader must catch has
// its own test checking the error code and that the message names the file
// and the tensor.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "format/mapped_file.hpp"
#include "format/safetensors.hpp"
#include "format/safetensors_writer.hpp"
#include "format/tensor.hpp"
#include "skim/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using skim::ErrorCode;
using namespace skim::format;
using namespace skim::testing;

namespace {

// A hand-made file: 8-byte length, `header` verbatim, then `data_size` bytes.
void write_raw_safetensors(const fs::path& path, const std::string& header, std::size_t data_size) {
  std::vector<std::byte> bytes(8 + header.size() + data_size, std::byte{0});
  const std::uint64_t length = header.size();
  std::memcpy(bytes.data(), &length, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  write_file_bytes(path, bytes);
}

void expect_open_error(const fs::path& file, ErrorCode code, std::initializer_list<std::string> needles) {
  expect_error([&] { SafetensorsFile opened(file); }, code, needles);
}

// Half → float computed independently of the library (ldexp on the fields).
float reference_half_to_float(std::uint16_t half) {
  const int sign = (half >> 15) & 1;
  const int exponent = (half >> 10) & 0x1f;
  const int mantissa = half & 0x3ff;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);
  }
  return sign ? -magnitude : magnitude;
}

// A small two-tensor file used by several tests.
fs::path write_small_model(const TemporaryDirectory& dir, const std::string& name = "model.safetensors") {
  static const std::vector<float> embedding(2 * 3, 0.5f);
  static const std::vector<float> bias = {1.0f, 2.0f, 3.0f};
  const fs::path path = dir / name;
  write_safetensors(path, {{"embeddings.word_embeddings.weight", DType::f32, {2, 3}, bytes_of(embedding)},
                           {"embeddings.LayerNorm.bias", DType::f32, {3}, bytes_of(bias)}});
  return path;
}

std::uint64_t header_length_of(const fs::path& path) {
  const std::vector<std::byte> bytes = read_file_bytes(path);
  std::uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  return length;
}

}  // namespace

// ---------------------------------------------------------------- good files

TEST(Safetensors, RoundTripsF32F16Bf16AndMetadata) {
  TemporaryDirectory dir;
  const std::vector<float> f32_values = {0.0f, -1.5f, 3.25f, 1e-30f, -7e20f, 42.0f};
  // 11 halves: one 8-wide block for F16C plus a 3-element scalar tail.
  const std::vector<std::uint16_t> f16_values = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x7bff, 0x7c00,
                                                 0xfc00, 0x8000, 0x3555, 0x0400, 0x8001};
  const std::vector<float> f16_expected = {1.0f,
                                           -2.0f,
                                           0x1p-24f,
                                           0x3ffp-24f,
                                           65504.0f,
                                           std::numeric_limits<float>::infinity(),
                                           -std::numeric_limits<float>::infinity(),
                                           -0.0f,
                                           0x1.554p-2f,
                                           0x1p-14f,
                                           -0x1p-24f};
  const std::vector<std::uint16_t> bf16_values = {0x3f80, 0xc040, 0x7f80, 0x0001};
  const std::vector<float> bf16_expected = {1.0f, -3.0f, std::numeric_limits<float>::infinity(),
                                            std::bit_cast<float>(0x00010000u)};
  const auto f32_bytes = bytes_of(f32_values);
  const auto f16_bytes = bytes_of(f16_values);
  const auto bf16_bytes = bytes_of(bf16_values);
  const fs::path path = dir / "model.safetensors";
  write_safetensors(path,
                    {{"a.f32", DType::f32, {2, 3}, f32_bytes},
                     {"b.f16", DType::f16, {11}, f16_bytes},
                     {"c.bf16", DType::bf16, {2, 2}, bf16_bytes}},
                    {{"format", "pt"}, {"skim_note", "calibration"}});

  const SafetensorsFile file(path);
  EXPECT_EQ(file.path(), path.string());
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("skim_note"), "calibration");

  const TensorView* f32 = file.find("a.f32");
  ASSERT_NE(f32, nullptr);
  EXPECT_EQ(f32->dtype, DType::f32);
  EXPECT_EQ(f32->shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(f32->numel(), 6);
  EXPECT_EQ(f32->shape_string(), "[2, 3]");
  EXPECT_EQ(f32->file, path.string());
  EXPECT_EQ(to_f32(*f32), f32_values);

  const TensorView* f16 = file.find("b.f16");
  ASSERT_NE(f16, nullptr);
  EXPECT_EQ(f16->dtype, DType::f16);
  EXPECT_EQ(f16->bytes.size(), 22u);
  const std::vector<float> f16_read = to_f32(*f16);
  ASSERT_EQ(f16_read.size(), f16_expected.size());
  for (std::size_t i = 0; i < f16_read.size(); ++i) {
    EXPECT_EQ(bits_of(f16_read[i]), bits_of(f16_expected[i])) << "half #" << i;
  }

  const TensorView* bf16 = file.find("c.bf16");
  ASSERT_NE(bf16, nullptr);
  EXPECT_EQ(bf16->dtype, DType::bf16);
  const std::vector<float> bf16_read = to_f32(*bf16);
  ASSERT_EQ(bf16_read.size(), bf16_expected.size());
  for (std::size_t i = 0; i < bf16_read.size(); ++i) {
    EXPECT_EQ(bits_of(bf16_read[i]), bits_of(bf16_expected[i])) << "bf16 #" << i;
  }
  EXPECT_EQ(file.find("missing"), nullptr);
}

TEST(Safetensors, WriterPadsHeaderToMultipleOf8AndLeavesNoTemporaryFile) {
  TemporaryDirectory dir;
  const std::vector<float> values = {1.0f};
  const auto bytes = bytes_of(values);
  const fs::path path = dir / "model.safetensors";
  // Names of 1..8 characters give every header length modulo 8.
  for (std::size_t name_length = 1; name_length <= 8; ++name_length) {
    const std::string name(name_length, 'w');
    write_safetensors(path, {{name, DType::f32, {1}, bytes}});
    const std::uint64_t header_length = header_length_of(path);
    EXPECT_EQ(header_length % 8, 0u) << name;
    const std::vector<std::byte> file_bytes = read_file_bytes(path);
    const std::string header(reinterpret_cast<const char*>(file_bytes.data()) + 8, header_length);
    const std::size_t json_end = header.rfind('}') + 1;
    EXPECT_LT(header.size() - json_end, 8u) << name;
    EXPECT_EQ(header.find_first_not_of(' ', json_end), std::string::npos) << "padding is spaces: " << name;
    const SafetensorsFile file(path);  // an overwrite reads back as the new file
    ASSERT_NE(file.find(name), nullptr);
    EXPECT_EQ(to_f32(*file.find(name)), values);
  }
  std::vector<std::string> entries;
  for (const auto& entry : fs::directory_iterator(dir.path())) entries.push_back(entry.path().filename());
  EXPECT_EQ(entries, std::vector<std::string>{"model.safetensors"});
}

TEST(Safetensors, ZeroElementTensorAndScalarAreAccepted) {
  TemporaryDirectory dir;
  const std::vector<float> scalar = {2.5f};
  const auto scalar_bytes = bytes_of(scalar);
  const fs::path path = dir / "model.safetensors";
  write_safetensors(path, {{"empty", DType::f32, {0, 4}, {}}, {"scalar", DType::f32, {}, scalar_bytes}});
  const SafetensorsFile file(path);
  ASSERT_NE(file.find("empty"), nullptr);
  EXPECT_EQ(file.find("empty")->numel(), 0);
  EXPECT_TRUE(to_f32(*file.find("empty")).empty());
  ASSERT_NE(file.find("scalar"), nullptr);
  EXPECT_EQ(file.find("scalar")->shape_string(), "[]");
  EXPECT_EQ(to_f32(*file.find("scalar")), scalar);
}

TEST(TensorConversion, F16MatchesReferenceForEveryBitPatternInBothPaths) {
  std::vector<std::uint16_t> halves(65536);
  for (std::size_t i = 0; i < halves.size(); ++i) halves[i] = static_cast<std::uint16_t>(i);
  const auto bytes = bytes_of(halves);

  TensorView all;
  all.name = "all_halves";
  all.dtype = DType::f16;
  all.shape = {65536};
  all.bytes = bytes;
  const std::vector<float> converted = to_f32(all);  // vector path where compiled in

  for (std::size_t i = 0; i < halves.size(); ++i) {
    TensorView one = all;  // one element: always the scalar path
    one.shape = {1};
    one.bytes = std::span<const std::byte>(bytes).subspan(2 * i, 2);
    const float single = to_f32(one)[0];
    const float expected = reference_half_to_float(halves[i]);
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(converted[i])) << std::hex << halves[i];
      // Both paths give the same bits for NaN too (quiet bit set, payload kept).
      ASSERT_EQ(bits_of(single), bits_of(converted[i])) << std::hex << halves[i];
    } else {
      ASSERT_EQ(bits_of(converted[i]), bits_of(expected)) << std::hex << halves[i];
      ASSERT_EQ(bits_of(single), bits_of(expected)) << std::hex << halves[i];
    }
  }
}

TEST(TensorConversion, RejectsOutputOfWrongSize) {
  const std::vector<float> values = {1.0f, 2.0f};
  const auto bytes = bytes_of(values);
  TensorView view;
  view.name = "x";
  view.shape = {2};
  view.bytes = bytes;
  std::vector<float> out(3);
  expect_error([&] { convert_to_f32(view, out); }, ErrorCode::invalid_argument, {"'x'"});
}

TEST(TensorDtype, NamesAndSizes) {
  EXPECT_EQ(to_string(DType::f32), "F32");
  EXPECT_EQ(to_string(DType::f16), "F16");
  EXPECT_EQ(to_string(DType::bf16), "BF16");
  EXPECT_EQ(element_size(DType::f32), 4u);
  EXPECT_EQ(element_size(DType::f16), 2u);
  EXPECT_EQ(element_size(DType::bf16), 2u);
}

// ------------------------------------------------------------ corrupt files

TEST(Safetensors, EmptyFileIsTooShort) {
  TemporaryDirectory dir;
  const fs::path path = dir / "empty.safetensors";
  write_file_bytes(path, {});
  expect_open_error(path, ErrorCode::format, {path.string(), "0 bytes"});
}

TEST(Safetensors, FileCutInsideHeader) {
  TemporaryDirectory dir;
  const fs::path path = write_small_model(dir);
  std::vector<std::byte> bytes = read_file_bytes(path);
  bytes.resize(8 + header_length_of(path) / 2);
  write_file_bytes(path, bytes);
  expect_open_error(path, ErrorCode::format, {path.string(), "header length"});
}

TEST(Safetensors, FileCutInsideData) {
  TemporaryDirectory dir;
  const fs::path path = write_small_model(dir);
  std::vector<std::byte> bytes = read_file_bytes(path);
  bytes.resize(bytes.size() - 4);  // the last tensor written loses its last float
  write_file_bytes(path, bytes);
  expect_open_error(path, ErrorCode::format,
                    {path.string(), "'embeddings.LayerNorm.bias'", "[24, 36]", "32 bytes"});
}

TEST(Safetensors, GarbageHeaderLength) {
  TemporaryDirectory dir;
  const fs::path path = write_small_model(dir);
  std::vector<std::byte> bytes = read_file_bytes(path);
  std::memset(bytes.data(), 0xff, 8);
  write_file_bytes(path, bytes);
  expect_open_error(path, ErrorCode::format, {path.string(), "header length 18446744073709551615"});
}

TEST(Safetensors, HeaderLengthAboveLimit) {
  TemporaryDirectory dir;
  const fs::path path = write_small_model(dir);
  std::vector<std::byte> bytes = read_file_bytes(path);
  const std::uint64_t length = 200'000'000;
  std::memcpy(bytes.data(), &length, 8);
  write_file_bytes(path, bytes);
  expect_open_error(path, ErrorCode::format, {path.string(), "200000000", "100000000"});
}

TEST(Safetensors, ZeroHeaderLength) {
  TemporaryDirectory dir;
  const fs::path path = dir / "zero.safetensors";
  write_raw_safetensors(path, "", 16);
  expect_open_error(path, ErrorCode::format, {path.string(), "header length is 0"});
}

TEST(Safetensors, InvalidJsonHeader) {
  TemporaryDirectory dir;
  const fs::path path = dir / "bad_json.safetensors";
  write_raw_safetensors(path, R"({"w": {"dtype": "F32", "shape": [1], )", 4);
  expect_open_error(path, ErrorCode::format, {path.string(), "not valid JSON"});
}

TEST(Safetensors, HeaderThatIsNotAnObject) {
  TemporaryDirectory dir;
  const fs::path path = dir / "array.safetensors";
  write_raw_safetensors(path, "[1, 2, 3]", 0);
  expect_open_error(path, ErrorCode::format, {path.string(), "array", "expected an object"});
}

TEST(Safetensors, MetadataWithNonStringValue) {
  TemporaryDirectory dir;
  const fs::path path = dir / "metadata.safetensors";
  write_raw_safetensors(path, R"({"__metadata__": {"format": 1}})", 0);
  expect_open_error(path, ErrorCode::format, {path.string(), "__metadata__", "'format'"});
}

TEST(Safetensors, OffsetsPastEndOfData) {
  TemporaryDirectory dir;
  const fs::path path = dir / "past_end.safetensors";
  write_raw_safetensors(path, R"({"encoder.w": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]}})", 32);
  expect_open_error(path, ErrorCode::format, {path.string(), "'encoder.w'", "[0, 64]", "32 bytes"});
}

TEST(Safetensors, OverlappingRanges) {
  TemporaryDirectory dir;
  const fs::path path = dir / "overlap.safetensors";
  write_raw_safetensors(path,
                        R"({"first": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                            "second": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})",
                        24);
  expect_open_error(path, ErrorCode::format, {path.string(), "'first'", "'second'", "overlap"});
}

TEST(Safetensors, SizeNotMatchingShapeTimesDtype) {
  TemporaryDirectory dir;
  const fs::path path = dir / "model.safetensors";
  write_raw_safetensors(
      path,
      R"({"bert.encoder.layer.3.output.dense.weight": {"dtype": "F32", "shape": [768, 3072], "data_offsets": [0, 9437180]}})",
      0);
  expect_open_error(path, ErrorCode::format,
                    {path.string(), "'bert.encoder.layer.3.output.dense.weight'",
                     "shape [768, 3072] × F32 needs 9437184 bytes but data_offsets span 9437180"});
}

TEST(Safetensors, ShapeWhoseByteCountOverflows) {
  TemporaryDirectory dir;
  const fs::path path = dir / "overflow.safetensors";
  write_raw_safetensors(
      path, R"({"huge": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}})", 0);
  expect_open_error(path, ErrorCode::format, {path.string(), "'huge'", "overflows"});
}

TEST(Safetensors, UnsupportedDtype) {
  TemporaryDirectory dir;
  const fs::path path = dir / "ids.safetensors";
  write_raw_safetensors(path, R"({"position_ids": {"dtype": "I64", "shape": [1, 4], "data_offsets": [0, 32]}})",
                        32);
  expect_open_error(path, ErrorCode::unsupported, {path.string(), "'position_ids'", "I64"});
}

TEST(Safetensors, UnknownDtypeIsAFormatError) {
  TemporaryDirectory dir;
  const fs::path path = dir / "unknown.safetensors";
  write_raw_safetensors(path, R"({"w": {"dtype": "FLOAT", "shape": [1], "data_offsets": [0, 4]}})", 4);
  expect_open_error(path, ErrorCode::format, {path.string(), "'w'", "'FLOAT'"});
}

TEST(Safetensors, NegativeShape) {
  TemporaryDirectory dir;
  const fs::path path = dir / "negative.safetensors";
  write_raw_safetensors(path, R"({"w": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 0]}})", 0);
  expect_open_error(path, ErrorCode::format, {path.string(), "'w'", "shape[1]", "negative", "-3"});
}

TEST(Safetensors, MissingDataOffsets) {
  TemporaryDirectory dir;
  const fs::path path = dir / "no_offsets.safetensors";
  write_raw_safetensors(path, R"({"w": {"dtype": "F32", "shape": [1]}})", 4);
  expect_open_error(path, ErrorCode::format, {path.string(), "'w'", "data_offsets"});
}

TEST(Safetensors, DataOffsetsEndingBeforeTheyBegin) {
  TemporaryDirectory dir;
  const fs::path path = dir / "reversed.safetensors";
  write_raw_safetensors(path, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8);
  expect_open_error(path, ErrorCode::format, {path.string(), "'w'", "[8, 4]"});
}

TEST(MappedFile, MissingFileIsAnIoErrorNamingPathAndReason) {
  TemporaryDirectory dir;
  const fs::path path = dir / "nope.safetensors";
  expect_error([&] { MappedFile mapped(path); }, ErrorCode::io, {path.string(), "No such file"});
}

TEST(SafetensorsWriter, RejectsBytesNotMatchingShape) {
  TemporaryDirectory dir;
  const std::vector<float> values = {1.0f, 2.0f, 3.0f};
  const auto bytes = bytes_of(values);
  const fs::path path = dir / "out.safetensors";
  expect_error([&] { write_safetensors(path, {{"w", DType::f32, {2, 2}, bytes}}); },
               ErrorCode::invalid_argument, {path.string(), "'w'", "16", "12"});
  EXPECT_FALSE(fs::exists(path));
}

TEST(SafetensorsWriter, RejectsDuplicateNames) {
  TemporaryDirectory dir;
  const std::vector<float> values = {1.0f};
  const auto bytes = bytes_of(values);
  expect_error(
      [&] { write_safetensors(dir / "out.safetensors", {{"w", DType::f32, {1}, bytes}, {"w", DType::f32, {1}, bytes}}); },
      ErrorCode::invalid_argument, {"'w'"});
}

// ------------------------------------------------------------- tensor store

TEST(TensorStore, OpenDirectoryWithSingleFileAndRequire) {
  TemporaryDirectory dir;
  write_small_model(dir);
  const TensorStore store = TensorStore::open_directory(dir.path());
  EXPECT_EQ(store.source(), dir.path().string());
  EXPECT_EQ(store.names(), (std::vector<std::string>{"embeddings.LayerNorm.bias", "embeddings.word_embeddings.weight"}));
  const TensorView& bias = store.require("embeddings.LayerNorm.bias", {3});
  EXPECT_EQ(to_f32(bias), (std::vector<float>{1.0f, 2.0f, 3.0f}));
  EXPECT_EQ(store.find("pooler.dense.weight"), nullptr);
}

TEST(TensorStore, OpenFileAndMoveKeepsViewsValid) {
  TemporaryDirectory dir;
  const fs::path path = write_small_model(dir, "weights.safetensors");
  TensorStore opened = TensorStore::open_file(path);
  const TensorStore moved = std::move(opened);
  EXPECT_EQ(moved.source(), path.string());
  EXPECT_EQ(to_f32(moved.require("embeddings.word_embeddings.weight", {2, 3})), std::vector<float>(6, 0.5f));
}

TEST(TensorStore, RequireMissingTensor) {
  TemporaryDirectory dir;
  write_small_model(dir);
  const TensorStore store = TensorStore::open_directory(dir.path());
  expect_error([&] { store.require("pooler.dense.weight", {768, 768}); }, ErrorCode::model,
               {"'pooler.dense.weight'", "not found", dir.path().string()});
}

TEST(TensorStore, RequireWrongShape) {
  TemporaryDirectory dir;
  const fs::path path = write_small_model(dir);
  const TensorStore store = TensorStore::open_directory(dir.path());
  expect_error([&] { store.require("embeddings.word_embeddings.weight", {3, 2}); }, ErrorCode::model,
               {path.string(), "'embeddings.word_embeddings.weight'", "[2, 3]", "[3, 2]"});
}

TEST(TensorStore, DirectoryWithoutWeights) {
  TemporaryDirectory dir;
  expect_error([&] { TensorStore::open_directory(dir.path()); }, ErrorCode::io,
               {dir.path().string(), "model.safetensors"});
}

namespace {

// Two shards and an index for them, as HF's sharded checkpoints are laid out.
void write_sharded_model(const TemporaryDirectory& dir, const std::string& index_json) {
  static const std::vector<float> first = {1.0f, 2.0f};
  static const std::vector<float> second = {3.0f, 4.0f, 5.0f};
  write_safetensors(dir / "model-00001-of-00002.safetensors",
                    {{"encoder.layer.0.weight", DType::f32, {2}, bytes_of(first)}});
  write_safetensors(dir / "model-00002-of-00002.safetensors",
                    {{"encoder.layer.1.weight", DType::f32, {3}, bytes_of(second)}});
  std::ofstream(dir / "model.safetensors.index.json") << index_json;
}

const char* const good_index = R"({
  "metadata": {"total_size": 20},
  "weight_map": {
    "encoder.layer.0.weight": "model-00001-of-00002.safetensors",
    "encoder.layer.1.weight": "model-00002-of-00002.safetensors"
  }
})";

}  // namespace

TEST(TensorStore, ShardedIndexWithTwoShards) {
  TemporaryDirectory dir;
  write_sharded_model(dir, good_index);
  const TensorStore store = TensorStore::open_directory(dir.path());
  EXPECT_EQ(store.names(), (std::vector<std::string>{"encoder.layer.0.weight", "encoder.layer.1.weight"}));
  const TensorView& first = store.require("encoder.layer.0.weight", {2});
  const TensorView& second = store.require("encoder.layer.1.weight", {3});
  EXPECT_EQ(first.file, (dir / "model-00001-of-00002.safetensors").string());
  EXPECT_EQ(second.file, (dir / "model-00002-of-00002.safetensors").string());
  EXPECT_EQ(to_f32(first), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(to_f32(second), (std::vector<float>{3.0f, 4.0f, 5.0f}));
}

TEST(TensorStore, IndexNamingMissingShard) {
  TemporaryDirectory dir;
  write_sharded_model(dir, R"({"weight_map": {
    "encoder.layer.0.weight": "model-00001-of-00002.safetensors",
    "encoder.layer.1.weight": "model-00002-of-00003.safetensors"}})");
  expect_error([&] { TensorStore::open_directory(dir.path()); }, ErrorCode::io,
               {"model.safetensors.index.json", "'model-00002-of-00003.safetensors'", "'encoder.layer.1.weight'",
                "does not exist"});
}

TEST(TensorStore, IndexNamingTensorMissingFromItsShard) {
  TemporaryDirectory dir;
  write_sharded_model(dir, R"({"weight_map": {
    "encoder.layer.0.weight": "model-00001-of-00002.safetensors",
    "encoder.layer.1.weight": "model-00002-of-00002.safetensors",
    "encoder.layer.2.weight": "model-00002-of-00002.safetensors"}})");
  expect_error([&] { TensorStore::open_directory(dir.path()); }, ErrorCode::format,
               {"model.safetensors.index.json", "'encoder.layer.2.weight'", "model-00002-of-00002.safetensors"});
}

TEST(TensorStore, SameTensorInTwoShards) {
  TemporaryDirectory dir;
  write_sharded_model(dir, good_index);
  const std::vector<float> values = {9.0f, 9.0f};
  const auto bytes = bytes_of(values);
  write_safetensors(dir / "model-00002-of-00002.safetensors",
                    {{"encoder.layer.0.weight", DType::f32, {2}, bytes}, {"encoder.layer.1.weight", DType::f32, {2}, bytes}});
  expect_error([&] { TensorStore::open_directory(dir.path()); }, ErrorCode::format,
               {"'encoder.layer.0.weight'", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
}

TEST(TensorStore, IndexThatIsNotValidJson) {
  TemporaryDirectory dir;
  write_sharded_model(dir, R"({"weight_map": {"encoder.layer.0.weight": )");
  expect_error([&] { TensorStore::open_directory(dir.path()); }, ErrorCode::format,
               {"model.safetensors.index.json", "not valid JSON"});
}

TEST(TensorStore, IndexWithoutWeightMap) {
  TemporaryDirectory dir;
  write_sharded_model(dir, R"({"metadata": {}})");
  expect_error([&] { TensorStore::open_directory(dir.path()); }, ErrorCode::format,
               {"model.safetensors.index.json", "weight_map"});
}

TEST(TensorStore, IndexNamingShardOutsideTheDirectory) {
  TemporaryDirectory dir;
  write_sharded_model(dir, R"({"weight_map": {"encoder.layer.0.weight": "../elsewhere.safetensors"}})");
  expect_error([&] { TensorStore::open_directory(dir.path()); }, ErrorCode::format,
               {"model.safetensors.index.json", "'../elsewhere.safetensors'", "'encoder.layer.0.weight'"});
}

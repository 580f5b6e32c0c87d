#pragma once
// Helpers shared by the unit tests: a per-test temporary directory, whole-file
// byte I/O, byte views of values, the check that a call throws skim::Error
// with a given code and message, and the block layout of stories260K.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "skim/error.hpp"
#include "temp_dir.hpp"

namespace skim::testing {

// The running test as "Suite.Name" (parameterised names included), with every
// character other than letters, digits, '.', '_' and '-' made '_'; "test"
// outside a test.
inline std::string current_test_label() {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  if (test == nullptr) return "test";
  std::string label = std::string(test->test_suite_name()) + "." + test->name();
  for (char& c : label) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-';
    if (!safe) c = '_';
  }
  return label;
}

// A fresh directory named after the running test, removed with its contents
// when this goes out of scope.
class TemporaryDirectory {
 public:
  TemporaryDirectory() : path_(fresh_temp_dir(current_test_label())) {}
  ~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// The whole file (empty if it cannot be read).
inline std::vector<std::byte> read_file_bytes(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  if (!chars.empty()) std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

// Replaces the file with `bytes`; a failed write fails the test.
inline void write_file_bytes(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(stream.good()) << path;
}

// A view of the bytes of `values`, valid while `values` is.
template <typename T>
std::span<const std::byte> bytes_of(const std::vector<T>& values) {
  return std::as_bytes(std::span<const T>(values));
}

// Appends the in-memory (little-endian on the hosts we run on) bytes of `value`.
template <typename T>
void append_bytes(std::vector<std::byte>& bytes, const T& value) {
  const auto* raw = reinterpret_cast<const std::byte*>(&value);
  bytes.insert(bytes.end(), raw, raw + sizeof(T));
}

inline std::uint32_t bits_of(float value) { return std::bit_cast<std::uint32_t>(value); }

// n values drawn from N(0, scale²), reproducibly from `seed`.
inline std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Runs `action`, expecting skim::Error with `code` and every one of `needles`
// in its message; anything else fails the test (another exception escapes).
inline void expect_error(const std::function<void()>& action, ErrorCode code,
                         const std::vector<std::string>& needles) {
  try {
    action();
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), code) << "code " << to_string(error.code()) << ": " << error.what();
    for (const std::string& needle : needles) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos)
          << "message lacks \"" << needle << "\": " << error.what();
    }
    return;
  }
  std::string expected;
  for (const std::string& needle : needles) expected += (expected.empty() ? " mentioning \"" : ", \"") + needle + "\"";
  ADD_FAILURE() << "no skim::Error thrown (expected " << to_string(code) << expected << ")";
}

// The per-block tensors of stories260K (tests/data/models/stories260K: 5
// blocks, dim 64, 4 KV heads of 8, hidden 172) with their row-major shapes,
// as its GGUF file and its llama2.c checkpoint both name them.
inline std::vector<std::pair<std::string, std::vector<std::int64_t>>> stories260k_block_tensors() {
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> tensors;
  for (int layer = 0; layer < 5; ++layer) {
    const std::string prefix = "blk." + std::to_string(layer) + ".";
    tensors.push_back({prefix + "attn_norm.weight", {64}});
    tensors.push_back({prefix + "attn_q.weight", {64, 64}});
    tensors.push_back({prefix + "attn_k.weight", {32, 64}});
    tensors.push_back({prefix + "attn_v.weight", {32, 64}});
    tensors.push_back({prefix + "attn_output.weight", {64, 64}});
    tensors.push_back({prefix + "ffn_norm.weight", {64}});
    tensors.push_back({prefix + "ffn_gate.weight", {172, 64}});
    tensors.push_back({prefix + "ffn_down.weight", {64, 172}});
    tensors.push_back({prefix + "ffn_up.weight", {172, 64}});
  }
  return tensors;
}

}  // namespace skim::testing

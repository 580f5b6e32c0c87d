#pragma once
// 64-bit FNV-1a: the n-gram fingerprints and the proposers' version strings.
// Not cryptographic; a version names the weights a certificate was computed
// for, it does not defend them against a forger.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace skim::propose {

inline constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ull;
inline constexpr std::uint64_t kFnvPrime = 0x100000001b3ull;

// Named apart from fnv1a(string_view) so fnv1a(" ", hash) cannot pick this one.
inline std::uint64_t fnv1a_bytes(const void* data, std::size_t size, std::uint64_t hash = kFnvOffset) noexcept {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * kFnvPrime;
  return hash;
}

inline std::uint64_t fnv1a(std::string_view text, std::uint64_t hash = kFnvOffset) noexcept {
  return fnv1a_bytes(text.data(), text.size(), hash);
}

inline std::string hex64(std::uint64_t value) {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(value));
  return buffer;
}

}  // namespace skim::propose

#pragma once
// A fast 64-bit content hash (not cryptographic): it ties skim's package
// files to the exact model bytes and calibration data they were made from.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace skim::format {

// The value depends on how the bytes were split into update calls (each call
// ends a block), so hash the same way every time.
class ContentHash {
 public:
  ContentHash& update(std::span<const std::byte> bytes) noexcept;
  ContentHash& update(std::string_view text) noexcept;
  // Hashes a string with its length, so ("ab","c") and ("a","bc") differ.
  ContentHash& update_field(std::string_view text) noexcept;
  // The whole file (mapped); throws skim::Error(io) naming it.
  ContentHash& update_file(const std::filesystem::path& file);
  std::uint64_t value() const noexcept;
  std::string hex() const;  // 16 lowercase hex digits

 private:
  std::uint64_t lanes_[4] = {0x243f6a8885a308d3ull, 0x13198a2e03707344ull, 0xa4093822299f31d0ull, 0x082efa98ec4e6c89ull};
  std::uint64_t length_ = 0;
};

}  // namespace skim::format

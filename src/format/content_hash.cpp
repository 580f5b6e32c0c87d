#include "format/content_hash.hpp"

#include <bit>
#include <cstring>

#include "format/mapped_file.hpp"

namespace skim::format {

namespace {

constexpr std::uint64_t k_multiplier = 0x9e3779b97f4a7c15ull;

std::uint64_t mix(std::uint64_t x) noexcept {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

ContentHash& ContentHash::update(std::span<const std::byte> bytes) noexcept {
  // Four independent lanes over 32-byte blocks keep the multiplier pipeline
  // busy (several GB/s), so hashing a model at open costs little.
  const std::byte* p = bytes.data();
  std::size_t n = bytes.size();
  while (n >= 32) {
    for (int lane = 0; lane < 4; ++lane) {
      std::uint64_t w;
      std::memcpy(&w, p + 8 * lane, 8);
      lanes_[lane] = std::rotl((lanes_[lane] ^ w) * k_multiplier, 29);
    }
    p += 32;
    n -= 32;
  }
  std::uint64_t tail[4] = {0, 0, 0, 0};
  std::memcpy(tail, p, n);
  for (int lane = 0; lane < 4; ++lane) lanes_[lane] = std::rotl((lanes_[lane] ^ tail[lane] ^ n) * k_multiplier, 29);
  length_ += bytes.size();
  return *this;
}

ContentHash& ContentHash::update(std::string_view text) noexcept {
  return update(std::as_bytes(std::span(text.data(), text.size())));
}

ContentHash& ContentHash::update_field(std::string_view text) noexcept {
  const std::uint64_t size = text.size();
  update(std::as_bytes(std::span(&size, 1)));
  return update(text);
}

ContentHash& ContentHash::update_file(const std::filesystem::path& file) {
  MappedFile mapped(file);
  return update(mapped.bytes());
}

std::uint64_t ContentHash::value() const noexcept {
  std::uint64_t h = mix(length_);
  for (std::uint64_t lane : lanes_) h = mix(h ^ lane) * k_multiplier;
  return mix(h);
}

std::string ContentHash::hex() const {
  static const char digits[] = "0123456789abcdef";
  std::string out(16, '0');
  std::uint64_t v = value();
  for (int i = 15; i >= 0; --i, v >>= 4) out[i] = digits[v & 15];
  return out;
}

}  // namespace skim::format

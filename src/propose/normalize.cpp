#include "propose/normalize.hpp"

#include "text/unicode.hpp"

namespace skim::propose {

std::string normalize_for_match(std::string_view text) {
  const std::u32string codes = text::decode_utf8(text);  // throws Error(text) with the offset
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char32_t c : codes) {
    if (text::is_whitespace(c)) {
      pending_space = !out.empty();  // leading whitespace is dropped
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    char32_t lower[3];
    const int n = text::to_lowercase(c, lower);
    for (int k = 0; k < n; ++k) text::append_utf8(lower[k], out);
  }
  return out;
}

bool is_word_char(char32_t c) noexcept { return !text::is_whitespace(c) && !text::is_punctuation(c); }

std::vector<std::string_view> split_words(std::string_view normalized) {
  std::vector<std::string_view> words;
  const auto* data = reinterpret_cast<const unsigned char*>(normalized.data());
  const std::size_t size = normalized.size();
  std::size_t start = std::string_view::npos;
  std::size_t i = 0;
  while (i < size) {
    // The input came from normalize_for_match, so it is valid UTF-8; decode
    // one code point without re-validating.
    const unsigned char lead = data[i];
    const std::size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    char32_t c = length == 1 ? lead : length == 2 ? (lead & 0x1F) : length == 3 ? (lead & 0x0F) : (lead & 0x07);
    for (std::size_t k = 1; k < length && i + k < size; ++k) c = (c << 6) | (data[i + k] & 0x3F);
    if (is_word_char(c)) {
      if (start == std::string_view::npos) start = i;
    } else if (start != std::string_view::npos) {
      words.push_back(normalized.substr(start, i - start));
      start = std::string_view::npos;
    }
    i += length;
  }
  if (start != std::string_view::npos) words.push_back(normalized.substr(start));
  return words;
}

}  // namespace skim::propose

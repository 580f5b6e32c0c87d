#include "text/unicode.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iterator>

#include "skim/error.hpp"

namespace skim::text {
namespace {

// Row types of the generated tables.
struct CodeRange {
  char32_t first, last;
};
struct CombiningClassRange {
  char32_t first, last;
  std::uint8_t ccc;
};
struct Decomposition {
  char32_t code;
  std::uint16_t offset;  // into kDecompositionPool
  std::uint8_t length;
};
struct LowercaseRun {
  char32_t first, last;
  std::int32_t delta;
  std::uint8_t stride;
};
struct MultiLowercase {
  char32_t code;
  char32_t lower[3];  // zero-padded
};

#include "text/unicode_tables.inc"

template <std::size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t c) noexcept {
  if (c < table[0].first || c > table[N - 1].last) return false;
  // First range whose last >= c; the ranges are sorted and disjoint.
  auto it = std::lower_bound(std::begin(table), std::end(table), c,
                             [](const CodeRange& r, char32_t v) { return r.last < v; });
  return it != std::end(table) && it->first <= c;
}

// Hangul syllables decompose algorithmically (Unicode §3.12).
constexpr char32_t kHangulBase = 0xAC00, kLeadBase = 0x1100, kVowelBase = 0x1161,
                   kTrailBase = 0x11A7;
constexpr int kVowelCount = 21, kTrailCount = 28, kSyllableCount = 11172;

std::string hex_byte(unsigned char b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", b);
  return buf;
}

std::string code_point_name(char32_t c) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(c));
  return buf;
}

[[noreturn]] void throw_utf8(std::size_t offset, const std::string& what) {
  throw Error(ErrorCode::text,
              "invalid UTF-8 at byte " + std::to_string(offset) + ": " + what);
}

}  // namespace

const char* unicode_version() noexcept { return kUnicodeVersion; }

void decode_utf8(std::string_view bytes, std::u32string& out) {
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t size = bytes.size();
  std::size_t i = 0;
  while (i < size) {
    const unsigned char lead = data[i];
    if (lead < 0x80) {
      out.push_back(lead);
      ++i;
      continue;
    }
    int length;
    char32_t code;
    if (lead < 0xC0) {
      throw_utf8(i, "unexpected continuation byte " + hex_byte(lead));
    } else if (lead < 0xE0) {
      length = 2, code = lead & 0x1F;
    } else if (lead < 0xF0) {
      length = 3, code = lead & 0x0F;
    } else if (lead < 0xF8) {
      length = 4, code = lead & 0x07;
    } else {
      throw_utf8(i, "invalid lead byte " + hex_byte(lead));
    }
    for (int k = 1; k < length; ++k) {
      if (i + k >= size) {
        throw_utf8(i, "truncated " + std::to_string(length) + "-byte sequence at end of input");
      }
      const unsigned char next = data[i + k];
      if ((next & 0xC0) != 0x80) {
        throw_utf8(i, std::to_string(length) + "-byte sequence cut short by " + hex_byte(next) +
                          " at byte " + std::to_string(i + k));
      }
      code = (code << 6) | (next & 0x3F);
    }
    static constexpr char32_t kMinimum[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kMinimum[length]) {
      throw_utf8(i, "overlong " + std::to_string(length) + "-byte encoding of " +
                        code_point_name(code));
    }
    if (code >= 0xD800 && code <= 0xDFFF) {
      throw_utf8(i, "encoded surrogate " + code_point_name(code));
    }
    if (code > 0x10FFFF) {
      throw_utf8(i, "code point " + code_point_name(code) + " is above U+10FFFF");
    }
    out.push_back(code);
    i += length;
  }
}

std::u32string decode_utf8(std::string_view bytes) {
  std::u32string out;
  out.reserve(bytes.size());
  decode_utf8(bytes, out);
  return out;
}

void append_utf8(char32_t c, std::string& out) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string encode_utf8(std::u32string_view codes) {
  std::string out;
  out.reserve(codes.size());
  for (char32_t c : codes) append_utf8(c, out);
  return out;
}

bool is_whitespace(char32_t c) noexcept {
  if (c < 0x80) return c == ' ' || (c >= '\t' && c <= '\r');
  return in_ranges(kWhiteSpace, c);
}

bool is_control(char32_t c) noexcept {
  if (c < 0x80) return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F;
  return in_ranges(kControl, c);
}

bool is_punctuation(char32_t c) noexcept {
  if (c < 0x80) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  }
  return in_ranges(kPunctuation, c);
}

bool is_chinese_char(char32_t c) noexcept {
  // The ranges of tokenizers' BertNormalizer (0x2B920, not BERT's 0x2B820).
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool is_nonspacing_mark(char32_t c) noexcept {
  return c >= 0x300 && in_ranges(kNonspacingMark, c);
}

int combining_class(char32_t c) noexcept {
  if (c < kCombiningClass[0].first) return 0;
  auto it = std::lower_bound(
      std::begin(kCombiningClass), std::end(kCombiningClass), c,
      [](const CombiningClassRange& r, char32_t v) { return r.last < v; });
  return it != std::end(kCombiningClass) && it->first <= c ? it->ccc : 0;
}

int to_lowercase(char32_t c, char32_t out[3]) noexcept {
  if (c < 0x80) {
    out[0] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
    return 1;
  }
  for (const MultiLowercase& m : kMultiLowercase) {
    if (m.code == c) {
      int n = 0;
      while (n < 3 && m.lower[n] != 0) out[n] = m.lower[n], ++n;
      return n;
    }
  }
  // Last run starting at or before c.
  auto it = std::upper_bound(std::begin(kLowercase), std::end(kLowercase), c,
                             [](char32_t v, const LowercaseRun& r) { return v < r.first; });
  if (it != std::begin(kLowercase)) {
    const LowercaseRun& run = *std::prev(it);
    if (c <= run.last && (c - run.first) % run.stride == 0) {
      out[0] = static_cast<char32_t>(static_cast<std::int32_t>(c) + run.delta);
      return 1;
    }
  }
  out[0] = c;
  return 1;
}

void append_nfd(std::u32string_view codes, std::u32string& out) {
  const std::size_t begin = out.size();
  bool any_combining = false;
  for (char32_t c : codes) {
    if (c < 0xC0) {  // nothing below U+00C0 decomposes or combines
      out.push_back(c);
      continue;
    }
    if (c >= kHangulBase && c < kHangulBase + kSyllableCount) {
      const char32_t index = c - kHangulBase;
      out.push_back(kLeadBase + index / (kVowelCount * kTrailCount));
      out.push_back(kVowelBase + (index % (kVowelCount * kTrailCount)) / kTrailCount);
      if (index % kTrailCount != 0) out.push_back(kTrailBase + index % kTrailCount);
      continue;
    }
    auto it = std::lower_bound(std::begin(kDecomposition), std::end(kDecomposition), c,
                               [](const Decomposition& d, char32_t v) { return d.code < v; });
    if (it != std::end(kDecomposition) && it->code == c) {
      out.append(kDecompositionPool + it->offset, it->length);
    } else {
      out.push_back(c);
    }
    any_combining = true;
  }
  if (!any_combining) return;
  // Canonical ordering: a stable sort by combining class of each run of
  // non-starters. Runs are short, so insertion sort.
  for (std::size_t i = begin + 1; i < out.size(); ++i) {
    const char32_t c = out[i];
    const int ccc = combining_class(c);
    if (ccc == 0) continue;
    std::size_t j = i;
    while (j > begin) {
      const int before = combining_class(out[j - 1]);
      if (before <= ccc) break;
      out[j] = out[j - 1];
      --j;
    }
    out[j] = c;
  }
}

}  // namespace skim::text

#pragma once
// The one text key every proposer sees. The cache, the rules and the n-gram
// classifier must agree on it: a cache hit or a rule match on a key the others
// would have normalized differently is a silent disagreement.
#include <string>
#include <string_view>
#include <vector>

namespace skim::propose {

// Strict UTF-8 (invalid input is skim::Error(ErrorCode::text) naming the byte
// offset), full Unicode lowercase, every run of whitespace (text::is_whitespace)
// made one ' ', leading and trailing whitespace dropped. Nothing else: no
// punctuation stripping, accent folding or stemming, so "turn on the lights"
// and "turn off the lights", or "cancel" and "cancel?", stay different keys.
std::string normalize_for_match(std::string_view text);

// Words of a normalized text: maximal runs of code points that are neither
// whitespace nor punctuation (text::is_punctuation); punctuation is dropped,
// so "what's the time?" gives "what", "s", "the", "time". Views into `normalized`.
std::vector<std::string_view> split_words(std::string_view normalized);

// Whether a code point belongs to a word in the sense of split_words.
bool is_word_char(char32_t c) noexcept;

}  // namespace skim::propose

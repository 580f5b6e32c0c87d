#include "propose/rules.hpp"

#include <algorithm>

#include "propose/hash.hpp"
#include "propose/normalize.hpp"
#include "skim/error.hpp"

namespace skim::propose {
namespace {

[[noreturn]] void fail(std::size_t index, const std::string& what) {
  throw Error(ErrorCode::format, "rule " + std::to_string(index) + ": " + what);
}

std::regex::flag_type regex_flags() {
  auto flags = std::regex::ECMAScript | std::regex::icase | std::regex::optimize;
#if defined(__GLIBCXX__)
  // libstdc++'s breadth-first executor: memory and stack bounded by the
  // pattern, not the text (its default depth-first one recurses once per
  // character and overflows an 8 MB stack near 10 000 characters), and no
  // exponential backtracking on patterns like (a+)+b. It has no
  // back-references; a pattern using them is rejected at load time.
  flags |= std::regex_constants::__polynomial;
#endif
  return flags;
}

// The code point that ends just before byte `end` / starts at byte `begin`
// of valid UTF-8.
char32_t code_point_before(std::string_view text, std::size_t end) {
  std::size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  const auto* data = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t length = end - start;
  char32_t c = length == 1 ? data[start] : length == 2 ? (data[start] & 0x1F) : length == 3 ? (data[start] & 0x0F)
                                                                                            : (data[start] & 0x07);
  for (std::size_t k = 1; k < length; ++k) c = (c << 6) | (data[start + k] & 0x3F);
  return c;
}

char32_t code_point_at(std::string_view text, std::size_t begin) {
  const auto* data = reinterpret_cast<const unsigned char*>(text.data());
  const unsigned char lead = data[begin];
  const std::size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  char32_t c = length == 1 ? lead : length == 2 ? (lead & 0x1F) : length == 3 ? (lead & 0x0F) : (lead & 0x07);
  for (std::size_t k = 1; k < length && begin + k < text.size(); ++k) c = (c << 6) | (data[begin + k] & 0x3F);
  return c;
}

}  // namespace

bool contains_whole_words(std::string_view text, std::string_view phrase) {
  if (phrase.empty() || phrase.size() > text.size()) return false;
  // \b semantics at each end: only a phrase edge that is a word character
  // needs a non-word neighbour ("c++" matches "c++ code", "$5" matches "pay $5").
  const bool word_start = is_word_char(code_point_at(phrase, 0));
  const bool word_end = is_word_char(code_point_before(phrase, phrase.size()));
  for (std::size_t at = text.find(phrase); at != std::string_view::npos; at = text.find(phrase, at + 1)) {
    const std::size_t end = at + phrase.size();
    if (word_start && at > 0 && is_word_char(code_point_before(text, at))) continue;
    if (word_end && end < text.size() && is_word_char(code_point_at(text, end))) continue;
    return true;
  }
  return false;
}

RuleSet RuleSet::from_json(const nlohmann::json& rules, std::span<const std::string> labels) {
  if (!rules.is_array()) {
    throw Error(ErrorCode::format, std::string("rules: expected a JSON array of rules, got ") + rules.type_name());
  }
  RuleSet set;
  for (std::size_t index = 0; index < rules.size(); ++index) {
    const nlohmann::json& entry = rules[index];
    if (!entry.is_object()) fail(index, std::string("expected an object, got ") + entry.type_name());
    for (const auto& [key, value] : entry.items()) {
      if (key != "label" && key != "regex" && key != "keywords") {
        fail(index, "unknown key \"" + key + "\" (a rule has \"label\" and \"regex\" or \"keywords\")");
      }
    }
    Rule rule;
    const auto label = entry.find("label");
    if (label == entry.end()) fail(index, "missing \"label\"");
    if (!label->is_string()) fail(index, std::string("\"label\" must be a string, got ") + label->type_name());
    rule.label = label->get<std::string>();
    const auto known = std::find(labels.begin(), labels.end(), rule.label);
    if (known == labels.end()) {
      fail(index, "label \"" + rule.label + "\" is not one of the model's " + std::to_string(labels.size()) +
                      " labels");
    }
    rule.label_id = static_cast<int>(known - labels.begin());

    const auto regex = entry.find("regex");
    const auto keywords = entry.find("keywords");
    if ((regex == entry.end()) == (keywords == entry.end())) {
      fail(index, "needs exactly one of \"regex\" and \"keywords\"");
    }
    if (regex != entry.end()) {
      if (!regex->is_string()) fail(index, std::string("\"regex\" must be a string, got ") + regex->type_name());
      const std::string text = regex->get<std::string>();
      if (text.empty()) fail(index, "empty regex (it would match every input)");
      try {
        rule.regex = std::regex(text, regex_flags());
      } catch (const std::regex_error& error) {
        fail(index, "invalid regex \"" + text + "\": " + error.what());
      }
      rule.regex_text = text;
    } else {
      if (!keywords->is_array()) {
        fail(index, std::string("\"keywords\" must be an array of strings, got ") + keywords->type_name());
      }
      if (keywords->empty()) fail(index, "empty \"keywords\" list");
      for (std::size_t k = 0; k < keywords->size(); ++k) {
        const nlohmann::json& keyword = (*keywords)[k];
        if (!keyword.is_string()) {
          fail(index, "keyword " + std::to_string(k) + " must be a string, got " + keyword.type_name());
        }
        std::string normalized;
        try {
          normalized = normalize_for_match(keyword.get_ref<const std::string&>());
        } catch (const Error& error) {
          fail(index, "keyword " + std::to_string(k) + ": " + error.what());
        }
        if (normalized.empty()) fail(index, "keyword " + std::to_string(k) + " is empty after normalization");
        rule.keywords_as_given.push_back(keyword.get<std::string>());
        rule.keywords.push_back(std::move(normalized));
      }
    }
    set.rules_.push_back(std::move(rule));
  }
  return set;
}

RuleSet RuleSet::parse(std::string_view json_text, std::span<const std::string> labels, std::string_view source) {
  nlohmann::json rules;
  try {
    rules = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& error) {
    throw Error(ErrorCode::format, std::string(source) + ": invalid JSON: " + error.what());
  }
  try {
    return from_json(rules, labels);
  } catch (const Error& error) {
    throw Error(error.code(), std::string(source) + ": " + error.what());
  }
}

bool RuleSet::keyword_matches(const Rule& rule, std::string_view normalized) const {
  return std::any_of(rule.keywords.begin(), rule.keywords.end(),
                     [&](const std::string& keyword) { return contains_whole_words(normalized, keyword); });
}

std::optional<int> RuleSet::match(std::string_view normalized) const {
  if (normalized.size() > kMaxTextBytes) return std::nullopt;
  for (const Rule& rule : rules_) {
    bool matched = false;
    if (rule.regex_text) {
      try {
        matched = std::regex_search(normalized.begin(), normalized.end(), rule.regex);
      } catch (const std::regex_error&) {
        return std::nullopt;  // error_complexity / error_stack: fail closed
      }
    } else {
      matched = keyword_matches(rule, normalized);
    }
    if (matched) return rule.label_id;
  }
  return std::nullopt;
}

nlohmann::json RuleSet::to_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const Rule& rule : rules_) {
    nlohmann::json entry = {{"label", rule.label}};
    if (rule.regex_text) {
      entry["regex"] = *rule.regex_text;
    } else {
      entry["keywords"] = rule.keywords_as_given;
    }
    out.push_back(std::move(entry));
  }
  return out;
}

std::string RuleSet::version() const { return "rules-" + hex64(fnv1a(to_json().dump())); }

}  // namespace skim::propose

#pragma once
// Rules a user knows for certain ("anything mentioning bitcoin mining is out
// of scope"), shipped in the model package as JSON:
//   [{"label": "balance", "regex": "\\bmy balance\\b"},
//    {"label": "oos", "keywords": ["bitcoin mining", "crypto"]}]
// They see the same normalize_for_match key as the cache and the classifier.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace skim::propose {

class RuleSet {
 public:
  // Texts longer than this (in bytes, normalized) match no rule and go on to
  // the next proposer: std::regex is backtracking or, in the linear-memory
  // mode used here, quadratic in the text length, and long inputs are not
  // where rules are needed.
  static constexpr std::size_t kMaxTextBytes = 1024;

  RuleSet() = default;

  // `rules` is a JSON array; each rule an object with "label" (one of
  // `labels`, the model's id2label) and exactly one of "regex" (ECMAScript,
  // case-insensitive, searched anywhere in the normalized text; write
  // non-ASCII letters in lowercase, as std::regex folds ASCII case only) or
  // "keywords" (a non-empty array of words or phrases, each normalized and
  // matched as whole words: "cart" does not match "cartoon"). Anything else,
  // including an unknown key, is skim::Error(format) naming the rule's index
  // and what is wrong ("rule 2: invalid regex \"(\": ...").
  static RuleSet from_json(const nlohmann::json& rules, std::span<const std::string> labels);
  // The same from the text of a rules file; `source` names it in messages.
  static RuleSet parse(std::string_view json_text, std::span<const std::string> labels,
                       std::string_view source = "rules");

  // The label id of the first rule that matches `normalized`
  // (normalize_for_match's output), or nothing. A rule that cannot be
  // evaluated (std::regex gives up) ends the search with nothing: a later
  // rule must not answer for an earlier one.
  std::optional<int> match(std::string_view normalized) const;

  // The rules as given (labels by name, keywords as written): from_json of
  // this with the same labels gives an equal RuleSet.
  nlohmann::json to_json() const;
  // A hash of to_json(), hex: a certificate is tied to it, since new rules
  // void a certificate.
  std::string version() const;

  std::size_t size() const noexcept { return rules_.size(); }
  bool empty() const noexcept { return rules_.empty(); }

 private:
  struct Rule {
    int label_id = -1;
    std::string label;
    std::optional<std::string> regex_text;
    std::regex regex;
    std::vector<std::string> keywords_as_given;
    std::vector<std::string> keywords;  // normalized
  };
  bool keyword_matches(const Rule& rule, std::string_view normalized) const;

  std::vector<Rule> rules_;
};

// Whether `phrase` occurs in `text` with a non-word code point (or the text's
// end) on each side; both are normalize_for_match output.
bool contains_whole_words(std::string_view text, std::string_view phrase);

}  // namespace skim::propose

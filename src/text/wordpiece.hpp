#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace skim::text {

// Hugging Face BertNormalizer settings. strip_accents unset follows lowercase,
// as in both transformers' BertTokenizer and tokenizers' BertNormalizer.
struct BertNormalizerOptions {
  bool clean_text = true;            // drop control chars and U+FFFD, map whitespace to ' '
  bool handle_chinese_chars = true;  // put spaces around CJK ideographs
  bool lowercase = true;
  int strip_accents = -1;  // -1: same as lowercase; 0: keep; 1: strip (NFD, drop Mn)
};

struct Encoding {
  std::vector<std::int32_t> ids;  // [CLS] pieces... [SEP]
  bool truncated = false;         // pieces were dropped to fit max_length
};

// BERT's tokenizer: normalizer, whitespace + punctuation pre-tokenizer,
// greedy longest-match-first WordPiece with "##" continuations, [UNK] for a
// word with no segmentation or longer than max_input_chars_per_word.
// Matches Hugging Face tokenizers id for id, including its "added tokens":
// special tokens typed in the text ("[MASK]", "[SEP]", ...) stay whole.
class WordPieceTokenizer {
 public:
  // vocab.txt: one token per line, line number = id.
  static WordPieceTokenizer from_vocab_txt(const std::filesystem::path& path,
                                           BertNormalizerOptions options = {});
  // tokenizer.json with a BertNormalizer (or none) and a WordPiece model.
  static WordPieceTokenizer from_tokenizer_json(const std::filesystem::path& path);

  // Throws skim::Error(text) on invalid UTF-8, naming the byte offset.
  std::vector<std::string> tokenize(std::string_view text) const;  // pieces, no specials
  // [CLS] + pieces + [SEP], truncated to max_length (≥ 2) ids.
  Encoding encode(std::string_view text, std::size_t max_length) const;

  std::int32_t token_to_id(std::string_view token) const;  // -1 if absent
  const std::string& id_to_token(std::int32_t id) const;
  std::size_t vocab_size() const noexcept { return tokens_.size(); }
  std::int32_t cls_id() const noexcept { return cls_id_; }
  std::int32_t sep_id() const noexcept { return sep_id_; }
  std::int32_t pad_id() const noexcept { return pad_id_; }
  std::int32_t unk_id() const noexcept { return unk_id_; }

 private:
  // Hashes std::string and std::string_view alike, so lookups of a piece
  // need no temporary std::string.
  struct TokenHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  // A token matched in the text before WordPiece runs (Hugging Face's
  // "added tokens": [CLS], [SEP], [MASK], ... typed by the user).
  struct AddedToken {
    std::u32string content;  // normalized already when `normalized`
    std::int32_t id = -1;
    bool lstrip = false, rstrip = false;  // also swallow whitespace on that side
  };

  WordPieceTokenizer() = default;
  void finish_setup(const std::string& source);  // resolves special ids, checks them
  void add_added_token(const std::string& content, std::int32_t id, bool normalized,
                       bool lstrip, bool rstrip);
  // Appends the ids of text's pieces (no [CLS]/[SEP]).
  void encode_pieces(std::string_view text, std::vector<std::int32_t>& ids) const;
  void encode_normalized(std::u32string_view normalized, std::vector<std::int32_t>& ids) const;
  void encode_word(std::u32string_view word, std::vector<std::int32_t>& ids) const;
  bool strip_accents() const noexcept {
    return options_.strip_accents < 0 ? options_.lowercase : options_.strip_accents != 0;
  }

  std::vector<std::string> tokens_;  // id → token
  std::unordered_map<std::string, std::int32_t, TokenHash, std::equal_to<>> ids_;
  BertNormalizerOptions options_;
  std::size_t max_input_chars_per_word_ = 100;
  std::string continuing_prefix_ = "##";
  std::string unk_token_ = "[UNK]", cls_token_ = "[CLS]", sep_token_ = "[SEP]",
              pad_token_ = "[PAD]";
  std::vector<AddedToken> raw_added_;         // matched in the original text
  std::vector<AddedToken> normalized_added_;  // matched in the normalized text
  std::int32_t cls_id_ = -1, sep_id_ = -1, pad_id_ = -1, unk_id_ = -1;
};

}  // namespace skim::text

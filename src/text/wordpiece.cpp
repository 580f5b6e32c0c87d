#include "text/wordpiece.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "skim/error.hpp"
#include "text/unicode.hpp"

// The pipeline follows Hugging Face tokenizers (Rust) step for step, since
// its ids are the reference: added-token split on the raw text → BertNormalizer
// (clean_text, handle_chinese_chars, strip_accents, lowercase, in that order)
// → added-token split on the normalized text → BertPreTokenizer (whitespace,
// then punctuation isolated) → WordPiece.

namespace skim::text {
namespace {

using json = nlohmann::json;

// Per-thread working buffers, so that encoding reuses their capacity instead
// of allocating for each call.
struct Scratch {
  std::u32string codes;       // decoded input
  std::u32string stage;       // normalizer intermediate
  std::u32string normalized;  // normalizer output
  std::string word;           // UTF-8 of the word WordPiece is cutting
};

Scratch& scratch() {
  thread_local Scratch buffers;
  return buffers;
}

// Keeps one very long input from pinning its memory in the thread forever.
void trim_scratch(Scratch& s) {
  constexpr std::size_t kKeep = std::size_t{1} << 20;
  if (s.codes.capacity() > kKeep) std::u32string().swap(s.codes);
  if (s.stage.capacity() > kKeep) std::u32string().swap(s.stage);
  if (s.normalized.capacity() > kKeep) std::u32string().swap(s.normalized);
  if (s.word.capacity() > kKeep) std::string().swap(s.word);
}

// BertNormalizer on one segment of code points; `stage` is scratch.
void normalize(std::u32string_view in, const BertNormalizerOptions& options, bool strip_accents,
               std::u32string& stage, std::u32string& out) {
  std::u32string& first = strip_accents ? stage : out;
  first.clear();
  for (char32_t c : in) {
    if (options.clean_text) {
      if (c == 0 || c == 0xFFFD || is_control(c)) continue;
      if (is_whitespace(c)) c = U' ';
    }
    if (options.handle_chinese_chars && c >= 0x3400 && is_chinese_char(c)) {
      first.push_back(U' ');
      first.push_back(c);
      first.push_back(U' ');
    } else {
      first.push_back(c);
    }
  }
  if (strip_accents) {
    out.clear();
    append_nfd(stage, out);
    std::erase_if(out, [](char32_t c) { return c >= 0x300 && is_nonspacing_mark(c); });
  }
  if (options.lowercase) {
    char32_t lower[3];
    for (std::size_t i = 0; i < out.size(); ++i) {
      const int n = to_lowercase(out[i], lower);
      if (n == 1) {
        out[i] = lower[0];
      } else {  // only U+0130 today
        out.replace(i, 1, lower, n);
        i += n - 1;
      }
    }
  }
}

std::string read_file(const std::filesystem::path& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw Error(ErrorCode::io,
                std::string("cannot read ") + what + " '" + path.string() + "': it is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorCode::io, std::string("cannot open ") + what + " '" + path.string() + "'");
  }
  std::string content{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) {
    throw Error(ErrorCode::io, std::string("cannot read ") + what + " '" + path.string() + "'");
  }
  return content;
}

// Splits `text` at the added tokens it contains, leftmost-longest like the
// Aho-Corasick matcher of tokenizers: each token's id goes to `ids`, each
// stretch between tokens to on_text.
template <class OnText>
void split_added(std::u32string_view text, const auto& tokens, std::vector<std::int32_t>& ids,
                 OnText&& on_text) {
  if (tokens.empty()) {
    if (!text.empty()) on_text(text);
    return;
  }
  std::size_t done = 0;  // text before this is consumed
  std::size_t i = 0;
  while (i < text.size()) {
    const decltype(&tokens[0]) best = [&] {
      decltype(&tokens[0]) found = nullptr;
      for (const auto& token : tokens) {
        if (token.content[0] == text[i] &&
            (found == nullptr || token.content.size() > found->content.size()) &&
            text.substr(i).starts_with(token.content)) {
          found = &token;
        }
      }
      return found;
    }();
    if (best == nullptr) {
      ++i;
      continue;
    }
    std::size_t start = i, stop = i + best->content.size();
    if (best->lstrip) {
      while (start > done && is_whitespace(text[start - 1])) --start;
    }
    if (best->rstrip) {
      while (stop < text.size() && is_whitespace(text[stop])) ++stop;
    }
    if (done < start) on_text(text.substr(done, start - done));
    ids.push_back(best->id);
    done = i = stop;
  }
  if (done < text.size()) on_text(text.substr(done));
}

// Field access with errors that name the file and the JSON path.
struct JsonContext {
  const std::filesystem::path& path;

  [[noreturn]] void fail(ErrorCode code, const std::string& field, const std::string& what) const {
    throw Error(code, "tokenizer file '" + path.string() + "': " + field + " " + what);
  }
  const json& member(const json& object, const char* key, const std::string& field) const {
    auto it = object.find(key);
    if (it == object.end()) fail(ErrorCode::format, field, "is missing");
    return *it;
  }
  std::string string_or(const json& object, const char* key, const std::string& field,
                        std::string fallback) const {
    auto it = object.find(key);
    if (it == object.end() || it->is_null()) return fallback;
    if (!it->is_string()) fail(ErrorCode::format, field, "is not a string");
    return it->get<std::string>();
  }
  bool bool_or(const json& object, const char* key, const std::string& field, bool fallback) const {
    auto it = object.find(key);
    if (it == object.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(ErrorCode::format, field, "is not a boolean");
    return it->get<bool>();
  }
};

std::string type_of(const JsonContext& ctx, const json& object, const std::string& field) {
  if (!object.is_object()) ctx.fail(ErrorCode::format, field, "is not an object");
  const json& type = ctx.member(object, "type", field + ".type");
  if (!type.is_string()) ctx.fail(ErrorCode::format, field + ".type", "is not a string");
  return type.get<std::string>();
}

}  // namespace

void WordPieceTokenizer::add_added_token(const std::string& content, std::int32_t id,
                                         bool normalized, bool lstrip, bool rstrip) {
  AddedToken token;
  token.id = id;
  token.lstrip = lstrip;
  token.rstrip = rstrip;
  const std::u32string codes = decode_utf8(content);
  if (normalized) {
    std::u32string stage;
    normalize(codes, options_, strip_accents(), stage, token.content);
  } else {
    token.content = codes;
  }
  if (token.content.empty()) return;  // matches nothing, as in tokenizers
  (normalized ? normalized_added_ : raw_added_).push_back(std::move(token));
}

void WordPieceTokenizer::finish_setup(const std::string& source) {
  const auto resolve = [&](const std::string& token, const char* role) {
    const std::int32_t id = token_to_id(token);
    if (id < 0) {
      throw Error(ErrorCode::model, source + " has no " + role + " token '" + token + "'");
    }
    return id;
  };
  cls_id_ = resolve(cls_token_, "classifier");
  sep_id_ = resolve(sep_token_, "separator");
  unk_id_ = resolve(unk_token_, "unknown-word");
  pad_id_ = resolve(pad_token_, "padding");
  if (max_input_chars_per_word_ == 0) {
    throw Error(ErrorCode::model, source + ": max_input_chars_per_word is 0");
  }
}

WordPieceTokenizer WordPieceTokenizer::from_vocab_txt(const std::filesystem::path& path,
                                                      BertNormalizerOptions options) {
  const std::string content = read_file(path, "vocabulary file");
  const std::string source = "vocabulary file '" + path.string() + "'";
  if (content.empty()) throw Error(ErrorCode::model, source + " is empty");

  WordPieceTokenizer tokenizer;
  tokenizer.options_ = options;
  // One token per line, line number = id; like tokenizers' WordPiece::read_file,
  // a final newline adds no token and trailing whitespace (\r of CRLF) is dropped.
  std::size_t line_start = 0;
  while (line_start < content.size()) {
    std::size_t line_end = content.find('\n', line_start);
    if (line_end == std::string::npos) line_end = content.size();
    const std::string_view line(content.data() + line_start, line_end - line_start);
    std::u32string codes;
    try {
      decode_utf8(line, codes);
    } catch (const Error& e) {
      throw Error(ErrorCode::format, source + " line " +
                                         std::to_string(tokenizer.tokens_.size() + 1) + ": " +
                                         e.what());
    }
    while (!codes.empty() && is_whitespace(codes.back())) codes.pop_back();  // Rust's trim_end
    const auto id = static_cast<std::int32_t>(tokenizer.tokens_.size());
    std::string token = encode_utf8(codes);
    tokenizer.ids_.insert_or_assign(token, id);  // a repeated token keeps its last id
    tokenizer.tokens_.push_back(std::move(token));
    line_start = line_end + 1;
  }
  // What tokenizers' BertWordPieceTokenizer registers as special tokens: typed
  // in the text, they are kept whole.
  for (const char* special : {"[UNK]", "[SEP]", "[CLS]", "[PAD]", "[MASK]"}) {
    const std::int32_t id = tokenizer.token_to_id(special);
    if (id >= 0) tokenizer.add_added_token(special, id, false, false, false);
  }
  tokenizer.finish_setup(source);
  return tokenizer;
}

WordPieceTokenizer WordPieceTokenizer::from_tokenizer_json(const std::filesystem::path& path) {
  const std::string file_text = read_file(path, "tokenizer file");
  const std::string source = "tokenizer file '" + path.string() + "'";
  const JsonContext ctx{path};
  json root;
  try {
    root = json::parse(file_text);
  } catch (const json::parse_error& e) {
    throw Error(ErrorCode::format, source + " is not valid JSON: " + e.what());
  }
  if (!root.is_object()) throw Error(ErrorCode::format, source + " is not a JSON object");

  WordPieceTokenizer tokenizer;

  const json& model = ctx.member(root, "model", "model");
  const std::string model_type = type_of(ctx, model, "model");
  if (model_type != "WordPiece") {
    ctx.fail(ErrorCode::unsupported, "model.type",
             "is '" + model_type + "'; only WordPiece is supported");
  }
  const json& vocab = ctx.member(model, "vocab", "model.vocab");
  if (!vocab.is_object() || vocab.empty()) {
    ctx.fail(ErrorCode::format, "model.vocab", "is not a non-empty object of token → id");
  }
  std::int64_t max_id = -1;
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 ||
        id.get<std::int64_t>() >= (std::int64_t{1} << 24)) {
      ctx.fail(ErrorCode::format, "model.vocab[\"" + token + "\"]", "is not an id in [0, 2^24)");
    }
    max_id = std::max(max_id, id.get<std::int64_t>());
  }
  tokenizer.tokens_.resize(static_cast<std::size_t>(max_id + 1));
  for (const auto& [token, id] : vocab.items()) {
    tokenizer.tokens_[id.get<std::size_t>()] = token;
    tokenizer.ids_.insert_or_assign(token, id.get<std::int32_t>());
  }
  tokenizer.unk_token_ = ctx.string_or(model, "unk_token", "model.unk_token", "[UNK]");
  tokenizer.continuing_prefix_ = ctx.string_or(model, "continuing_subword_prefix",
                                               "model.continuing_subword_prefix", "##");
  if (auto it = model.find("max_input_chars_per_word"); it != model.end() && !it->is_null()) {
    if (!it->is_number_unsigned()) {
      ctx.fail(ErrorCode::format, "model.max_input_chars_per_word", "is not a positive integer");
    }
    tokenizer.max_input_chars_per_word_ = it->get<std::size_t>();
  }

  // normalizer: BertNormalizer or none.
  const auto normalizer = root.find("normalizer");
  if (normalizer == root.end() || normalizer->is_null()) {
    tokenizer.options_ = {false, false, false, 0};
  } else {
    const std::string type = type_of(ctx, *normalizer, "normalizer");
    if (type != "BertNormalizer") {
      ctx.fail(ErrorCode::unsupported, "normalizer.type",
               "is '" + type + "'; only BertNormalizer is supported");
    }
    BertNormalizerOptions& options = tokenizer.options_;
    options.clean_text = ctx.bool_or(*normalizer, "clean_text", "normalizer.clean_text", true);
    options.handle_chinese_chars = ctx.bool_or(*normalizer, "handle_chinese_chars",
                                               "normalizer.handle_chinese_chars", true);
    options.lowercase = ctx.bool_or(*normalizer, "lowercase", "normalizer.lowercase", true);
    const auto strip = normalizer->find("strip_accents");
    if (strip == normalizer->end() || strip->is_null()) {
      options.strip_accents = -1;
    } else if (strip->is_boolean()) {
      options.strip_accents = strip->get<bool>() ? 1 : 0;
    } else {
      ctx.fail(ErrorCode::format, "normalizer.strip_accents", "is not a boolean or null");
    }
  }

  const auto pre_tokenizer = root.find("pre_tokenizer");
  if (pre_tokenizer == root.end() || pre_tokenizer->is_null()) {
    ctx.fail(ErrorCode::unsupported, "pre_tokenizer", "is null; only BertPreTokenizer is supported");
  }
  if (const std::string type = type_of(ctx, *pre_tokenizer, "pre_tokenizer");
      type != "BertPreTokenizer") {
    ctx.fail(ErrorCode::unsupported, "pre_tokenizer.type",
             "is '" + type + "'; only BertPreTokenizer is supported");
  }

  // post_processor: where [CLS] and [SEP] are named.
  const auto post = root.find("post_processor");
  if (post != root.end() && !post->is_null()) {
    const std::string type = type_of(ctx, *post, "post_processor");
    if (type == "BertProcessing") {
      for (const char* key : {"cls", "sep"}) {
        const std::string field = std::string("post_processor.") + key;
        const json& pair = ctx.member(*post, key, field);
        if (!pair.is_array() || pair.empty() || !pair[0].is_string()) {
          ctx.fail(ErrorCode::format, field, "is not a [token, id] pair");
        }
        (key[0] == 'c' ? tokenizer.cls_token_ : tokenizer.sep_token_) = pair[0].get<std::string>();
      }
    } else if (type == "TemplateProcessing") {
      // Only the BERT template is handled: [CLS-like] A [SEP-like].
      const json& single = ctx.member(*post, "single", "post_processor.single");
      const auto special_at = [&](std::size_t index) -> std::string {
        const json& piece = single[index];
        auto it = piece.find("SpecialToken");
        if (it == piece.end() || !it->contains("id") || !(*it)["id"].is_string()) {
          ctx.fail(ErrorCode::unsupported, "post_processor.single",
                   "is not the template [special] A [special]");
        }
        return (*it)["id"].get<std::string>();
      };
      if (!single.is_array() || single.size() != 3 || !single[1].contains("Sequence")) {
        ctx.fail(ErrorCode::unsupported, "post_processor.single",
                 "is not the template [special] A [special]");
      }
      tokenizer.cls_token_ = special_at(0);
      tokenizer.sep_token_ = special_at(2);
      // The template names special tokens; their ids come from its own table.
      if (auto specials = post->find("special_tokens"); specials != post->end()) {
        for (std::string* name : {&tokenizer.cls_token_, &tokenizer.sep_token_}) {
          auto entry = specials->find(*name);
          if (entry != specials->end() && entry->contains("tokens") &&
              (*entry)["tokens"].is_array() && (*entry)["tokens"].size() == 1 &&
              (*entry)["tokens"][0].is_string()) {
            *name = (*entry)["tokens"][0].get<std::string>();
          }
        }
      }
    } else {
      ctx.fail(ErrorCode::unsupported, "post_processor.type",
               "is '" + type + "'; only TemplateProcessing and BertProcessing are supported");
    }
  }

  if (auto padding = root.find("padding"); padding != root.end() && padding->is_object()) {
    tokenizer.pad_token_ = ctx.string_or(*padding, "pad_token", "padding.pad_token", "[PAD]");
  }

  // added_tokens: matched in the text before WordPiece.
  if (auto added = root.find("added_tokens"); added != root.end() && !added->is_null()) {
    if (!added->is_array()) ctx.fail(ErrorCode::format, "added_tokens", "is not an array");
    for (std::size_t i = 0; i < added->size(); ++i) {
      const json& entry = (*added)[i];
      const std::string field = "added_tokens[" + std::to_string(i) + "]";
      if (!entry.is_object()) ctx.fail(ErrorCode::format, field, "is not an object");
      const json& content = ctx.member(entry, "content", field + ".content");
      const json& id = ctx.member(entry, "id", field + ".id");
      if (!content.is_string()) ctx.fail(ErrorCode::format, field + ".content", "is not a string");
      if (!id.is_number_unsigned() || id.get<std::uint64_t>() >= (std::uint64_t{1} << 24)) {
        ctx.fail(ErrorCode::format, field + ".id", "is not an id in [0, 2^24)");
      }
      if (ctx.bool_or(entry, "single_word", field + ".single_word", false)) {
        ctx.fail(ErrorCode::unsupported, field + ".single_word", "is true; not supported");
      }
      const bool special = ctx.bool_or(entry, "special", field + ".special", false);
      const std::string text = content.get<std::string>();
      const auto token_id = id.get<std::int32_t>();
      if (static_cast<std::size_t>(token_id) >= tokenizer.tokens_.size()) {
        tokenizer.tokens_.resize(static_cast<std::size_t>(token_id) + 1);
      }
      if (tokenizer.tokens_[token_id].empty()) tokenizer.tokens_[token_id] = text;
      tokenizer.ids_.try_emplace(text, token_id);
      try {
        tokenizer.add_added_token(
            text, token_id, ctx.bool_or(entry, "normalized", field + ".normalized", !special),
            ctx.bool_or(entry, "lstrip", field + ".lstrip", false),
            ctx.bool_or(entry, "rstrip", field + ".rstrip", false));
      } catch (const Error& e) {
        ctx.fail(ErrorCode::format, field + ".content", std::string("is not UTF-8: ") + e.what());
      }
    }
  }
  tokenizer.finish_setup(source);
  return tokenizer;
}

void WordPieceTokenizer::encode_word(std::u32string_view word,
                                     std::vector<std::int32_t>& ids) const {
  if (word.size() > max_input_chars_per_word_) {
    ids.push_back(unk_id_);
    return;
  }
  // The word's UTF-8 sits after `head` bytes of room. A continuation piece
  // starting at byte `start` is looked up as prefix + word[start, end): the
  // prefix is written over the bytes just before `start`, which are consumed.
  std::string& buffer = scratch().word;
  const std::size_t head = continuing_prefix_.size();
  buffer.assign(head, '\0');
  for (char32_t c : word) append_utf8(c, buffer);
  const std::size_t total = buffer.size();
  const std::size_t first_piece = ids.size();
  std::size_t start = head;
  while (start < total) {
    std::size_t lookup_from = start;
    if (start > head) {
      lookup_from = start - head;
      std::memcpy(buffer.data() + lookup_from, continuing_prefix_.data(), head);
    }
    std::size_t end = total;
    std::int32_t piece = -1;
    while (end > start) {
      auto it = ids_.find(std::string_view(buffer.data() + lookup_from, end - lookup_from));
      if (it != ids_.end()) {
        piece = it->second;
        break;
      }
      do --end;  // back one whole UTF-8 character
      while (end > start && (static_cast<unsigned char>(buffer[end]) & 0xC0) == 0x80);
    }
    if (piece < 0) {  // no segmentation: the whole word is unknown
      ids.resize(first_piece);
      ids.push_back(unk_id_);
      return;
    }
    ids.push_back(piece);
    start = end;
  }
}

void WordPieceTokenizer::encode_normalized(std::u32string_view text,
                                           std::vector<std::int32_t>& ids) const {
  // BertPreTokenizer: whitespace separates words and is dropped; each
  // punctuation character is a word of its own.
  std::size_t word_start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    const bool space = is_whitespace(c);
    if (!space && !is_punctuation(c)) continue;
    if (word_start < i) encode_word(text.substr(word_start, i - word_start), ids);
    if (!space) encode_word(text.substr(i, 1), ids);
    word_start = i + 1;
  }
  if (word_start < text.size()) encode_word(text.substr(word_start), ids);
}

void WordPieceTokenizer::encode_pieces(std::string_view text,
                                       std::vector<std::int32_t>& ids) const {
  Scratch& s = scratch();
  s.codes.clear();
  decode_utf8(text, s.codes);
  const bool strip = strip_accents();
  split_added(s.codes, raw_added_, ids, [&](std::u32string_view segment) {
    normalize(segment, options_, strip, s.stage, s.normalized);
    split_added(s.normalized, normalized_added_, ids,
                [&](std::u32string_view piece) { encode_normalized(piece, ids); });
  });
  trim_scratch(s);
}

std::vector<std::string> WordPieceTokenizer::tokenize(std::string_view text) const {
  std::vector<std::int32_t> ids;
  encode_pieces(text, ids);
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  for (std::int32_t id : ids) pieces.push_back(id_to_token(id));
  return pieces;
}

Encoding WordPieceTokenizer::encode(std::string_view text, std::size_t max_length) const {
  if (max_length < 2) {
    throw Error(ErrorCode::invalid_argument,
                "max_length " + std::to_string(max_length) + " leaves no room for [CLS] and [SEP]");
  }
  Encoding encoding;
  encoding.ids.reserve(std::min<std::size_t>(max_length, text.size() + 2));
  encoding.ids.push_back(cls_id_);
  encode_pieces(text, encoding.ids);
  if (encoding.ids.size() + 1 > max_length) {
    encoding.ids.resize(max_length - 1);
    encoding.truncated = true;
  }
  encoding.ids.push_back(sep_id_);
  return encoding;
}

std::int32_t WordPieceTokenizer::token_to_id(std::string_view token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? -1 : it->second;
}

const std::string& WordPieceTokenizer::id_to_token(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size()) {
    throw Error(ErrorCode::invalid_argument,
                "token id " + std::to_string(id) + " is outside the vocabulary of " +
                    std::to_string(tokens_.size()));
  }
  return tokens_[id];
}

}  // namespace skim::text

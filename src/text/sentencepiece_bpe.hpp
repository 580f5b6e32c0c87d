#pragma once
// SentencePiece BPE, the tokenizer of LLaMA-family decoders (llama2.c's
// tokenizer.bin / tok512.bin, GGUF "llama" vocabularies, SentencePiece BPE
// .model files once their pieces are read). Matches SentencePiece's own
// encoder id for id (tests/data/tokenizer/spm_tok512_vectors.jsonl).
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace skim::text {

// Turns a byte stream (decoded tokens) into valid UTF-8 for display: push()
// hands out every character the bytes so far complete and holds back an
// unfinished one (at most 3 bytes), so a character spread over several byte
// tokens comes out once, whole. Bytes that cannot be part of valid UTF-8
// (stray continuation bytes, overlong forms, surrogates, > U+10FFFF, a
// sequence cut short by the next byte) are replaced by U+FFFD, one per byte,
// as SentencePiece's decoder does. finish() ends the stream: an unfinished
// sequence still held back is replaced the same way (and counted). Nothing
// throws; replaced() says whether the output is lossy.
class Utf8Stream {
 public:
  // Appends to `out` what `bytes` completes.
  void push(std::string_view bytes, std::string& out);
  std::string push(std::string_view bytes);
  // Ends the stream: appends U+FFFD for each byte still held back and returns
  // how many that was (0 if the stream ended on a character boundary). The
  // stream can then be reused.
  std::size_t finish(std::string& out);
  std::size_t pending() const noexcept { return held_size_; }  // bytes held back
  std::size_t replaced() const noexcept { return replaced_; }  // U+FFFD written so far
  void reset() noexcept { held_size_ = 0, replaced_ = 0; }

 private:
  void drain(std::string& out);
  std::array<unsigned char, 4> held_{};
  std::size_t held_size_ = 0;
  std::size_t replaced_ = 0;
};

class SentencePieceBpe {
 public:
  // SentencePiece / GGUF token types.
  enum Type : std::int32_t {
    normal = 1,
    unknown = 2,
    control = 3,
    user_defined = 4,
    unused = 5,
    byte = 6,
  };

  struct Vocab {
    std::vector<std::string> pieces;  // id → piece, spaces as U+2581 "▁"
    std::vector<float> scores;        // id → merge priority (higher merges first)
    // SentencePiece/GGUF token types: 1 normal, 2 unknown, 3 control,
    // 4 user-defined, 5 unused, 6 byte; empty = infer ("<0xHH>" pieces are
    // byte tokens, unk is unknown, bos and eos are control, the rest normal).
    std::vector<std::int32_t> types;
    std::int32_t bos = 1, eos = 2, unk = 0;  // bos/eos may be -1 (none)
    // SentencePiece normalizer_spec flags (the normalization itself is the
    // identity: no NFKC). LLaMA's tokenizer.model: true/false/true; the
    // stories260K tok512.model: true/true/true. GGUF and llama2.c files do not
    // record them; llama.cpp and llama2.c behave as true/false/true.
    bool add_dummy_prefix = true;           // "▁" before the text (the leading-space rule)
    bool remove_extra_whitespaces = false;  // strip ' ' at both ends, collapse runs of ' '
    bool escape_whitespaces = true;         // ' ' → "▁"
  };

  // Checks the vocabulary: pieces, scores (and types, if given) have the
  // same length, unk is in range and bos/eos are -1 or in range, types are
  // 1..6, byte-typed pieces are "<0x00>".."<0xFF>" and either all 256 byte
  // values have one or none does, no score is NaN. Throws
  // skim::Error(model) naming the piece otherwise. A piece listed twice keeps
  // its first id. The unk id decodes as unknown whatever its type.
  static SentencePieceBpe from_vocab(Vocab vocab);
  // llama2.c tokenizer file (tokenizer.bin, tok512.bin), read by
  // format::read_llama2c_tokenizer: pieces have plain spaces (turned into
  // "▁" here), BOS/EOS are "\n<s>\n"/"\n</s>\n" (renamed "<s>"/"</s>"),
  // unk = 0, bos = 1, eos = 2, types inferred, normalizer flags as Vocab's
  // defaults. To match a SentencePiece model whose normalizer differs
  // (tok512.model removes extra whitespace), read the vocab, set the flags,
  // and call from_vocab.
  static Vocab read_llama2c_vocab(const std::filesystem::path& path, std::int32_t vocab_size);
  static SentencePieceBpe from_llama2c(const std::filesystem::path& path, std::int32_t vocab_size);

  // SentencePiece's encoding: normalize (see Vocab), split into characters
  // (user-defined pieces, as written in the normalized text, are matched
  // first, longest first, and never merged), repeatedly merge the adjacent
  // pair whose concatenation is a normal, user-defined or unused piece with
  // the highest score (ties: leftmost), split merged unused pieces back into
  // the pair they came from, then replace a symbol that is not a piece by its
  // UTF-8 bytes as byte tokens, or by unk when the vocabulary has no byte
  // tokens (a run of such symbols gives one unk, as in SentencePiece).
  // O(n log n) with a priority queue of adjacent pairs; when no piece has "▁"
  // after another character (SentencePiece-trained vocabularies), one small
  // queue per word. Throws skim::Error(text) naming the byte offset on invalid
  // UTF-8, skim::Error(invalid_argument) when add_bos/add_eos is asked of a
  // vocabulary without one, or for a text of 2 GiB or more.
  std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const;
  // Appends to `ids` (no clear), reusing its capacity.
  void encode(std::string_view text, bool add_bos, bool add_eos,
              std::vector<std::int32_t>& ids) const;

  // The bytes token `id` stands for: a byte token's single raw byte (maybe
  // not valid UTF-8 alone: feed a Utf8Stream), "" for control tokens, " ⁇ "
  // for the unknown token (SentencePiece's default unk_surface), otherwise
  // the piece with "▁" turned back into ' '. Following BOS (prev_id == bos),
  // a piece's leading "▁" is dropped (when add_dummy_prefix or
  // remove_extra_whitespaces), as llama2.c's decode drops the space after BOS.
  // Throws skim::Error(invalid_argument) naming an id outside the
  // vocabulary; prev_id may be anything (-1: none). The view lives as long as
  // the tokenizer.
  std::string_view decode_piece(std::int32_t prev_id, std::int32_t id) const;
  // Whole-sequence decoding, as SentencePiece's decode: the dummy-prefix
  // space at the start is dropped however the ids begin (BOS or not), bytes
  // go through a Utf8Stream, control tokens give nothing but end a run of
  // byte tokens (its unfinished bytes become U+FFFD: SentencePiece decodes
  // each run of byte tokens on its own). Invalid or unfinished byte sequences
  // become U+FFFD, one per byte; `replaced`, if given, receives how many bytes
  // were replaced. Throws like decode_piece.
  std::string decode(std::span<const std::int32_t> ids, std::size_t* replaced = nullptr) const;

  std::int32_t piece_to_id(std::string_view piece) const;  // any type; -1 if absent
  const std::string& id_to_piece(std::int32_t id) const;   // throws on a bad id
  Type type(std::int32_t id) const;                        // throws on a bad id
  float score(std::int32_t id) const;                      // throws on a bad id
  std::int32_t byte_to_id(unsigned char b) const noexcept { return byte_ids_[b]; }  // -1: none
  std::size_t vocab_size() const noexcept { return pieces_.size(); }
  std::int32_t bos_id() const noexcept { return bos_; }
  std::int32_t eos_id() const noexcept { return eos_; }
  std::int32_t unk_id() const noexcept { return unk_; }
  bool has_byte_fallback() const noexcept { return byte_ids_[0] >= 0; }
  bool add_dummy_prefix() const noexcept { return add_dummy_prefix_; }
  bool remove_extra_whitespaces() const noexcept { return remove_extra_whitespaces_; }
  bool escape_whitespaces() const noexcept { return escape_whitespaces_; }

 private:
  // Hashes std::string and std::string_view alike, so looking a piece up
  // needs no temporary std::string.
  struct PieceHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  using PieceMap = std::unordered_map<std::string, std::int32_t, PieceHash, std::equal_to<>>;

  SentencePieceBpe() = default;
  void check_id(std::int32_t id) const;
  void normalize(std::string_view text, std::string& out) const;
  // Id of a normal, user-defined or unused piece, or -1 (the hot lookup of
  // encoding: an open-addressing table, no allocation).
  std::int32_t mergeable_id(std::string_view piece) const noexcept;
  std::size_t match_user_defined(std::string_view rest) const;  // 0: none
  bool strips_leading_space() const noexcept {
    return add_dummy_prefix_ || remove_extra_whitespaces_;
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<Type> types_;
  std::vector<std::string> decoded_;  // id → decode_piece text
  std::vector<char> space_first_;     // id → the piece starts with "▁"
  // Normal, user-defined and unused pieces: linear probing over a power-of-
  // two table at most half full; a slot keeps the high half of the piece's
  // hash to skip most string compares.
  struct Slot {
    std::uint32_t tag = 0;
    std::int32_t id = -1;  // -1: empty
  };
  std::vector<Slot> table_;
  std::size_t table_mask_ = 0;
  PieceMap all_;  // every piece (first id)
  std::array<std::int32_t, 256> byte_ids_{};
  // User-defined pieces by first byte, longest first.
  std::array<std::vector<std::int32_t>, 256> user_defined_;
  bool has_user_defined_ = false;
  bool has_unused_ = false;
  bool split_at_spaces_ = false;     // merges never cross the start of a "▁" run
  std::size_t max_piece_bytes_ = 0;  // longest mergeable piece
  std::int32_t bos_ = -1, eos_ = -1, unk_ = -1;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = false;
  bool escape_whitespaces_ = true;
};

}  // namespace skim::text

#include "text/sentencepiece_bpe.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "format/llama2c.hpp"
#include "skim/error.hpp"
#include "text/unicode.hpp"

// The encoder follows SentencePiece's BPE model (bpe_model.cc) as behaviour,
// checked against SentencePiece itself: its normalizer with an identity
// character map, then merges chosen through a priority queue of adjacent
// pairs (highest piece score first, leftmost first among equal scores), which
// picks exactly the pair a "rescan for the best pair" loop would, in
// O(n log n) instead of O(n²).

namespace skim::text {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";       // U+2581 "▁"
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";       // U+FFFD
constexpr std::string_view kUnknownSurface = " \xE2\x81\x87 ";  // " ⁇ "

// One symbol of the text being merged: bytes [start, start + len) of the
// normalized text, in a doubly linked list. A symbol absorbed into its left
// neighbour gets len 0.
struct Symbol {
  std::uint32_t start;
  std::uint32_t len;
  std::int32_t prev;
  std::int32_t next;
  std::int32_t id;      // piece id once known (merged or user-defined), else -1
  std::int32_t record;  // merge record (only when the vocabulary has unused pieces)
  bool frozen;          // a user-defined piece: never merged
};

// A candidate merge of adjacent symbols left and right into piece `id`.
struct Pair {
  float score;
  std::int32_t left;
  std::int32_t right;
  std::uint32_t size;  // left.len + right.len when queued; differs once stale
  std::int32_t id;
};

// Heap order: the top is the highest score, then the leftmost.
struct PairLess {
  bool operator()(const Pair& a, const Pair& b) const noexcept {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

// How a symbol came to be, so that merged "unused" pieces can be split back
// into their two halves (SentencePiece's resegmentation).
struct Record {
  std::uint32_t start;
  std::uint32_t len;
  std::int32_t id;    // -1 for an initial symbol not yet looked up
  std::int32_t left;  // records of the two halves, -1 for an initial symbol
  std::int32_t right;
};

// Per-thread working buffers, so that encoding reuses their capacity.
struct Scratch {
  std::u32string codes;  // UTF-8 check only
  std::string normalized;
  std::vector<Symbol> symbols;
  std::vector<Pair> heap;
  std::vector<Record> records;
};

Scratch& scratch() {
  thread_local Scratch buffers;
  return buffers;
}

// Keeps one very long input from pinning its memory in the thread forever.
void trim_scratch(Scratch& s) {
  constexpr std::size_t kKeep = std::size_t{1} << 20;
  if (s.codes.capacity() > kKeep / 4) std::u32string().swap(s.codes);
  if (s.normalized.capacity() > kKeep) std::string().swap(s.normalized);
  if (s.symbols.capacity() * sizeof(Symbol) > kKeep) std::vector<Symbol>().swap(s.symbols);
  if (s.heap.capacity() * sizeof(Pair) > kKeep) std::vector<Pair>().swap(s.heap);
  if (s.records.capacity() * sizeof(Record) > kKeep) std::vector<Record>().swap(s.records);
}

// Length of the UTF-8 sequence a (valid) lead byte starts.
inline std::uint32_t utf8_length(unsigned char lead) noexcept {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// "<0xHH>" (upper-case hex, as SentencePiece writes them) → HH, else -1.
int byte_piece_value(std::string_view piece) noexcept {
  if (piece.size() != 6 || !piece.starts_with("<0x") || piece[5] != '>') return -1;
  const auto hex = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
  };
  const int high = hex(piece[3]), low = hex(piece[4]);
  return high < 0 || low < 0 ? -1 : high * 16 + low;
}

// FNV-1a: pieces are short, so a byte loop beats fancier hashes here.
inline std::uint64_t piece_hash(std::string_view piece) noexcept {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (const char c : piece) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001B3ull;
  }
  return h ^ (h >> 29);
}

std::string hex_byte(unsigned value) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%02X", value & 0xFFu);
  return buf;
}

// Status of held bytes h[0..n) (n ≥ 1, at most one character long):
// > 0: a complete character of that many bytes; 0: a valid unfinished prefix;
// -1: h[0] cannot start a valid character followed by these bytes.
int utf8_status(const unsigned char* h, std::size_t n) noexcept {
  const unsigned char lead = h[0];
  std::size_t length;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead < 0x80) {
    return 1;
  } else if (lead < 0xC2) {  // continuation byte, or overlong 2-byte lead
    return -1;
  } else if (lead < 0xE0) {
    length = 2;
  } else if (lead < 0xF0) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // overlong
    if (lead == 0xED) high = 0x9F;  // surrogates
  } else if (lead < 0xF5) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // overlong
    if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
  } else {
    return -1;
  }
  if (n >= 2 && (h[1] < low || h[1] > high)) return -1;
  for (std::size_t k = 2; k < n; ++k) {
    if ((h[k] & 0xC0) != 0x80) return -1;
  }
  return n == length ? static_cast<int>(length) : 0;
}

}  // namespace

// ---------------------------------------------------------------------------
// Utf8Stream

void Utf8Stream::drain(std::string& out) {
  while (held_size_ > 0) {
    const int status = utf8_status(held_.data(), held_size_);
    if (status == 0) return;  // wait for more bytes
    if (status > 0) {
      out.append(reinterpret_cast<const char*>(held_.data()), held_size_);
      held_size_ = 0;
      return;
    }
    // The first held byte can never be part of a valid character: replace
    // it and look at the rest again (each may start a character).
    out.append(kReplacement);
    ++replaced_;
    std::copy(held_.begin() + 1, held_.begin() + held_size_, held_.begin());
    --held_size_;
  }
}

void Utf8Stream::push(std::string_view bytes, std::string& out) {
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    if (held_size_ == 0 && b < 0x80) {
      out.push_back(c);
      continue;
    }
    held_[held_size_++] = b;
    drain(out);
  }
}

std::string Utf8Stream::push(std::string_view bytes) {
  std::string out;
  push(bytes, out);
  return out;
}

std::size_t Utf8Stream::finish(std::string& out) {
  const std::size_t unfinished = held_size_;
  for (std::size_t i = 0; i < unfinished; ++i) out.append(kReplacement);
  replaced_ += unfinished;
  held_size_ = 0;
  return unfinished;
}

// ---------------------------------------------------------------------------
// Construction

SentencePieceBpe SentencePieceBpe::from_vocab(Vocab vocab) {
  const std::size_t n = vocab.pieces.size();
  const auto fail = [](const std::string& what) {
    throw Error(ErrorCode::model, "SentencePiece BPE vocabulary: " + what);
  };
  if (n == 0) fail("has no pieces");
  if (n > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
    fail("has " + std::to_string(n) + " pieces, more than int32 ids can name");
  }
  if (vocab.scores.size() != n) {
    fail("has " + std::to_string(n) + " pieces but " + std::to_string(vocab.scores.size()) +
         " scores");
  }
  if (!vocab.types.empty() && vocab.types.size() != n) {
    fail("has " + std::to_string(n) + " pieces but " + std::to_string(vocab.types.size()) +
         " token types");
  }
  const auto size = static_cast<std::int32_t>(n);
  if (vocab.unk < 0 || vocab.unk >= size) {
    fail("unknown-token id " + std::to_string(vocab.unk) + " is not in [0, " +
         std::to_string(size) + ")");
  }
  for (const auto& [name, id] : {std::pair{"BOS", vocab.bos}, std::pair{"EOS", vocab.eos}}) {
    if (id < -1 || id >= size) {
      fail(std::string(name) + " id " + std::to_string(id) + " is not -1 or in [0, " +
           std::to_string(size) + ")");
    }
  }

  SentencePieceBpe t;
  t.bos_ = vocab.bos;
  t.eos_ = vocab.eos;
  t.unk_ = vocab.unk;
  t.add_dummy_prefix_ = vocab.add_dummy_prefix;
  t.remove_extra_whitespaces_ = vocab.remove_extra_whitespaces;
  t.escape_whitespaces_ = vocab.escape_whitespaces;
  t.byte_ids_.fill(-1);
  t.types_.resize(n);
  PieceMap mergeable;  // first id of each normal, user-defined or unused piece
  mergeable.reserve(n);
  t.all_.reserve(n);
  int byte_count = 0;
  for (std::int32_t id = 0; id < size; ++id) {
    const std::string& piece = vocab.pieces[id];
    const auto where = [&] { return "piece " + std::to_string(id) + " '" + piece + "'"; };
    const int byte_value = byte_piece_value(piece);
    Type type;
    if (vocab.types.empty()) {
      type = byte_value >= 0                      ? byte
             : id == vocab.unk                    ? unknown
             : id == vocab.bos || id == vocab.eos ? control
                                                  : normal;
    } else {
      const std::int32_t given = vocab.types[id];
      if (given < normal || given > byte) {
        fail(where() + " has token type " + std::to_string(given) + " (expected 1 to 6)");
      }
      type = static_cast<Type>(given);
      if (type == byte && byte_value < 0)
        fail(where() + " has the byte type but is not <0x00>..<0xFF>");
    }
    if (std::isnan(vocab.scores[id])) fail(where() + " has a NaN score");
    t.types_[id] = type;
    if (type == byte) {
      std::int32_t& slot = t.byte_ids_[static_cast<std::size_t>(byte_value)];
      if (slot >= 0) {
        fail("byte " + hex_byte(static_cast<unsigned>(byte_value)) + " has two tokens, " +
             std::to_string(slot) + " and " + std::to_string(id));
      }
      slot = id;
      ++byte_count;
    } else if (type == normal || type == user_defined || type == unused) {
      if (!piece.empty() && mergeable.try_emplace(piece, id).second) {
        t.max_piece_bytes_ = std::max(t.max_piece_bytes_, piece.size());
        if (type == user_defined) {
          t.user_defined_[static_cast<unsigned char>(piece[0])].push_back(id);
          t.has_user_defined_ = true;
        }
        if (type == unused) t.has_unused_ = true;
      }
    }
    t.all_.try_emplace(piece, id);
  }
  if (byte_count != 0 && byte_count != 256) {
    int missing = 0;
    while (t.byte_ids_[missing] >= 0) ++missing;
    fail("has byte tokens for only " + std::to_string(byte_count) +
         " of the 256 byte values (none for " + hex_byte(static_cast<unsigned>(missing)) + ")");
  }
  // May merging run word by word (see encode)? Not if some mergeable piece
  // has the space symbol right after another character.
  {
    const std::string_view space = t.escape_whitespaces_ ? kSpaceSymbol : std::string_view(" ");
    t.split_at_spaces_ = std::none_of(mergeable.begin(), mergeable.end(), [&](const auto& entry) {
      const std::string_view piece = entry.first;
      for (std::size_t at = piece.find(space, 1); at != std::string_view::npos;
           at = piece.find(space, at + 1)) {
        if (!piece.substr(0, at).ends_with(space)) return true;
      }
      return false;
    });
  }
  std::size_t capacity = 16;
  while (capacity < 2 * mergeable.size()) capacity *= 2;
  t.table_.assign(capacity, Slot{});
  t.table_mask_ = capacity - 1;
  for (const auto& [piece, id] : mergeable) {
    const std::uint64_t h = piece_hash(piece);
    std::size_t at = h & t.table_mask_;
    while (t.table_[at].id >= 0) at = (at + 1) & t.table_mask_;
    t.table_[at] = Slot{static_cast<std::uint32_t>(h >> 32), id};
  }
  for (auto& bucket : t.user_defined_) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](std::int32_t a, std::int32_t b) {
      return vocab.pieces[a].size() > vocab.pieces[b].size();
    });
  }

  // What each id decodes to.
  t.decoded_.resize(n);
  t.space_first_.assign(n, 0);
  for (std::int32_t id = 0; id < size; ++id) {
    const std::string_view piece = vocab.pieces[id];
    std::string& text = t.decoded_[id];
    switch (t.types_[id]) {
      case control:
        break;
      case unknown:
        text = kUnknownSurface;
        break;
      case byte:
        text.assign(1, static_cast<char>(byte_piece_value(piece)));
        break;
      default:
        t.space_first_[id] = piece.starts_with(kSpaceSymbol);
        for (std::size_t i = 0; i < piece.size();) {
          if (piece.substr(i).starts_with(kSpaceSymbol)) {
            text.push_back(' ');
            i += kSpaceSymbol.size();
          } else {
            text.push_back(piece[i++]);
          }
        }
    }
  }
  t.decoded_[t.unk_] = kUnknownSurface;
  t.space_first_[t.unk_] = 0;

  t.pieces_ = std::move(vocab.pieces);
  t.scores_ = std::move(vocab.scores);
  return t;
}

SentencePieceBpe::Vocab SentencePieceBpe::read_llama2c_vocab(const std::filesystem::path& path,
                                                             std::int32_t vocab_size) {
  format::Llama2cTokenizer file = format::read_llama2c_tokenizer(path, vocab_size);
  Vocab vocab;
  vocab.bos = 1, vocab.eos = 2, vocab.unk = 0;
  if (file.tokens.size() < 3) {
    throw Error(ErrorCode::model, "llama2.c tokenizer '" + path.string() + "' has " +
                                      std::to_string(file.tokens.size()) +
                                      " tokens; unk, BOS and EOS need ids 0, 1 and 2");
  }
  vocab.scores = std::move(file.scores);
  vocab.pieces.reserve(file.tokens.size());
  for (std::size_t id = 0; id < file.tokens.size(); ++id) {
    const std::string& token = file.tokens[id];
    // llama2.c's export wraps BOS/EOS in newlines; SentencePiece and GGUF
    // name them <s> and </s>.
    if (id == 1 && token == "\n<s>\n") {
      vocab.pieces.emplace_back("<s>");
      continue;
    }
    if (id == 2 && token == "\n</s>\n") {
      vocab.pieces.emplace_back("</s>");
      continue;
    }
    // llama2.c's export turned "▁" into ' '; turn it back.
    std::string piece;
    piece.reserve(token.size() + 2);
    for (const char c : token) {
      if (c == ' ') {
        piece.append(kSpaceSymbol);
      } else {
        piece.push_back(c);
      }
    }
    vocab.pieces.push_back(std::move(piece));
  }
  return vocab;
}

SentencePieceBpe SentencePieceBpe::from_llama2c(const std::filesystem::path& path,
                                                std::int32_t vocab_size) {
  return from_vocab(read_llama2c_vocab(path, vocab_size));
}

// ---------------------------------------------------------------------------
// Encoding

// SentencePiece's normalizer with the identity character map, on valid UTF-8
// (a multi-byte character never contains the byte ' ', so bytes will do).
void SentencePieceBpe::normalize(std::string_view text, std::string& out) const {
  const std::string_view space = escape_whitespaces_ ? kSpaceSymbol : std::string_view(" ");
  out.clear();
  std::size_t i = 0;
  if (remove_extra_whitespaces_) {
    while (i < text.size() && text[i] == ' ') ++i;
  }
  if (i == text.size()) return;  // nothing but spaces: no dummy prefix either
  out.reserve(text.size() + text.size() / 4 + space.size());
  if (add_dummy_prefix_) out.append(space);
  while (i < text.size()) {
    const std::size_t stop = std::min(text.find(' ', i), text.size());
    out.append(text.substr(i, stop - i));
    if (stop == text.size()) break;
    out.append(space);
    i = stop + 1;
    if (remove_extra_whitespaces_) {
      while (i < text.size() && text[i] == ' ') ++i;
    }
  }
  if (remove_extra_whitespaces_) {
    // On the output, as SentencePiece does: a "▁" typed in the text goes too.
    while (std::string_view(out).ends_with(space)) out.resize(out.size() - space.size());
  }
}

std::int32_t SentencePieceBpe::mergeable_id(std::string_view piece) const noexcept {
  const std::uint64_t h = piece_hash(piece);
  const auto tag = static_cast<std::uint32_t>(h >> 32);
  for (std::size_t at = h & table_mask_;; at = (at + 1) & table_mask_) {
    const Slot slot = table_[at];
    if (slot.id < 0) return -1;
    if (slot.tag == tag && pieces_[slot.id] == piece) return slot.id;
  }
}

std::size_t SentencePieceBpe::match_user_defined(std::string_view rest) const {
  for (const std::int32_t id : user_defined_[static_cast<unsigned char>(rest[0])]) {
    if (rest.starts_with(pieces_[id])) return pieces_[id].size();  // longest first
  }
  return 0;
}

std::vector<std::int32_t> SentencePieceBpe::encode(std::string_view text, bool add_bos,
                                                   bool add_eos) const {
  std::vector<std::int32_t> ids;
  encode(text, add_bos, add_eos, ids);
  return ids;
}

void SentencePieceBpe::encode(std::string_view text, bool add_bos, bool add_eos,
                              std::vector<std::int32_t>& ids) const {
  if (add_bos && bos_ < 0) {
    throw Error(ErrorCode::invalid_argument, "encode: BOS requested but the vocabulary has none");
  }
  if (add_eos && eos_ < 0) {
    throw Error(ErrorCode::invalid_argument, "encode: EOS requested but the vocabulary has none");
  }
  Scratch& s = scratch();
  s.codes.clear();
  decode_utf8(text, s.codes);  // throws skim::Error(text) naming the byte offset

  std::string& norm = s.normalized;
  normalize(text, norm);
  if (norm.size() >= std::numeric_limits<std::int32_t>::max()) {
    throw Error(ErrorCode::invalid_argument,
                "encode: text of " + std::to_string(text.size()) + " bytes is too long");
  }
  if (add_bos) ids.push_back(bos_);

  // Characters (or user-defined pieces) → symbols.
  std::vector<Symbol>& symbols = s.symbols;
  symbols.clear();
  for (std::size_t p = 0; p < norm.size();) {
    std::uint32_t len = 0;
    std::int32_t id = -1;
    if (has_user_defined_) {
      len = static_cast<std::uint32_t>(match_user_defined(std::string_view(norm).substr(p)));
      if (len > 0) id = mergeable_id(std::string_view(norm).substr(p, len));
    }
    const bool frozen = len > 0;
    if (!frozen) len = utf8_length(static_cast<unsigned char>(norm[p]));
    const auto index = static_cast<std::int32_t>(symbols.size());
    symbols.push_back({static_cast<std::uint32_t>(p), len, index - 1, index + 1, id, -1, frozen});
    p += len;
  }
  if (!symbols.empty()) symbols.back().next = -1;

  std::vector<Record>& records = s.records;
  records.clear();
  if (has_unused_) {
    for (std::size_t i = 0; i < symbols.size(); ++i) {
      symbols[i].record = static_cast<std::int32_t>(i);
      records.push_back({symbols[i].start, symbols[i].len, symbols[i].id, -1, -1});
    }
  }

  // Merge, best pair first, one segment at a time. When no mergeable piece
  // has a "▁" right after another character (true of SentencePiece BPE
  // vocabularies, whose pieces start at a word), no merge can join a symbol
  // ending in something else to one starting with "▁": merges on either side
  // of such a place never meet, and their relative order cannot change the
  // result. So each word is merged with its own small queue, which stays in
  // cache, instead of one queue over the whole text.
  std::vector<Pair>& heap = s.heap;
  const auto candidate = [&](std::int32_t left, std::int32_t right, auto&& add) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[left];
    const Symbol& r = symbols[right];
    if (l.frozen || r.frozen) return;
    const std::uint32_t size = l.len + r.len;
    if (size > max_piece_bytes_) return;
    const std::int32_t id = mergeable_id(std::string_view(norm).substr(l.start, size));
    if (id >= 0) add(Pair{scores_[id], left, right, size, id});
  };
  const auto push = [&](const Pair& pair) {
    heap.push_back(pair);
    std::push_heap(heap.begin(), heap.end(), PairLess{});
  };
  const auto merge_segment = [&](std::int32_t first, std::int32_t end) {
    symbols[first].prev = -1;
    symbols[end - 1].next = -1;
    heap.clear();
    for (std::int32_t i = first; i + 1 < end; ++i) {
      candidate(i, i + 1, [&](const Pair& pair) { heap.push_back(pair); });
    }
    std::make_heap(heap.begin(), heap.end(), PairLess{});
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), PairLess{});
      const Pair top = heap.back();
      heap.pop_back();
      Symbol& l = symbols[top.left];
      // Stale if either side was absorbed or grew since the pair was queued.
      if (l.len == 0 || l.next != top.right || l.len + symbols[top.right].len != top.size) continue;
      Symbol& r = symbols[top.right];
      if (has_unused_) {
        records.push_back({l.start, top.size, top.id, l.record, r.record});
        l.record = static_cast<std::int32_t>(records.size() - 1);
      }
      l.len = top.size;
      l.id = top.id;
      l.next = r.next;
      if (r.next >= 0) symbols[r.next].prev = top.left;
      r.len = 0;
      candidate(l.prev, top.left, push);
      candidate(top.left, l.next, push);
    }
  };
  const auto count = static_cast<std::int32_t>(symbols.size());
  std::int32_t first = 0;
  if (split_at_spaces_) {
    const std::string_view view(norm);
    const std::string_view space = escape_whitespaces_ ? kSpaceSymbol : std::string_view(" ");
    for (std::int32_t i = 1; i < count; ++i) {
      const std::uint32_t at = symbols[i].start;
      if (view.substr(at).starts_with(space) && !view.substr(0, at).ends_with(space)) {
        merge_segment(first, i);
        first = i;
      }
    }
  }
  if (first < count) merge_segment(first, count);

  // Symbols → ids.
  bool prev_unknown = false;
  const auto emit = [&](std::uint32_t start, std::uint32_t len, std::int32_t id) {
    if (id < 0) id = mergeable_id(std::string_view(norm).substr(start, len));
    if (id >= 0) {
      ids.push_back(id);
      prev_unknown = false;
    } else if (has_byte_fallback()) {
      for (std::uint32_t k = 0; k < len; ++k) {
        ids.push_back(byte_ids_[static_cast<unsigned char>(norm[start + k])]);
      }
      prev_unknown = false;
    } else {
      if (!prev_unknown) ids.push_back(unk_);  // a run of unknown symbols is one unk
      prev_unknown = true;
    }
  };
  const auto emit_record = [&](std::int32_t r, auto&& self) -> void {
    const Record& record = records[r];
    if (record.left >= 0 && types_[record.id] == unused) {
      self(record.left, self);
      self(record.right, self);
    } else {
      emit(record.start, record.len, record.id);
    }
  };
  // The symbols left (len > 0) tile the text in index order.
  for (std::int32_t i = 0; i < count; ++i) {
    if (symbols[i].len == 0) continue;
    if (has_unused_) {
      emit_record(symbols[i].record, emit_record);
    } else {
      emit(symbols[i].start, symbols[i].len, symbols[i].id);
    }
  }
  if (add_eos) ids.push_back(eos_);
  trim_scratch(s);
}

// ---------------------------------------------------------------------------
// Decoding and lookups

void SentencePieceBpe::check_id(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= pieces_.size()) {
    throw Error(ErrorCode::invalid_argument, "token id " + std::to_string(id) +
                                                 " is outside the vocabulary [0, " +
                                                 std::to_string(pieces_.size()) + ")");
  }
}

std::string_view SentencePieceBpe::decode_piece(std::int32_t prev_id, std::int32_t id) const {
  check_id(id);
  std::string_view text = decoded_[id];
  if (prev_id >= 0 && prev_id == bos_ && strips_leading_space() && space_first_[id]) {
    text.remove_prefix(1);
  }
  return text;
}

std::string SentencePieceBpe::decode(std::span<const std::int32_t> ids,
                                     std::size_t* replaced) const {
  std::string out;
  Utf8Stream stream;
  // As SentencePiece: the leading "▁" of pieces is dropped until some text
  // has come out, or (when extra whitespace is kept, so that "  a" survives
  // a round trip) until one has been dropped.
  bool produced = false, dropped = false;
  for (const std::int32_t id : ids) {
    check_id(id);
    if (types_[id] == control) {
      stream.finish(out);  // SentencePiece decodes each run of byte tokens on its own
      continue;
    }
    std::string_view text = decoded_[id];
    if (!produced && !dropped && strips_leading_space() && space_first_[id]) {
      text.remove_prefix(1);
      dropped = !remove_extra_whitespaces_;
    }
    if (!text.empty()) produced = true;
    stream.push(text, out);
  }
  stream.finish(out);
  if (replaced != nullptr) *replaced = stream.replaced();
  return out;
}

std::int32_t SentencePieceBpe::piece_to_id(std::string_view piece) const {
  const auto it = all_.find(piece);
  return it == all_.end() ? -1 : it->second;
}

const std::string& SentencePieceBpe::id_to_piece(std::int32_t id) const {
  check_id(id);
  return pieces_[id];
}

SentencePieceBpe::Type SentencePieceBpe::type(std::int32_t id) const {
  check_id(id);
  return types_[id];
}

float SentencePieceBpe::score(std::int32_t id) const {
  check_id(id);
  return scores_[id];
}

}  // namespace skim::text

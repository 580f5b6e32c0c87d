#include "format/llama2c.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include "skim/error.hpp"

namespace skim::format {
namespace {

constexpr std::size_t header_fields = 7;
constexpr std::size_t header_bytes = header_fields * sizeof(std::int32_t);

[[noreturn]] void fail(ErrorCode code, const std::string& path, const std::string& message) {
  throw Error(code, path + ": " + message);
}

// Sizes are computed in 128 bits: with 31-bit fields, L × dim × dim cannot
// overflow, so a hostile header is reported instead of wrapping.
using Wide = unsigned __int128;

std::string wide_string(Wide value) {
  if (value > std::numeric_limits<std::uint64_t>::max()) return "more than 2^64";
  return std::to_string(static_cast<std::uint64_t>(value));
}

std::string header_string(const Llama2cHeader& h, std::int32_t stored_vocab_size) {
  return "dim " + std::to_string(h.dim) + ", hidden_dim " + std::to_string(h.hidden_dim) + ", n_layers " +
         std::to_string(h.n_layers) + ", n_heads " + std::to_string(h.n_heads) + ", n_kv_heads " +
         std::to_string(h.n_kv_heads) + ", vocab_size " + std::to_string(stored_vocab_size) + ", seq_len " +
         std::to_string(h.seq_len);
}

}  // namespace

Llama2cCheckpoint::Llama2cCheckpoint(const std::filesystem::path& path) : file_(path) {
  const std::string& file_path = file_.path();
  const std::size_t file_size = file_.size();
  if (file_size < header_bytes) {
    fail(ErrorCode::format, file_path,
         "file is " + std::to_string(file_size) + " bytes, too short for the 28-byte llama2.c header");
  }
  std::int32_t fields[header_fields];
  std::memcpy(fields, file_.data(), header_bytes);  // little-endian host
  static constexpr const char* field_names[header_fields] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                                             "n_kv_heads", "vocab_size", "seq_len"};
  for (std::size_t i = 0; i < header_fields; ++i) {
    const bool valid = i == 5 ? fields[i] != 0 && fields[i] != std::numeric_limits<std::int32_t>::min()
                              : fields[i] > 0;
    if (!valid) {
      fail(ErrorCode::format, file_path,
           std::string("header field ") + field_names[i] + " = " + std::to_string(fields[i]) +
               (i == 5 ? " is not a vocabulary size" : " must be positive") + " (not a llama2.c checkpoint?)");
    }
  }
  const std::int32_t stored_vocab_size = fields[5];
  Llama2cHeader& h = header_;
  h.dim = fields[0];
  h.hidden_dim = fields[1];
  h.n_layers = fields[2];
  h.n_heads = fields[3];
  h.n_kv_heads = fields[4];
  h.vocab_size = stored_vocab_size < 0 ? -stored_vocab_size : stored_vocab_size;
  h.seq_len = fields[6];
  h.shared_classifier = stored_vocab_size > 0;

  if (h.dim % h.n_heads != 0) {
    fail(ErrorCode::model, file_path,
         "dim " + std::to_string(h.dim) + " is not a multiple of n_heads " + std::to_string(h.n_heads));
  }
  if (h.n_heads % h.n_kv_heads != 0) {
    fail(ErrorCode::model, file_path,
         "n_heads " + std::to_string(h.n_heads) + " is not a multiple of n_kv_heads " +
             std::to_string(h.n_kv_heads));
  }
  if (h.head_size() % 2 != 0) {
    fail(ErrorCode::model, file_path,
         "head size " + std::to_string(h.head_size()) + " (dim / n_heads) is odd; RoPE needs pairs");
  }

  const Wide dim = static_cast<Wide>(h.dim), hidden = static_cast<Wide>(h.hidden_dim),
             layers = static_cast<Wide>(h.n_layers), kv_dim = static_cast<Wide>(h.kv_dim()),
             vocab = static_cast<Wide>(h.vocab_size), seq_len = static_cast<Wide>(h.seq_len),
             half_head = static_cast<Wide>(h.head_size() / 2);
  const Wide shared_floats = vocab * dim + layers * dim + layers * dim * dim + 2 * layers * kv_dim * dim +
                             layers * dim * dim + layers * dim + 3 * layers * hidden * dim + dim +
                             2 * seq_len * half_head;
  const Wide shared_bytes = header_bytes + 4 * shared_floats;
  const Wide separate_bytes = shared_bytes + 4 * vocab * dim;
  const Wide expected = h.shared_classifier ? shared_bytes : separate_bytes;
  if (expected != file_size) {
    fail(ErrorCode::format, file_path,
         "header (" + header_string(h, stored_vocab_size) + ") implies " + wide_string(shared_bytes) +
             " bytes with the classifier shared with the token embedding or " + wide_string(separate_bytes) +
             " bytes with a separate classifier; its " + (h.shared_classifier ? "positive" : "negative") +
             " vocab_size means " + (h.shared_classifier ? "shared" : "separate") + ", but the file is " +
             std::to_string(file_size) + " bytes");
  }

  // The sizes are now known to fit the file, so size_t arithmetic is safe.
  const auto D = static_cast<std::int64_t>(h.dim), F = static_cast<std::int64_t>(h.hidden_dim),
             KV = static_cast<std::int64_t>(h.kv_dim()), V = static_cast<std::int64_t>(h.vocab_size);
  const std::byte* cursor = file_.data() + header_bytes;
  auto add = [&](std::string name, std::vector<std::int64_t> shape) {
    TensorView view;
    view.name = std::move(name);
    view.dtype = DType::f32;
    view.shape = std::move(shape);
    const std::size_t bytes = static_cast<std::size_t>(view.numel()) * sizeof(float);
    view.bytes = std::span<const std::byte>(cursor, bytes);
    view.file = file_path;
    cursor += bytes;
    index_.emplace(view.name, tensors_.size());
    tensors_.push_back(std::move(view));
  };
  // One [L, ...] array in the file is L consecutive per-layer tensors.
  auto add_layers = [&](const std::string& suffix, const std::vector<std::int64_t>& shape) {
    for (std::int32_t layer = 0; layer < h.n_layers; ++layer) {
      add("blk." + std::to_string(layer) + "." + suffix, shape);
    }
  };
  add("token_embd.weight", {V, D});
  add_layers("attn_norm.weight", {D});
  add_layers("attn_q.weight", {D, D});
  add_layers("attn_k.weight", {KV, D});
  add_layers("attn_v.weight", {KV, D});
  add_layers("attn_output.weight", {D, D});
  add_layers("ffn_norm.weight", {D});
  add_layers("ffn_gate.weight", {F, D});  // w1
  add_layers("ffn_down.weight", {D, F});  // w2
  add_layers("ffn_up.weight", {F, D});    // w3
  add("output_norm.weight", {D});
  cursor += 2 * static_cast<std::size_t>(h.seq_len) * static_cast<std::size_t>(h.head_size() / 2) * sizeof(float);
  if (!h.shared_classifier) add("output.weight", {V, D});
  if (cursor != file_.data() + file_size) {
    fail(ErrorCode::internal, file_path, "llama2.c layout does not end at the end of the file");
  }
}

const TensorView* Llama2cCheckpoint::find(const std::string& name) const noexcept {
  const auto found = index_.find(name);
  return found == index_.end() ? nullptr : &tensors_[found->second];
}

std::vector<std::string> Llama2cCheckpoint::names() const {
  std::vector<std::string> result;
  result.reserve(index_.size());
  for (const auto& [name, index] : index_) result.push_back(name);
  return result;
}

Llama2cTokenizer read_llama2c_tokenizer(const std::filesystem::path& path, std::int32_t vocab_size) {
  if (vocab_size <= 0) {
    throw Error(ErrorCode::invalid_argument,
                "read_llama2c_tokenizer " + path.string() + ": vocab_size " + std::to_string(vocab_size) +
                    " must be positive");
  }
  const MappedFile file(path);
  const std::string& file_path = file.path();
  const std::byte* data = file.data();
  const std::size_t size = file.size();
  std::size_t position = 0;
  auto read_i32 = [&](std::int32_t& value) {
    if (size - position < 4) return false;
    std::memcpy(&value, data + position, 4);
    position += 4;
    return true;
  };

  Llama2cTokenizer result;
  if (!read_i32(result.max_token_length)) {
    fail(ErrorCode::format, file_path,
         "file is " + std::to_string(size) + " bytes, too short for the 4-byte max_token_length");
  }
  if (result.max_token_length <= 0) {
    fail(ErrorCode::format, file_path,
         "max_token_length " + std::to_string(result.max_token_length) + " must be positive");
  }
  // Each entry takes at least 8 bytes; never reserve more than the file holds.
  const std::size_t count = static_cast<std::size_t>(vocab_size);
  result.tokens.reserve(std::min(count, (size - position) / 8));
  result.scores.reserve(std::min(count, (size - position) / 8));
  for (std::size_t token = 0; token < count; ++token) {
    const std::size_t entry_start = position;
    std::int32_t score_bits = 0, length = 0;
    if (!read_i32(score_bits) || !read_i32(length)) {
      fail(ErrorCode::format, file_path,
           "file ends at byte " + std::to_string(entry_start) + " after " + std::to_string(token) + " of " +
               std::to_string(vocab_size) + " tokens (truncated, or vocab_size too large?)");
    }
    const std::string where = "token " + std::to_string(token) + " (at byte " + std::to_string(entry_start) + ")";
    if (length < 0) fail(ErrorCode::format, file_path, where + ": length " + std::to_string(length) + " is negative");
    if (length > result.max_token_length) {
      fail(ErrorCode::format, file_path,
           where + ": length " + std::to_string(length) + " exceeds max_token_length " +
               std::to_string(result.max_token_length));
    }
    if (static_cast<std::size_t>(length) > size - position) {
      fail(ErrorCode::format, file_path,
           where + ": " + std::to_string(length) + " bytes run past the end of the file (" +
               std::to_string(size - position) + " left; truncated?)");
    }
    float score;
    std::memcpy(&score, &score_bits, 4);
    result.scores.push_back(score);
    result.tokens.emplace_back(reinterpret_cast<const char*>(data + position), static_cast<std::size_t>(length));
    position += static_cast<std::size_t>(length);
  }
  if (position != size) {
    fail(ErrorCode::format, file_path,
         std::to_string(size - position) + " bytes follow the last of " + std::to_string(vocab_size) +
             " tokens (vocab_size too small, or not a llama2.c tokenizer?)");
  }
  return result;
}

}  // namespace skim::format

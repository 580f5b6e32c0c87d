#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "format/mapped_file.hpp"
#include "format/tensor.hpp"
#include "format/tensor_source.hpp"

namespace skim::format {

// The 7 × int32 header of a llama2.c checkpoint. `vocab_size` is the absolute
// value of the stored field; a negative stored value means a separate output
// head (wcls) follows the other weights (`shared_classifier` false).
struct Llama2cHeader {
  std::int32_t dim = 0;
  std::int32_t hidden_dim = 0;
  std::int32_t n_layers = 0;
  std::int32_t n_heads = 0;
  std::int32_t n_kv_heads = 0;
  std::int32_t vocab_size = 0;
  std::int32_t seq_len = 0;
  bool shared_classifier = true;

  std::int32_t head_size() const noexcept { return dim / n_heads; }
  std::int32_t kv_dim() const noexcept { return dim / n_heads * n_kv_heads; }
};

// A llama2.c `.bin` checkpoint (Karpathy's run.c format): the header, then
// float32 arrays token_embedding [vocab, dim], rms_att [L, dim],
// wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim],
// rms_ffn [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden],
// w3 [L, hidden, dim], rms_final [dim], freq_cis_real and freq_cis_imag
// [seq_len, head_size/2] (legacy RoPE tables, not exposed), then wcls
// [vocab, dim] unless shared. The header is checked (positive sizes, heads
// dividing dim, kv heads dividing heads, even head size) and the file size
// must equal exactly what it implies.
//
// Weights are zero-copy F32 views into the map under GGUF's llama names:
// token_embd.weight, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output,
// ffn_norm, ffn_gate (w1), ffn_down (w2), ffn_up (w3)}.weight,
// output_norm.weight, and output.weight only when the classifier is separate
// (a shared classifier is token_embd.weight, as in GGUF files without
// output.weight). Q and K are as llama2.c stores them (no row permutation).
class Llama2cCheckpoint : public TensorSource {
 public:
  explicit Llama2cCheckpoint(const std::filesystem::path& path);  // throws skim::Error
  Llama2cCheckpoint(Llama2cCheckpoint&&) = default;
  Llama2cCheckpoint& operator=(Llama2cCheckpoint&&) = default;

  const Llama2cHeader& header() const noexcept { return header_; }
  const std::string& path() const noexcept { return file_.path(); }
  const std::vector<TensorView>& tensors() const noexcept { return tensors_; }  // file order

  // TensorSource.
  const TensorView* find(const std::string& name) const noexcept override;
  std::vector<std::string> names() const override;
  const std::string& source() const noexcept override { return file_.path(); }

 private:
  MappedFile file_;
  Llama2cHeader header_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;  // name → position in tensors_
};

// A llama2.c tokenizer file (tokenizer.bin, tok512.bin): int32
// max_token_length, then vocab_size × (float32 score, int32 length, bytes).
struct Llama2cTokenizer {
  std::int32_t max_token_length = 0;
  std::vector<std::string> tokens;  // raw bytes, not necessarily UTF-8
  std::vector<float> scores;
};

// Reads exactly `vocab_size` entries (the model's vocabulary size; the file
// does not store it). Throws skim::Error(format) naming the file and token
// when a length is negative, exceeds max_token_length or runs past the end,
// when the file holds fewer entries, or when bytes follow the last entry;
// skim::Error(invalid_argument) when vocab_size is not positive.
Llama2cTokenizer read_llama2c_tokenizer(const std::filesystem::path& path, std::int32_t vocab_size);

}  // namespace skim::format

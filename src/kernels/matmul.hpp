#pragma once
// Dense linear layers on oneDNN. Callers see plain float pointers; which
// library runs the GEMM is decided here alone (see backend.hpp).
#include <cstddef>
#include <memory>
#include <optional>
#include <span>

namespace skim::kernels {

class Backend;
class Scratch;

// What the GEMM's epilogue does after y = x·Wᵀ + b, fused into the same pass.
enum class Epilogue {
  none,
  gelu_erf,          // y = gelu(x·Wᵀ + b), the exact (erf) GELU of BERT
  add_to_output,     // y += x·Wᵀ + b: the residual connection, read from y
  tanh,              // y = tanh(x·Wᵀ + b), BERT's pooler
};

// How the packed weights are stored. bf16 halves the bytes a GEMM streams
// (decoding is bound by them) and runs on AVX-512 BF16 units; activations are
// rounded to bf16 on the way in, accumulation and outputs stay f32. q8_0 is
// GGUF's Q8_0 (q8_0.hpp): about a quarter of f32's bytes, int8 arithmetic on
// activations quantized per block of 32, f32 outputs.
enum class WeightPrecision { f32, bf16, q8_0 };

// What a one-row call runs. oneDNN sums k in blocks whose size it picks per
// shape (one block up to k = 384, then 512 or 1024 here), so a row has the
// same bits alone as in a batch only if one-row calls run oneDNN too. The
// streaming kernel (gemv.hpp) sums k in one chain and streams the weights at
// about twice the rate: for decoding, where one row is the common case.
enum class OneRowPath { same_as_batch, streaming };

// y[rows, out] = epilogue(x[rows, in] · Wᵀ + b), W given as [out, in] (the
// PyTorch / Hugging Face layout). The weights are reordered once, at
// construction, into the blocked layout oneDNN prefers for this shape; the
// primitive for each row count is built once and cached (thread-safe).
// Row strides: x and y rows may be longer than in/out (ld_x, ld_y ≥ width),
// so a slice of a wider buffer (e.g. Q within QKV) is used in place.
class Linear {
 public:
  Linear(const Backend& backend, std::span<const float> weight_out_in,
         std::span<const float> bias, int in, int out, Epilogue epilogue,
         WeightPrecision precision = WeightPrecision::f32, OneRowPath one_row = OneRowPath::same_as_batch);
  // From GGUF Q8_0 data of the [out, in] matrix (in a multiple of 32), kept
  // as it is: precision() is q8_0. Where the CPU lacks AVX-512 VNNI, the
  // values are dequantized and run as f32.
  Linear(const Backend& backend, std::span<const std::byte> q8_0_blocks, std::span<const float> bias, int in,
         int out, Epilogue epilogue);
  ~Linear();
  Linear(Linear&&) noexcept;
  Linear& operator=(Linear&&) noexcept;

  void operator()(const float* x, std::size_t ld_x, float* y, std::size_t ld_y,
                  int rows, Scratch& scratch) const;
  void operator()(const float* x, float* y, int rows, Scratch& scratch) const {
    (*this)(x, static_cast<std::size_t>(in_), y, static_cast<std::size_t>(out_), rows, scratch);
  }

  // A Linear over output columns [first, first + count) that shares these
  // packed weights (no copy), e.g. the key|value part of a fused
  // query|key|value GEMM. Needs whole 64-column blocks of oneDNN's blocked
  // layout; nullopt where that does not hold (Q8_0, other layouts).
  std::optional<Linear> column_slice(int first, int count) const;

  int in_features() const noexcept { return in_; }
  int out_features() const noexcept { return out_; }
  Epilogue epilogue() const noexcept { return epilogue_; }
  WeightPrecision precision() const noexcept { return precision_; }
  // Rows the GEMM actually touches for `rows` (its row bucket): x and y
  // buffers must hold this many rows. Never more than rows + 15.
  static int padded_rows(int rows) noexcept { return rows <= 16 ? rows : (rows + 15) / 16 * 16; }
  static double flops(int rows, int in, int out) noexcept { return 2.0 * rows * in * out; }
  double flops(int rows) const noexcept { return flops(rows, in_, out_); }

  struct Impl;

 private:
  Linear(const Backend& backend, int in, int out, Epilogue epilogue, WeightPrecision precision);  // for slices
  void set_bias(std::span<const float> bias);
  void pack_for_onednn(std::span<const float> weight_out_in, OneRowPath one_row);
  int in_ = 0, out_ = 0;
  Epilogue epilogue_ = Epilogue::none;
  WeightPrecision precision_ = WeightPrecision::f32;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skim::kernels

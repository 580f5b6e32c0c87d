#pragma once
// Linear layers on GGUF's Q8_0 weights, computed in int8. Q8_0 keeps, per 32
// consecutive inputs of an output row, an fp16 scale d and 32 int8 q (value
// d·q). Each row of activations is quantized the same way at run time, so a
// block's contribution is d_w·d_x·Σ q_w·q_x: an exact integer dot product
// (AVX-512 VNNI, 64 multiply-adds an instruction) and one float FMA. That is
// the arithmetic llama.cpp uses for Q8_0; the weights stream at 1.06 bytes
// each, against 2 for bf16 and 4 for f32.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/aligned_buffer.hpp"
#include "kernels/matmul.hpp"

namespace skim::kernels {

// Activation rows quantized per block of 32 (scratch, per session).
struct Q8Activations {
  AlignedBuffer<std::int8_t> quants;     // rows × k_blocks·32
  AlignedBuffer<float> scales;           // rows × k_blocks
  AlignedBuffer<std::int32_t> offsets;   // rows × k_blocks: 128·Σq, see q8_0.cpp
};

class Q8Matrix {
 public:
  static constexpr int block = 32;                // inputs per scale
  static constexpr std::size_t block_bytes = 34;  // GGUF: fp16 scale + 32 int8

  // From GGUF Q8_0 data of an [out, in] matrix: out rows of in/32 blocks.
  static Q8Matrix from_blocks(std::span<const std::byte> blocks, int in, int out);
  // Quantizes an f32 [out, in] matrix with Q8_0's rule: d = max|w|/127 per
  // block, q = round(w/d). Inputs past `in` (in % 32 ≠ 0) are zero.
  static Q8Matrix quantize(std::span<const float> weights, int in, int out);
  // The values d·q, [out, in].
  std::vector<float> dequantize() const;
  // AVX-512 VNNI and F16C, which the kernel needs.
  static bool supported() noexcept;

  // y = epilogue(x·Wᵀ + bias) for `rows` rows (bias may be null).
  void operator()(const float* x, std::size_t ld_x, const float* bias, float* y, std::size_t ld_y, int rows,
                  Epilogue epilogue, Q8Activations& scratch, int max_threads) const;

  int in() const noexcept { return in_; }
  int out() const noexcept { return out_; }

 private:
  Q8Matrix(int in, int out);
  std::byte* tile(int column_block, int k_block) noexcept;
  const std::byte* tile(int column_block, int k_block) const noexcept;
  void set(int row, int k_block, std::uint16_t scale, const std::int8_t* quants);

  int in_ = 0, out_ = 0, k_blocks_ = 0, column_blocks_ = 0;
  AlignedBuffer<std::byte> packed_;
};

}  // namespace skim::kernels

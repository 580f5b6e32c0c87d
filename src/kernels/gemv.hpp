#pragma once
// One-row matrix-vector products over the blocked weights oneDNN's matmul
// packs, so a decoding step streams the same copy prefill uses. At one row a
// GEMM is bound by reading its weights; oneDNN's brgemm reaches about half
// the memory bandwidth there, these loops most of it.
#include <cstddef>
#include <cstdint>

#include "kernels/matmul.hpp"

namespace skim::kernels {

// Where the packed W (logically [in, out]; "BA16a64b" for f32 and
// "BA16a64b2a" for bf16 in oneDNN's terms) keeps element (k, n):
//   (n / 64) · column_block_stride + k · 64 + n % 64           (f32)
//   (n / 64) · column_block_stride + (k / 2) · 128 + (n % 64) · 2 + k % 2   (bf16)
// i.e. inside a 64-column block, k rows (or k pairs) follow each other.
struct BlockedLayout {
  int in = 0, out = 0;
  int k_block = 16;  // rows per oneDNN tile: 16 for f32, 32 (16 pairs) for bf16
  std::size_t column_block_stride = 0;  // elements between 64-column blocks
  WeightPrecision precision = WeightPrecision::f32;
  static constexpr int column_block = 64;
};

// y[0, out) = epilogue(x · W + bias) for one row x[0, in). `bias` may be null.
// `x_bf16` is scratch of at least in + 1 16-bit values, used for bf16 weights
// (the row is rounded to bf16 as the GEMM path rounds it).
struct Gemv {
  BlockedLayout layout;
  const void* weights;
  // True when this CPU has the instructions the kernel needs.
  static bool supported(WeightPrecision precision) noexcept;
  void operator()(const float* x, const float* bias, float* y, Epilogue epilogue, std::uint16_t* x_bf16,
                  int max_threads) const;
};

}  // namespace skim::kernels

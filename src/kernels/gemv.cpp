#include "kernels/gemv.hpp"

#include "kernels/epilogue.hpp"
#include "kernels/parallel.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

namespace skim::kernels {

namespace {

constexpr int kColumns = BlockedLayout::column_block;


// Sums of one 64-column block: x[0, in) against in × 64 weights stored as
// 16-row tiles of 64 floats. One FMA chain per output, in k order, as
// oneDNN's GEMM accumulates: a row's result is then the same bits whether it
// ran alone or in a batch. Four chains of 4-cycle FMAs still consume 64 bytes
// a cycle, far more than memory delivers.
__attribute__((target("avx512f"))) void column_block_f32(const float* w, const float* x, int in, float* sums) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int k = 0; k < in; ++k, w += kColumns) {  // the padded rows past `in` are never read
    const __m512 xk = _mm512_set1_ps(x[k]);
    a0 = _mm512_fmadd_ps(xk, _mm512_load_ps(w), a0);
    a1 = _mm512_fmadd_ps(xk, _mm512_load_ps(w + 16), a1);
    a2 = _mm512_fmadd_ps(xk, _mm512_load_ps(w + 32), a2);
    a3 = _mm512_fmadd_ps(xk, _mm512_load_ps(w + 48), a3);
  }
  _mm512_storeu_ps(sums, a0);
  _mm512_storeu_ps(sums + 16, a1);
  _mm512_storeu_ps(sums + 32, a2);
  _mm512_storeu_ps(sums + 48, a3);
}

// The same for bf16 tiles of 16 k-pairs × 64 columns; x_pairs holds the row
// as bf16 pairs (zero past `in`), one 32-bit pair per two k.
__attribute__((target("avx512f,avx512bf16"))) void column_block_bf16(const std::uint16_t* w,
                                                                     const std::uint32_t* x_pairs, int pairs,
                                                                     float* sums) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int p = 0; p < pairs; ++p, w += 2 * kColumns) {
    const __m512bh xp = (__m512bh)_mm512_set1_epi32(static_cast<int>(x_pairs[p]));
    a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_load_si512(w), xp);
    a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_load_si512(w + 32), xp);
    a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_load_si512(w + 64), xp);
    a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_load_si512(w + 96), xp);
  }
  _mm512_storeu_ps(sums, a0);
  _mm512_storeu_ps(sums + 16, a1);
  _mm512_storeu_ps(sums + 32, a2);
  _mm512_storeu_ps(sums + 48, a3);
}

// Round to nearest even, as the GEMM path rounds activations for bf16.
std::uint16_t to_bf16(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace

bool Gemv::supported(WeightPrecision precision) noexcept {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) return false;
  return precision == WeightPrecision::f32 || __builtin_cpu_supports("avx512bf16");
}

void Gemv::operator()(const float* x, const float* bias, float* y, Epilogue epilogue, std::uint16_t* x_bf16,
                      int max_threads) const {
  const BlockedLayout& l = layout;
  const int blocks = (l.out + kColumns - 1) / kColumns;
  const bool bf16 = l.precision == WeightPrecision::bf16;
  const int pairs = (l.in + 1) / 2;
  if (bf16) {
    for (int k = 0; k < l.in; ++k) x_bf16[k] = to_bf16(x[k]);
    if (l.in % 2) x_bf16[l.in] = 0;  // the pair's other half meets a zero-padded weight
  }
  const std::size_t bytes = static_cast<std::size_t>(l.in) * l.out * (bf16 ? 2 : 4);

  auto run = [&](int first, int last) {
    alignas(64) float sums[kColumns];
    for (int b = first; b < last; ++b) {
      if (bf16) {
        const auto* w = static_cast<const std::uint16_t*>(weights) + b * l.column_block_stride;
        column_block_bf16(w, reinterpret_cast<const std::uint32_t*>(x_bf16), pairs, sums);
      } else {
        const auto* w = static_cast<const float*>(weights) + b * l.column_block_stride;
        column_block_f32(w, x, l.in, sums);
      }
      finish_columns(sums, bias, y, b * kColumns, std::min(kColumns, l.out - b * kColumns), epilogue);
    }
  };
  parallel_ranges(blocks, bytes, max_threads, run);
}

}  // namespace skim::kernels

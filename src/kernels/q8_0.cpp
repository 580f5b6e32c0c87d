#include "kernels/q8_0.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/epilogue.hpp"
#include "kernels/parallel.hpp"

namespace skim::kernels {

// Packed layout, for AVX-512 VNNI. Columns go in blocks of 64 and, inside a
// column block, the 32-input blocks follow each other, so one column block is
// one contiguous stream. Each (column block, k block) tile holds
//   64 fp16 scales, then 32 × 64 weights as [k / 4][column][k % 4],
// so one 64-byte load is 4 consecutive k of 16 columns: what vpdpbusd
// multiplies against 4 broadcast activations. vpdpbusd wants one unsigned
// operand, so weights are stored as q + 128 (a byte) and the excess,
// 128·Σq_x per activation block, is subtracted once per block.
// Padding columns have scale 0; padding k have q = 0, as padding activations.

namespace {

constexpr int kColumns = 64;
constexpr std::size_t kScaleBytes = kColumns * 2;
constexpr std::size_t kTileBytes = kScaleBytes + Q8Matrix::block * kColumns;

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF, bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal half: normalise
    int shift = 0;
    while (!(mantissa & 0x400)) mantissa <<= 1, ++shift;
    bits = sign | (static_cast<std::uint32_t>(113 - shift) << 23) | ((mantissa & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; finite inputs only (scales are max|w|/127).
std::uint16_t float_to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000);
  const float a = std::fabs(f);
  if (a >= 65520.f) return sign | 0x7C00;  // overflows to infinity
  if (a < 6.103515625e-05f) {                // subnormal half: multiples of 2^-24
    return sign | static_cast<std::uint16_t>(std::nearbyint(a * 16777216.f));
  }
  std::uint32_t bits = x & 0x7FFFFFFF;
  bits += 0xFFF + ((bits >> 13) & 1);  // round the 13 dropped bits to even
  return sign | static_cast<std::uint16_t>(((bits >> 13) - (112u << 10)));
}

// Q8_0's rule (llama.cpp's reference quantizer): d = max|v|/127, q = round(v/d).
std::uint16_t quantize_block(const float* values, int count, std::int8_t* quants) {
  float amax = 0;
  for (int i = 0; i < count; ++i) amax = std::max(amax, std::fabs(values[i]));
  const float d = amax / 127.f, inverse = d != 0.f ? 1.f / d : 0.f;
  for (int i = 0; i < Q8Matrix::block; ++i)
    quants[i] = i < count ? static_cast<std::int8_t>(std::round(values[i] * inverse)) : 0;
  return float_to_half(d);
}

// One activation row, per block of 32: scale d = max|x|/127, q = x/d rounded
// to nearest (ties to even: this is skim's own rounding, not a file format),
// and the excess 128·Σq that the unsigned weight bytes add (see above).
__attribute__((target("avx512f,avx512bw"))) void quantize_row(const float* x, int in, int k_blocks,
                                                              std::int8_t* quants, float* scales,
                                                              std::int32_t* offsets) {
  const __m512 sign_bit = _mm512_set1_ps(-0.f);
  for (int kb = 0; kb < k_blocks; ++kb) {
    const int first = kb * Q8Matrix::block, count = std::min(Q8Matrix::block, in - first);
    // Masked loads read zeros past `in`.
    const __mmask16 lo = count >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << count) - 1);
    const __mmask16 hi = count >= 32 ? 0xFFFF : count <= 16 ? 0 : static_cast<__mmask16>((1u << (count - 16)) - 1);
    const __m512 a = _mm512_maskz_loadu_ps(lo, x + first), b = _mm512_maskz_loadu_ps(hi, x + first + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign_bit, a), _mm512_andnot_ps(sign_bit, b)));
    const float d = amax / 127.f, inverse = d != 0.f ? 1.f / d : 0.f;
    const __m512 scale = _mm512_set1_ps(inverse);
    const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, scale));  // rounds to nearest even
    const __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, scale));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(quants + first), _mm512_cvtsepi32_epi8(qa));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(quants + first + 16), _mm512_cvtsepi32_epi8(qb));
    scales[kb] = d;
    offsets[kb] = 128 * _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
  }
}

// Sums of R activation rows against one column block, all k blocks.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vnni,f16c"))) void column_block(
    const std::byte* tiles, int k_blocks, const std::int8_t* const* quants, const float* const* scales,
    const std::int32_t* const* offsets, float (*sums)[kColumns]) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < 4; ++g) acc[r][g] = _mm512_setzero_ps();
  for (int kb = 0; kb < k_blocks; ++kb, tiles += kTileBytes) {
    __m512i dot[R][4];
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < 4; ++g) dot[r][g] = _mm512_setzero_si512();
    const std::byte* w = tiles + kScaleBytes;
    for (int quad = 0; quad < Q8Matrix::block / 4; ++quad, w += 4 * kColumns) {
      __m512i wq[4];
      for (int g = 0; g < 4; ++g) wq[g] = _mm512_load_si512(w + g * 64);
      for (int r = 0; r < R; ++r) {
        std::int32_t four;
        std::memcpy(&four, quants[r] + kb * Q8Matrix::block + quad * 4, 4);
        const __m512i xq = _mm512_set1_epi32(four);
        for (int g = 0; g < 4; ++g) dot[r][g] = _mm512_dpbusd_epi32(dot[r][g], wq[g], xq);
      }
    }
    __m512 wd[4];
    for (int g = 0; g < 4; ++g)
      wd[g] = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(tiles + g * 32)));
    for (int r = 0; r < R; ++r) {
      const __m512i excess = _mm512_set1_epi32(offsets[r][kb]);
      const __m512 dx = _mm512_set1_ps(scales[r][kb]);
      for (int g = 0; g < 4; ++g)
        acc[r][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(dot[r][g], excess)),
                                    _mm512_mul_ps(wd[g], dx), acc[r][g]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < 4; ++g) _mm512_storeu_ps(sums[r] + 16 * g, acc[r][g]);
}

}  // namespace

Q8Matrix::Q8Matrix(int in, int out)
    : in_(in), out_(out), k_blocks_((in + block - 1) / block), column_blocks_((out + kColumns - 1) / kColumns) {
  packed_.resize_for_streaming(static_cast<std::size_t>(column_blocks_) * k_blocks_ * kTileBytes);
  // Every weight byte starts as q = 0 (stored 128); scales start at 0.
  for (int cb = 0; cb < column_blocks_; ++cb)
    for (int kb = 0; kb < k_blocks_; ++kb) std::memset(tile(cb, kb) + kScaleBytes, 128, block * kColumns);
}

std::byte* Q8Matrix::tile(int column_block, int k_block) noexcept {
  return packed_.data() + (static_cast<std::size_t>(column_block) * k_blocks_ + k_block) * kTileBytes;
}
const std::byte* Q8Matrix::tile(int column_block, int k_block) const noexcept {
  return packed_.data() + (static_cast<std::size_t>(column_block) * k_blocks_ + k_block) * kTileBytes;
}

void Q8Matrix::set(int row, int k_block, std::uint16_t scale, const std::int8_t* quants) {
  std::byte* t = tile(row / kColumns, k_block);
  const int column = row % kColumns;
  std::memcpy(t + 2 * column, &scale, 2);
  for (int k = 0; k < block; ++k)
    t[kScaleBytes + (k / 4) * 4 * kColumns + column * 4 + k % 4] =
        static_cast<std::byte>(static_cast<std::uint8_t>(quants[k] + 128));
}

Q8Matrix Q8Matrix::from_blocks(std::span<const std::byte> blocks, int in, int out) {
  Q8Matrix m(in, out);
  // GGUF stores whole blocks per row; the caller has checked the byte count.
  const int per_row = in / block;
  for (int n = 0; n < out; ++n)
    for (int kb = 0; kb < per_row; ++kb) {
      const std::byte* b = blocks.data() + (static_cast<std::size_t>(n) * per_row + kb) * block_bytes;
      std::uint16_t scale;
      std::memcpy(&scale, b, 2);
      m.set(n, kb, scale, reinterpret_cast<const std::int8_t*>(b + 2));
    }
  return m;
}

Q8Matrix Q8Matrix::quantize(std::span<const float> weights, int in, int out) {
  Q8Matrix m(in, out);
  std::int8_t quants[block];
  for (int n = 0; n < out; ++n)
    for (int kb = 0; kb < m.k_blocks_; ++kb) {
      const int first = kb * block, count = std::min(block, in - first);
      const std::uint16_t scale = quantize_block(weights.data() + static_cast<std::size_t>(n) * in + first, count, quants);
      m.set(n, kb, scale, quants);
    }
  return m;
}

std::vector<float> Q8Matrix::dequantize() const {
  std::vector<float> values(static_cast<std::size_t>(in_) * out_);
  for (int n = 0; n < out_; ++n)
    for (int k = 0; k < in_; ++k) {
      const std::byte* t = tile(n / kColumns, k / block);
      std::uint16_t scale;
      std::memcpy(&scale, t + 2 * (n % kColumns), 2);
      const int kk = k % block;
      const auto stored = static_cast<std::uint8_t>(t[kScaleBytes + (kk / 4) * 4 * kColumns + (n % kColumns) * 4 + kk % 4]);
      values[static_cast<std::size_t>(n) * in_ + k] = half_to_float(scale) * static_cast<float>(int(stored) - 128);
    }
  return values;
}

bool Q8Matrix::supported() noexcept {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c");
}

void Q8Matrix::operator()(const float* x, std::size_t ld_x, const float* bias, float* y, std::size_t ld_y, int rows,
                          Epilogue epilogue, Q8Activations& scratch, int max_threads) const {
  if (rows <= 0) return;
  const std::size_t padded_in = static_cast<std::size_t>(k_blocks_) * block;
  scratch.quants.reserve(rows * padded_in);
  scratch.scales.reserve(static_cast<std::size_t>(rows) * k_blocks_);
  scratch.offsets.reserve(static_cast<std::size_t>(rows) * k_blocks_);
  std::int8_t* quants = scratch.quants.data();
  float* scales = scratch.scales.data();
  std::int32_t* offsets = scratch.offsets.data();
#pragma omp parallel for schedule(static) num_threads(std::max(1, max_threads)) if (rows > 8)
  for (int r = 0; r < rows; ++r)
    quantize_row(x + r * ld_x, in_, k_blocks_, quants + r * padded_in, scales + r * k_blocks_,
                 offsets + r * k_blocks_);

  // Each pass over the weights serves two rows.
  const std::size_t bytes = packed_.size() * static_cast<std::size_t>((rows + 1) / 2);
  auto run = [&](int first_block, int last_block) {
    alignas(64) float sums[2][kColumns];
    for (int cb = first_block; cb < last_block; ++cb) {
      const std::byte* tiles = tile(cb, 0);
      const int columns = std::min(kColumns, out_ - cb * kColumns);
      for (int r = 0; r < rows;) {
        const int take = rows - r >= 2 ? 2 : 1;
        const std::int8_t* q[2] = {quants + r * padded_in, quants + (r + take - 1) * padded_in};
        const float* s[2] = {scales + r * k_blocks_, scales + (r + take - 1) * k_blocks_};
        const std::int32_t* o[2] = {offsets + r * k_blocks_, offsets + (r + take - 1) * k_blocks_};
        if (take == 2)
          column_block<2>(tiles, k_blocks_, q, s, o, sums);
        else
          column_block<1>(tiles, k_blocks_, q, s, o, sums);
        for (int i = 0; i < take; ++i)
          finish_columns(sums[i], bias, y + (r + i) * ld_y, cb * kColumns, columns, epilogue);
        r += take;
      }
    }
  };
  parallel_ranges(column_blocks_, bytes, max_threads, run);
}

}  // namespace skim::kernels

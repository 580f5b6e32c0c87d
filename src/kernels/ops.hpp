#pragma once
// Row-wise kernels around the GEMMs (Eigen inside, plain pointers outside).
// A "row" is one token's vector; buffers are row-major with a leading
// dimension (ld) ≥ the row width, so slices of wider buffers work in place.
#include <cstddef>
#include <cstdint>
#include <span>

namespace skim::kernels {

// x = γ ⊙ (x − mean) / sqrt(var + eps) + β, per row, in place.
struct LayerNorm {
  const float* gamma;
  const float* beta;
  int width;
  float eps;
  void operator()(float* x, std::size_t ld, int rows) const;
};

// Softmax over a vector, in place (max-subtracted, so it never overflows).
void softmax(std::span<float> values);

// One attention problem: `q_count` query rows starting at q_begin attend to
// the `kv_count` key/value rows starting at kv_begin. A sequence is one
// segment; keys of other sequences are never seen, which is the padding mask
// without the padding (sequences are packed back to back).
struct AttentionSegment {
  int q_begin = 0, q_count = 0;
  int kv_begin = 0, kv_count = 0;
};

// Multi-head scaled dot-product attention over packed segments.
// q, k, v: rows with heads × head_dim columns each (ld_q / ld_kv apart);
// out: context rows aligned with the query rows.
struct Attention {
  int heads;
  int head_dim;
  float scale;  // usually 1/sqrt(head_dim)
  // scratch: scratch_floats(max_q, max_kv, threads) floats.
  void operator()(const float* q, std::size_t ld_q, const float* k, const float* v, std::size_t ld_kv,
                  float* out, std::size_t ld_out, std::span<const AttentionSegment> segments,
                  float* scratch, int max_threads) const;
  static std::size_t scratch_floats(int max_q, int max_kv, int threads) {
    return static_cast<std::size_t>(max_q) * max_kv * threads;
  }
};

// dst[i] = src[rows[i]] for each i (row width `width`).
void gather_rows(const float* src, std::size_t ld_src, std::span<const std::int32_t> rows, float* dst,
                 std::size_t ld_dst, int width);
// dst[rows[i]] = src[i] for each i.
void scatter_rows(const float* src, std::size_t ld_src, std::span<const std::int32_t> rows, float* dst,
                  std::size_t ld_dst, int width);

}  // namespace skim::kernels

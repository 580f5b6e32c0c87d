#pragma once
// Row-wise kernels around the GEMMs (Eigen inside, plain pointers outside).
// A "row" is one token's vector; buffers are row-major with a leading
// dimension (ld) ≥ the row width, so slices of wider buffers work in place.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

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
// without the padding (sequences are packed back to back). For causal
// attention, query i sits at position q_position + i of the key range and
// sees keys 0..q_position + i only.
struct AttentionSegment {
  int q_begin = 0, q_count = 0;
  int kv_begin = 0, kv_count = 0;
  int q_position = 0;
};

// Multi-head scaled dot-product attention over packed segments.
// q: rows of heads × head_dim; k, v: rows of kv_heads × head_dim (grouped-
// query attention: query head h reads key/value head h / (heads / kv_heads));
// out: context rows aligned with the query rows.
struct Attention {
  int heads;
  int head_dim;
  float scale;  // usually 1/sqrt(head_dim)
  int kv_heads = 0;     // 0: same as heads
  bool causal = false;
  // scratch: scratch_floats(max_q, max_kv, threads) floats, 64-byte aligned.
  void operator()(const float* q, std::size_t ld_q, const float* k, const float* v, std::size_t ld_kv,
                  float* out, std::size_t ld_out, std::span<const AttentionSegment> segments,
                  float* scratch, int max_threads) const;
  // One slot per thread, each a whole number of 64-byte lines: Eigen's
  // vectorised sums peel by address, so a head must see the same alignment
  // whichever thread runs it, or results would depend on the schedule.
  static std::size_t slot_floats(int max_q, int max_kv) {
    return (static_cast<std::size_t>(max_q) * max_kv + 15) / 16 * 16;
  }
  static std::size_t scratch_floats(int max_q, int max_kv, int threads) {
    return slot_floats(max_q, max_kv) * threads;
  }
};

// dst[i] = src[rows[i]] for each i (row width `width`).
void gather_rows(const float* src, std::size_t ld_src, std::span<const std::int32_t> rows, float* dst,
                 std::size_t ld_dst, int width);
// dst[rows[i]] = src[i] for each i.
void scatter_rows(const float* src, std::size_t ld_src, std::span<const std::int32_t> rows, float* dst,
                  std::size_t ld_dst, int width);

}  // namespace skim::kernels

namespace skim::kernels {

// y = x / sqrt(mean(x²) + eps) ⊙ w, per row (LLaMA's pre-norm; x is kept
// for the residual, so the output goes elsewhere).
struct RmsNorm {
  const float* weight;
  int width;
  float eps;
  void operator()(const float* x, std::size_t ld_x, float* y, std::size_t ld_y, int rows) const;
};

// Rotary position embedding, in place on the first `heads` head slices of
// each row. Two conventions pair the dimensions differently:
//  adjacent_pairs: (x0,x1), (x2,x3), ...   llama2.c and GGUF "llama"
//  halves:         (x0,x_{d/2}), ...       Hugging Face LLaMA checkpoints
enum class RopeStyle { adjacent_pairs, halves };
struct Rope {
  const float* cos_sin;  // [max_position][head_dim/2][2], see make_table
  int head_dim;
  RopeStyle style;
  // Row r is at position positions[r].
  void operator()(float* x, std::size_t ld, int rows, int heads, const std::int32_t* positions) const;
  // cos and sin of position · theta^(−2j/head_dim) for j < head_dim/2.
  static std::vector<float> make_table(int max_position, int head_dim, float theta);
};

// out = silu(gate) ⊙ up, where each row of gate_up holds [gate | up] (width
// `hidden` each): the SwiGLU feed-forward's elementwise middle.
void swiglu(const float* gate_up, std::size_t ld_in, float* out, std::size_t ld_out, int rows, int hidden);

}  // namespace skim::kernels

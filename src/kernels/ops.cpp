#include "kernels/ops.hpp"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>

namespace skim::kernels {

namespace {
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Stride<Eigen::Dynamic, 1>;
using ConstRows = Eigen::Map<const RowMajor, Eigen::Unaligned, Strided>;
using Rows = Eigen::Map<RowMajor, Eigen::Unaligned, Strided>;
using Vector = Eigen::Map<Eigen::ArrayXf>;
using ConstVector = Eigen::Map<const Eigen::ArrayXf>;
}  // namespace

void LayerNorm::operator()(float* x, std::size_t ld, int rows) const {
  ConstVector g(gamma, width), b(beta, width);
#pragma omp parallel for schedule(static) if (rows > 8)
  for (int r = 0; r < rows; ++r) {
    Vector row(x + static_cast<std::size_t>(r) * ld, width);
    const float mean = row.mean();
    row -= mean;
    const float var = row.square().mean();
    row = row * (1.f / std::sqrt(var + eps)) * g + b;
  }
}

void softmax(std::span<float> values) {
  Vector v(values.data(), static_cast<Eigen::Index>(values.size()));
  v = (v - v.maxCoeff()).exp();
  v /= v.sum();
}

void Attention::operator()(const float* q, std::size_t ld_q, const float* k, const float* v,
                           std::size_t ld_kv, float* out, std::size_t ld_out,
                           std::span<const AttentionSegment> segments, float* scratch,
                           int max_threads) const {
  const int problems = static_cast<int>(segments.size()) * heads;
  const int group = heads / (kv_heads > 0 ? kv_heads : heads);
  int max_q = 0, max_kv = 0;
  for (const auto& s : segments) {
    max_q = std::max(max_q, s.q_count);
    max_kv = std::max(max_kv, s.kv_count);
  }
  const std::size_t per_thread = slot_floats(max_q, max_kv);
  // The team follows the caller's thread setting (omp_get_max_threads), at
  // most one thread per problem and per scratch slot; a decoding step over a
  // short context is not worth waking a team for.
  double work = 0;
  for (const auto& s : segments) work += double(s.q_count) * s.kv_count * head_dim * heads;
  const int team = work < 32768 ? 1 : std::min({omp_get_max_threads(), max_threads, std::max(problems, 1)});
#pragma omp parallel for schedule(dynamic) num_threads(team) if (team > 1)
  for (int p = 0; p < problems; ++p) {
    const auto& seg = segments[p / heads];
    const int h = p % heads;
    if (seg.q_count == 0 || seg.kv_count == 0) continue;
    const std::size_t q_col = static_cast<std::size_t>(h) * head_dim;
    const std::size_t kv_col = static_cast<std::size_t>(h / group) * head_dim;
    // Causal: the last query sees keys up to its position; later keys are
    // never touched.
    const int kv_used = causal ? std::min(seg.kv_count, seg.q_position + seg.q_count) : seg.kv_count;
    ConstRows qh(q + seg.q_begin * ld_q + q_col, seg.q_count, head_dim, Strided(ld_q, 1));
    ConstRows kh(k + seg.kv_begin * ld_kv + kv_col, kv_used, head_dim, Strided(ld_kv, 1));
    ConstRows vh(v + seg.kv_begin * ld_kv + kv_col, kv_used, head_dim, Strided(ld_kv, 1));
    Rows oh(out + seg.q_begin * ld_out + q_col, seg.q_count, head_dim, Strided(ld_out, 1));
    Eigen::Map<RowMajor> scores(scratch + per_thread * omp_get_thread_num(), seg.q_count, kv_used);
    scores.noalias() = (qh * kh.transpose()) * scale;
    for (int r = 0; r < seg.q_count; ++r) {
      float* row = scores.data() + static_cast<std::size_t>(r) * kv_used;
      int visible = kv_used;
      if (causal) {
        visible = std::min(kv_used, seg.q_position + r + 1);
        std::fill(row + visible, row + kv_used, 0.f);
      }
      softmax({row, static_cast<std::size_t>(visible)});
    }
    oh.noalias() = scores * vh;
  }
}

void gather_rows(const float* src, std::size_t ld_src, std::span<const std::int32_t> rows, float* dst,
                 std::size_t ld_dst, int width) {
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::memcpy(dst + i * ld_dst, src + static_cast<std::size_t>(rows[i]) * ld_src, sizeof(float) * width);
}

void scatter_rows(const float* src, std::size_t ld_src, std::span<const std::int32_t> rows, float* dst,
                  std::size_t ld_dst, int width) {
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::memcpy(dst + static_cast<std::size_t>(rows[i]) * ld_dst, src + i * ld_src, sizeof(float) * width);
}

}  // namespace skim::kernels

namespace skim::kernels {

void RmsNorm::operator()(const float* x, std::size_t ld_x, float* y, std::size_t ld_y, int rows) const {
  Eigen::Map<const Eigen::ArrayXf> w(weight, width);
#pragma omp parallel for schedule(static) if (rows > 8)
  for (int r = 0; r < rows; ++r) {
    Eigen::Map<const Eigen::ArrayXf> in(x + static_cast<std::size_t>(r) * ld_x, width);
    Eigen::Map<Eigen::ArrayXf> out(y + static_cast<std::size_t>(r) * ld_y, width);
    const float inv = 1.f / std::sqrt(in.square().mean() + eps);
    out = in * inv * w;
  }
}

std::vector<float> Rope::make_table(int max_position, int head_dim, float theta) {
  const int half = head_dim / 2;
  std::vector<float> table(static_cast<std::size_t>(max_position) * half * 2);
  for (int p = 0; p < max_position; ++p)
    for (int j = 0; j < half; ++j) {
      // In float, as the reference implementations compute it, so angles
      // agree to the last bit at long positions.
      const float freq = 1.f / std::pow(theta, static_cast<float>(2 * j) / static_cast<float>(head_dim));
      const float angle = static_cast<float>(p) * freq;
      table[(static_cast<std::size_t>(p) * half + j) * 2] = std::cos(angle);
      table[(static_cast<std::size_t>(p) * half + j) * 2 + 1] = std::sin(angle);
    }
  return table;
}

void Rope::operator()(float* x, std::size_t ld, int rows, int heads, const std::int32_t* positions) const {
  const int half = head_dim / 2;
  for (int r = 0; r < rows; ++r) {
    const float* cs = cos_sin + static_cast<std::size_t>(positions[r]) * half * 2;
    for (int h = 0; h < heads; ++h) {
      float* v = x + static_cast<std::size_t>(r) * ld + static_cast<std::size_t>(h) * head_dim;
      for (int j = 0; j < half; ++j) {
        const int a = style == RopeStyle::adjacent_pairs ? 2 * j : j;
        const int b = style == RopeStyle::adjacent_pairs ? 2 * j + 1 : j + half;
        const float c = cs[2 * j], s = cs[2 * j + 1];
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
  }
}

void swiglu(const float* gate_up, std::size_t ld_in, float* out, std::size_t ld_out, int rows, int hidden) {
#pragma omp parallel for schedule(static) if (rows > 8)
  for (int r = 0; r < rows; ++r) {
    Eigen::Map<const Eigen::ArrayXf> gate(gate_up + static_cast<std::size_t>(r) * ld_in, hidden);
    Eigen::Map<const Eigen::ArrayXf> up(gate_up + static_cast<std::size_t>(r) * ld_in + hidden, hidden);
    Eigen::Map<Eigen::ArrayXf> o(out + static_cast<std::size_t>(r) * ld_out, hidden);
    o = gate / (1.f + (-gate).exp()) * up;
  }
}

}  // namespace skim::kernels

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
  int max_q = 0, max_kv = 0;
  for (const auto& s : segments) {
    max_q = std::max(max_q, s.q_count);
    max_kv = std::max(max_kv, s.kv_count);
  }
  const std::size_t per_thread = static_cast<std::size_t>(max_q) * max_kv;
#pragma omp parallel for schedule(dynamic) num_threads(std::min(max_threads, std::max(problems, 1)))
  for (int p = 0; p < problems; ++p) {
    const auto& seg = segments[p / heads];
    const int h = p % heads;
    if (seg.q_count == 0 || seg.kv_count == 0) continue;
    const std::size_t col = static_cast<std::size_t>(h) * head_dim;
    ConstRows qh(q + seg.q_begin * ld_q + col, seg.q_count, head_dim, Strided(ld_q, 1));
    ConstRows kh(k + seg.kv_begin * ld_kv + col, seg.kv_count, head_dim, Strided(ld_kv, 1));
    ConstRows vh(v + seg.kv_begin * ld_kv + col, seg.kv_count, head_dim, Strided(ld_kv, 1));
    Rows oh(out + seg.q_begin * ld_out + col, seg.q_count, head_dim, Strided(ld_out, 1));
    Eigen::Map<RowMajor> scores(scratch + per_thread * omp_get_thread_num(), seg.q_count, seg.kv_count);
    scores.noalias() = (qh * kh.transpose()) * scale;
    for (int r = 0; r < seg.q_count; ++r) softmax({scores.data() + r * seg.kv_count, static_cast<std::size_t>(seg.kv_count)});
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

#include "execute/acm/ffn_learners.hpp"

#include <algorithm>
#include <string>

#include "kernels/ops.hpp"
#include "skim/error.hpp"

namespace skim::execute::acm {

using kernels::Epilogue;
using kernels::Linear;

FfnLearners::FfnLearners(const kernels::Backend& backend, Activation activation, std::span<const float> up,
                         std::span<const float> up_bias, std::span<const float> down,
                         std::span<const float> down_bias, int hidden, int ffn, std::span<const int> order,
                         int learners, kernels::WeightPrecision precision)
    : activation_(activation), hidden_(hidden) {
  const std::size_t H = hidden, F = ffn, up_rows = activation == Activation::swiglu ? 2 * F : F;
  if (learners < 1 || learners > ffn)
    throw Error(ErrorCode::invalid_argument, "ACM: " + std::to_string(learners) + " learners for an FFN of width " +
                                                 std::to_string(ffn) + " (need 1 to " + std::to_string(ffn) + ")");
  if (up.size() != up_rows * H || down.size() != H * F || order.size() != F ||
      (!up_bias.empty() && up_bias.size() != F) || (!down_bias.empty() && down_bias.size() != H))
    throw Error(ErrorCode::model, "ACM: FFN weights or neuron order do not match hidden " + std::to_string(hidden) +
                                      " × width " + std::to_string(ffn));
  std::vector<char> seen(F, 0);
  for (int n : order) {
    if (n < 0 || n >= ffn || seen[n]) throw Error(ErrorCode::model, "ACM: the neuron order is not a permutation");
    seen[n] = 1;
  }
  int first = 0;
  for (int g = 0; g < learners; ++g) {
    const int width = static_cast<int>((F * (g + 1)) / learners) - first;
    // This group's neurons, contiguous: up rows (gate rows, then up rows for
    // SwiGLU), their biases, and the matching columns of down.
    std::vector<float> up_w, up_b, down_w(H * width), down_b;
    for (int part = 0; part < (activation == Activation::swiglu ? 2 : 1); ++part)
      for (int j = 0; j < width; ++j) {
        const std::size_t neuron = order[first + j] + part * F;
        up_w.insert(up_w.end(), up.begin() + neuron * H, up.begin() + (neuron + 1) * H);
        if (!up_bias.empty()) up_b.push_back(up_bias[order[first + j]]);
      }
    for (std::size_t o = 0; o < H; ++o)
      for (int j = 0; j < width; ++j) down_w[o * width + j] = down[o * F + order[first + j]];
    if (g == 0) down_b.assign(down_bias.begin(), down_bias.end());
    add_group(backend, up_w, up_b, down_w, down_b, width, precision);
    first += width;
  }
}

int FfnLearners::prefix_width(int learners) const noexcept {
  int width = 0;
  for (int g = 0; g < learners && g < this->learners(); ++g) width += groups_[g].width;
  return width;
}

void FfnLearners::set_refit(const kernels::Backend& backend, std::span<const std::vector<float>> downs,
                            kernels::WeightPrecision precision) {
  const int N = learners();
  if (static_cast<int>(downs.size()) != N - 1)
    throw Error(ErrorCode::model, "ACM: a refit needs " + std::to_string(N - 1) + " down projections, one per prefix of " +
                                      std::to_string(N) + " learners, not " + std::to_string(downs.size()));
  std::vector<Linear> refit;
  for (int k = 1; k < N; ++k) {
    const int width = prefix_width(k);
    if (downs[k - 1].size() != static_cast<std::size_t>(hidden_) * width)
      throw Error(ErrorCode::model, "ACM: the refitted down projection of " + std::to_string(k) + " learners needs " +
                                        std::to_string(hidden_) + " × " + std::to_string(width) + " values");
    refit.emplace_back(backend, downs[k - 1], std::span<const float>{}, width, hidden_, Epilogue::none, precision);
  }
  refit_ = std::move(refit);
}

FfnLearners::FfnLearners(const kernels::Backend& backend, Activation activation, std::span<const FfnWeights> learners,
                         int hidden, kernels::WeightPrecision precision)
    : activation_(activation), hidden_(hidden) {
  if (learners.empty()) throw Error(ErrorCode::invalid_argument, "ACM: no learners");
  const std::size_t H = hidden, parts = activation == Activation::swiglu ? 2 : 1;
  for (std::size_t i = 0; i < learners.size(); ++i) {
    const FfnWeights& w = learners[i];
    const std::size_t width = H == 0 ? 0 : w.down.size() / H;
    if (width == 0 || w.down.size() != H * width || w.up.size() != parts * width * H ||
        (!w.up_bias.empty() && w.up_bias.size() != width) || (!w.down_bias.empty() && w.down_bias.size() != H))
      throw Error(ErrorCode::model, "ACM: learner " + std::to_string(i) + "'s weights (up " + std::to_string(w.up.size()) +
                                        ", up bias " + std::to_string(w.up_bias.size()) + ", down " +
                                        std::to_string(w.down.size()) + ", down bias " + std::to_string(w.down_bias.size()) +
                                        " values) do not make an FFN of hidden size " + std::to_string(hidden));
    add_group(backend, w.up, w.up_bias, w.down, w.down_bias, static_cast<int>(width), precision);
  }
}

void FfnLearners::add_group(const kernels::Backend& backend, std::span<const float> up, std::span<const float> up_bias,
                            std::span<const float> down, std::span<const float> down_bias, int width,
                            kernels::WeightPrecision precision) {
  const int up_out = activation_ == Activation::swiglu ? 2 * width : width;
  groups_.push_back(Group{width,
                          Linear(backend, up, up_bias, hidden_, up_out,
                                 activation_ == Activation::gelu ? Epilogue::gelu_erf : Epilogue::none, precision),
                          Linear(backend, down, down_bias, width, hidden_, Epilogue::add_to_output, precision)});
}

std::size_t FfnLearners::scratch_floats(int rows) const noexcept {
  int widest = 0;
  for (const auto& g : groups_) widest = std::max(widest, g.width);
  const std::size_t padded = Linear::padded_rows(rows);
  // Without a refit: a learner's up output (2·width for SwiGLU) and its
  // gated activations. With one: every learner's activations, then a
  // learner's up output, or a segment's gathered activations (at most
  // N − 1 learners wide) and its refitted output.
  if (refit_.empty()) return padded * widest * 3;
  return padded * (ffn_width() + std::max(2 * widest, prefix_width(learners() - 1) + hidden_));
}

void FfnLearners::activations(const float* x, float* act, std::span<const int> rows_for, kernels::Scratch& scratch,
                              float* hidden_buffer) const {
  for (std::size_t g = 0, first = 0; g < groups_.size(); first += groups_[g].width, ++g) {
    const int rows = rows_for[g];
    const Group& group = groups_[g];
    if (rows <= 0) continue;
    float* block = act + activation_offset(static_cast<int>(first), rows_for[0]);
    if (activation_ == Activation::gelu) {
      group.up(x, block, rows, scratch);
    } else {
      group.up(x, hidden_buffer, rows, scratch);
      kernels::swiglu(hidden_buffer, 2 * group.width, block, group.width, rows, group.width);
    }
  }
}

FlopCount FfnLearners::operator()(const float* x, float* y, std::span<const int> rows_for, kernels::Scratch& scratch,
                                  float* hidden_buffer) const {
  if (rows_for.size() != groups_.size())
    throw Error(ErrorCode::internal, "ACM: one row count per learner expected");
  FlopCount flops;
  flops.executed = this->flops(rows_for);
  if (!refit_.empty()) {
    refit_forward(x, y, rows_for, scratch, hidden_buffer);
    return flops;
  }
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    const int rows = rows_for[g];
    const Group& group = groups_[g];
    if (rows <= 0) continue;
    if (activation_ == Activation::gelu) {
      group.up(x, hidden_buffer, rows, scratch);
      group.down(hidden_buffer, y, rows, scratch);
    } else {
      float* gated = hidden_buffer + static_cast<std::size_t>(Linear::padded_rows(rows)) * 2 * group.width;
      group.up(x, hidden_buffer, rows, scratch);
      kernels::swiglu(hidden_buffer, 2 * group.width, gated, group.width, rows, group.width);
      group.down(gated, y, rows, scratch);
    }
  }
  return flops;
}

void FfnLearners::refit_forward(const float* x, float* y, std::span<const int> rows_for, kernels::Scratch& scratch,
                                float* hidden_buffer) const {
  const int N = learners(), H = hidden_, rows = rows_for[0];
  float* act = hidden_buffer;
  float* work = hidden_buffer + activation_offset(ffn_width(), rows);
  activations(x, act, rows_for, scratch, work);
  auto block = [&](int g, int first, int row) {
    return act + activation_offset(first, rows) + static_cast<std::size_t>(row) * groups_[g].width;
  };
  // Rows [0, rows_for[N−1]) ran every learner: the FFN itself, each
  // learner's own down projection (it starts at row 0, so a padded row
  // bucket only reaches rows past the last real one).
  if (const int all = rows_for[N - 1]; all > 0)
    for (int g = 0, first = 0; g < N; first += groups_[g].width, ++g) groups_[g].down(block(g, first, 0), y, all, scratch);
  // Rows [rows_for[k], rows_for[k−1]) ran exactly k learners: their rows of
  // the k blocks side by side, one GEMM with prefix k's refit into `out`
  // (a bucket from a middle row of y would spill into the next rows), added.
  float* gathered = work;
  float* out = work + activation_offset(prefix_width(N - 1), rows);
  for (int k = N - 1; k >= 1; --k) {
    const int begin = rows_for[k], count = rows_for[k - 1] - begin;
    if (count <= 0) continue;
    const std::size_t width = refit_[k - 1].in_features();
    for (int r = 0; r < count; ++r)
      for (int g = 0, first = 0; g < k; first += groups_[g].width, ++g)
        std::copy_n(block(g, first, begin + r), groups_[g].width, gathered + r * width + first);
    refit_[k - 1](gathered, out, count, scratch);
    const std::size_t n = static_cast<std::size_t>(count) * H;
    float* dst = y + static_cast<std::size_t>(begin) * H;
    for (std::size_t i = 0; i < n; ++i) dst[i] += out[i];
  }
}

void FfnLearners::next_prefix(const float* x, float* y, int rows, int k, std::span<int> rows_for,
                              kernels::Scratch& scratch, float* hidden_buffer) const {
  std::fill(rows_for.begin(), rows_for.end(), 0);
  if (refit()) {
    std::fill(y, y + static_cast<std::size_t>(rows) * hidden_, 0.f);
    std::fill(rows_for.begin(), rows_for.begin() + k + 1, rows);
  } else {
    rows_for[k] = rows;
  }
  (*this)(x, y, rows_for, scratch, hidden_buffer);
}

double FfnLearners::flops(std::span<const int> rows_for) const noexcept {
  double total = 0;
  for (std::size_t g = 0; g < groups_.size() && g < rows_for.size(); ++g)
    if (rows_for[g] > 0) total += groups_[g].up.flops(rows_for[g]) + groups_[g].down.flops(rows_for[g]);
  return total;
}

}  // namespace skim::execute::acm

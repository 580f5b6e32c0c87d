#pragma once
// Adaptive Computation Modules (Wójcik et al., AAAI 2025, arXiv 2312.10193)
// on a pre-trained FFN. An FFN is a sum over its hidden neurons, so splitting
// the neurons into N groups gives N learners whose outputs add up to the
// FFN exactly; learner i refines learners 0..i-1. Neurons are put in an
// order (most important first) and cut into contiguous groups, each packed
// as its own pair of GEMMs. A per-token gate (later) picks k, the number of
// learners a token runs. Trained (distilled) learners, whose weights are not
// a partition of any FFN, are packed from their own weights the same way.
#include <span>
#include <vector>

#include "execute/flop_count.hpp"
#include "kernels/aligned_buffer.hpp"
#include "kernels/backend.hpp"
#include "kernels/matmul.hpp"

namespace skim::execute::acm {

enum class Activation {
  gelu,    // BERT: down(gelu(up(x) + b_up)) + b_down
  swiglu,  // LLaMA: down(silu(gate(x)) ⊙ up(x)), no biases
};

// An FFN's weights as a model stores them: up [F, H] (SwiGLU: gate then up,
// [2F, H]), up bias [F] or empty, down [H, F], down bias [H] or empty.
struct FfnWeights {
  std::vector<float> up, up_bias, down, down_bias;
};

class FfnLearners {
 public:
  // up: [F, H] (GELU) or gate then up, [2F, H] (SwiGLU), rows indexed by
  // neuron; up_bias: F values or empty; down: [H, F]; down_bias: H or empty.
  // order: a permutation of the F neurons, most important first; learners N
  // ≥ 1 and ≤ F (groups differ in size by at most one neuron).
  FfnLearners(const kernels::Backend& backend, Activation activation, const FfnWeights& weights, int hidden, int ffn,
              std::span<const int> order, int learners, kernels::WeightPrecision precision = kernels::WeightPrecision::f32)
      : FfnLearners(backend, activation, weights.up, weights.up_bias, weights.down, weights.down_bias, hidden, ffn, order,
                    learners, precision) {}
  FfnLearners(const kernels::Backend& backend, Activation activation, std::span<const float> up,
              std::span<const float> up_bias, std::span<const float> down, std::span<const float> down_bias,
              int hidden, int ffn, std::span<const int> order, int learners,
              kernels::WeightPrecision precision = kernels::WeightPrecision::f32);

  // Learners with their own weights (trained, e.g. distilled as in the
  // paper): learner i is an FFN of width w_i ≥ 1 with up [w_i, H] (SwiGLU:
  // [2·w_i, H]), up bias w_i values or empty, down [H, w_i], down bias H
  // values or empty; widths may differ and need not sum to any FFN's. At
  // least one learner.
  FfnLearners(const kernels::Backend& backend, Activation activation, std::span<const FfnWeights> learners, int hidden,
              kernels::WeightPrecision precision = kernels::WeightPrecision::f32);

  int learners() const noexcept { return static_cast<int>(groups_.size()); }
  int hidden() const noexcept { return hidden_; }
  // Neurons in learner i, and in learners 0..i-1 together.
  int width(int learner) const noexcept { return groups_[learner].width; }
  int prefix_width(int learners) const noexcept;
  int ffn_width() const noexcept { return prefix_width(learners()); }

  // Least-squares refit of each prefix's down projection (DESIGN.md, "Width
  // level"): downs[k − 1] ([hidden, prefix_width(k)]) maps the activations
  // of learners 0..k-1 to the FFN's output for a row that runs exactly k < N
  // learners, in place of the sum of their own down projections (whose bias
  // the prefix's correction then replaces). A row running all N learners
  // keeps the FFN itself. Set once, before the learners are shared.
  void set_refit(const kernels::Backend& backend, std::span<const std::vector<float>> downs,
                 kernels::WeightPrecision precision = kernels::WeightPrecision::f32);
  bool refit() const noexcept { return !refit_.empty(); }

  // Every learner's activations on its rows (learner i on rows_for[i]) into
  // `act`: learner i's as a block of its own, rows × width(i) from
  // activation_offset(i, rows_for[0]) (dense blocks keep every GEMM on
  // oneDNN's fast paths, which strided rows are not).
  void activations(const float* x, float* act, std::span<const int> rows_for, kernels::Scratch& scratch,
                   float* hidden_buffer) const;
  static std::size_t activation_offset(int prefix_width, int rows) noexcept {
    return static_cast<std::size_t>(kernels::Linear::padded_rows(rows)) * prefix_width;
  }

  // y[r] += Σ_{i < k_r} learner_i(x[r]), where rows are ordered so that
  // learner i runs on the prefix [0, rows_for[i]) (rows_for non-increasing);
  // with a refit, rows with k < N learners get their prefix's refitted down
  // projection instead. Partition: learner 0 carries the down bias.
  // `scratch_floats` floats of `hidden_buffer` hold the learners'
  // activations. Returns the FLOPs executed (`dense` is left 0: the dense
  // FFN's row count is the caller's).
  FlopCount operator()(const float* x, float* y, std::span<const int> rows_for, kernels::Scratch& scratch,
                       float* hidden_buffer) const;
  std::size_t scratch_floats(int rows) const noexcept;
  // From P_k, the output of k learners on all `rows` rows, in y (row stride
  // hidden), to P_{k+1}: learner k added, or with a refit, recomputed with
  // prefix k+1's own down projection. rows_for: learners() ints of scratch.
  void next_prefix(const float* x, float* y, int rows, int k, std::span<int> rows_for, kernels::Scratch& scratch,
                   float* hidden_buffer) const;
  // FLOPs of running learner i on rows_for[i] rows.
  double flops(std::span<const int> rows_for) const noexcept;

 private:
  void refit_forward(const float* x, float* y, std::span<const int> rows_for, kernels::Scratch& scratch,
                     float* hidden_buffer) const;
  struct Group {
    int width = 0;
    kernels::Linear up;    // H → width (GELU fused) or H → 2·width (gate | up)
    kernels::Linear down;  // width → H, added into y
  };
  Activation activation_;
  int hidden_ = 0;
  std::vector<Group> groups_;
  // k = 1..N−1: prefix k's refitted down projection, prefix_width(k) →
  // hidden, no bias: one GEMM per row segment.
  std::vector<kernels::Linear> refit_;

  void add_group(const kernels::Backend& backend, std::span<const float> up, std::span<const float> up_bias,
                 std::span<const float> down, std::span<const float> down_bias, int width,
                 kernels::WeightPrecision precision);
};

}  // namespace skim::execute::acm

#pragma once
// Adaptive Computation Modules on an FFN (Wójcik et al., AAAI 2025, arXiv
// 2312.10193): per token a gate picks k, the number of learners the token
// runs; learners refine one another, so the first k add up to an
// approximation of the FFN, corrected by a per-prefix bias c_k.
// Execution: decide every row's k, order rows by k descending, gather them,
// so learner i runs on a contiguous prefix of rows (one GEMM pair per
// learner, no per-learner scatter), then scatter back once. The gate decides
// row counts; FfnLearners runs plain GEMMs on them.
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "execute/acm/ffn_learners.hpp"
#include "execute/flop_count.hpp"
#include "kernels/aligned_buffer.hpp"
#include "kernels/matmul.hpp"

namespace skim::execute::acm {

// How a token's learner count k is chosen.
enum class Gate {
  learned,  // the fitted gate: k = first prefix whose predicted log error ≤ log ε
  oracle,   // the true error of every prefix against all learners (which
            // run first; a partition's add up to the FFN): the
            // upper bound on quality, for evaluation only; its FLOPs count as
            // if only the chosen learners ran
  uniform,  // every token the same k (static width pruning): the baseline a gate must beat
};

struct GateRule {
  Gate gate = Gate::learned;
  float log_epsilon = 0;  // learned and oracle: the tolerated log(‖h_k + c_k − FFN(x)‖ / ‖x‖)
  int uniform_k = 0;      // uniform
};

class AdaptiveFfn;

// A prefix's relative error on one row: ‖prefix + correction − full‖ / ‖x‖,
// x the row's FFN input. What the gates predict (as its log) and the oracle measures.
double relative_error(const float* prefix, const float* correction, const float* full, const float* x, int width);

// Buffers one workspace routes widths with, sized once for `max_rows`.
struct WidthScratch {
  WidthScratch() = default;
  WidthScratch(int max_rows, int hidden, int max_learners, std::size_t learner_floats);
  kernels::AlignedBuffer<float> sorted_input, sorted_output, learner;
  kernels::AlignedBuffer<float> scores;          // rows × learners: the gate's predicted log errors
  kernels::AlignedBuffer<float> full, partial;   // oracle: FFN(x) and the running prefix sum
  std::vector<std::int32_t> k;                   // per input row: learners run (after padding)
  std::vector<std::int32_t> sorted_rows;         // input rows ordered by k descending
  std::vector<int> rows_for, count;              // per learner: rows it runs on; rows per k
  int max_rows = 0;
};

class AdaptiveFfn {
 public:
  // gate_weight: learners × hidden (row j predicts log e_j, the relative
  // error after j learners), gate_bias: learners; corrections: (learners + 1)
  // × hidden, c_k added after k learners (c_N is normally 0).
  AdaptiveFfn(int layer, FfnLearners learners, std::span<const float> gate_weight, std::span<const float> gate_bias,
              std::vector<float> corrections, const kernels::Backend& backend);
  AdaptiveFfn(AdaptiveFfn&&) noexcept;
  ~AdaptiveFfn();

  int layer() const noexcept { return layer_; }
  int learners() const noexcept { return learners_.learners(); }
  int hidden() const noexcept { return learners_.hidden(); }
  const FfnLearners& ffn_learners() const noexcept { return learners_; }
  std::span<const float> correction(int k) const noexcept {
    return {corrections_.data() + static_cast<std::size_t>(k) * hidden(), static_cast<std::size_t>(hidden())};
  }

  // residual[r] += c_k + Σ_{i<k} learner_i(input[r]) for `rows` rows, k per
  // row from `rule` (left in scratch.k). input and residual may alias.
  // executed: the gate and the learners run; dense: the FFN on every row.
  FlopCount operator()(const float* input, float* residual, int rows, const GateRule& rule, WidthScratch& scratch,
                       kernels::Scratch& gemm_scratch) const;

  // The gate's predicted log errors, rows × learners, into `scores`.
  void predict_log_errors(const float* input, int rows, float* scores, kernels::Scratch& gemm_scratch) const;

 private:
  void oracle_choice(const float* input, int rows, float log_epsilon, WidthScratch& scratch,
                     kernels::Scratch& gemm_scratch) const;
  int layer_;
  FfnLearners learners_;
  kernels::Linear gate_;
  std::vector<float> corrections_;
};

// A model's adaptive FFNs with the budgets they were calibrated for:
// immutable once loaded, shared by every session.
struct BudgetPoint {
  double budget = 1;                       // mean share of FFN width used on the calibration texts
  std::vector<float> log_epsilon;          // per adaptive layer: the learned gates' thresholds reaching it
  std::vector<float> oracle_log_epsilon;   // the oracle's
};

struct WidthGating {
  std::vector<AdaptiveFfn> layers;   // ascending by layer
  std::vector<BudgetPoint> budgets;  // ascending by budget, one threshold per entry of `layers`
  double budget = 1;                 // the package's own
  int max_learners() const noexcept;
  // Buffers for running any of the layers on up to `max_rows` rows (empty
  // without layers).
  WidthScratch scratch(int max_rows) const;
};

// How a model package describes adaptive FFNs: per layer, the learners
// (either the neuron order that cuts the model's own FFN into them, or, for
// trained learners, their own weights), the gate and the corrections.
struct LayerSpec {
  int layer = 0;
  int learners = 0;
  std::vector<int> order;                     // partition: ffn values
  std::vector<FfnWeights> learner_weights;    // distilled: one per learner (then `order` is empty)
  std::vector<float> gate_weight, gate_bias;  // learners × hidden, learners
  std::vector<float> corrections;             // (learners + 1) × hidden
  // Empty, or the least-squares refit: prefix k's down projection, hidden ×
  // (its neurons), for k = 1..learners − 1 (FfnLearners::set_refit).
  std::vector<std::vector<float>> refit_down;
};
struct WidthSpec {
  std::vector<LayerSpec> layers;  // ascending by layer
  std::vector<BudgetPoint> budgets;
  double budget = 1;
};
// Packs the learners: a partition layer's from the model's FFN weights
// (weights(layer)), a distilled layer's from its own.
WidthGating build_width_gating(const WidthSpec& spec, const std::function<FfnWeights(int layer)>& weights,
                               Activation activation, int hidden, int ffn, const kernels::Backend& backend,
                               kernels::WeightPrecision precision);

// One forward pass's width decisions: a rule per adaptive layer.
class WidthRouting {
 public:
  // The rules reaching `budget` (0: the package's own), by interpolation
  // between the calibrated points (each log ε is monotone in the budget).
  // uniform: every token of every layer runs round(budget · N) learners.
  WidthRouting(const WidthGating& gating, Gate gate, double budget = 0);
  // The adaptive FFN of `layer` and its rule, or {nullptr, nullptr}.
  std::pair<const AdaptiveFfn*, const GateRule*> find(int layer) const noexcept;
  const WidthGating& gating() const noexcept { return gating_; }

 private:
  const WidthGating& gating_;
  std::vector<GateRule> rules_;
};

}  // namespace skim::execute::acm

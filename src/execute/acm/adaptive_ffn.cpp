#include "execute/acm/adaptive_ffn.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/ops.hpp"
#include "skim/error.hpp"

namespace skim::execute::acm {

using kernels::Linear;

WidthScratch::WidthScratch(int rows, int hidden, int max_learners, std::size_t learner_floats) : max_rows(rows) {
  const std::size_t padded = static_cast<std::size_t>(Linear::padded_rows(rows)) * hidden;
  sorted_input.resize(padded);
  sorted_output.resize(padded);
  full.resize(padded);
  partial.resize(padded);
  learner.resize(learner_floats);
  scores.resize(static_cast<std::size_t>(Linear::padded_rows(rows)) * max_learners);
  k.resize(rows);
  sorted_rows.resize(rows);
  rows_for.resize(max_learners);
  count.resize(max_learners + 1);
}

namespace {

FfnLearners checked(FfnLearners learners, int layer, std::size_t gate_weight, std::size_t gate_bias,
                    std::size_t corrections) {
  const std::size_t N = learners.learners(), H = learners.hidden();
  if (gate_weight != N * H || gate_bias != N || corrections != (N + 1) * H)
    throw Error(ErrorCode::model, "ACM layer " + std::to_string(layer) + ": gate (" + std::to_string(gate_weight) + " + " +
                                      std::to_string(gate_bias) + " values) or corrections (" +
                                      std::to_string(corrections) + ") do not match " + std::to_string(N) +
                                      " learners × hidden " + std::to_string(H));
  return learners;
}

}  // namespace

AdaptiveFfn::AdaptiveFfn(int layer, FfnLearners learners, std::span<const float> gate_weight,
                         std::span<const float> gate_bias, std::vector<float> corrections,
                         const kernels::Backend& backend)
    : layer_(layer),
      learners_(checked(std::move(learners), layer, gate_weight.size(), gate_bias.size(), corrections.size())),
      gate_(backend, gate_weight, gate_bias, learners_.hidden(), learners_.learners(), kernels::Epilogue::none),
      corrections_(std::move(corrections)) {}

double relative_error(const float* prefix, const float* correction, const float* full, const float* x, int width) {
  double err = 0, size = 0;
  for (int i = 0; i < width; ++i) {
    const double d = prefix[i] + correction[i] - full[i];
    err += d * d, size += double(x[i]) * x[i];
  }
  return std::sqrt(err / std::max(size, 1e-30));
}

AdaptiveFfn::AdaptiveFfn(AdaptiveFfn&&) noexcept = default;
AdaptiveFfn::~AdaptiveFfn() = default;

void AdaptiveFfn::predict_log_errors(const float* input, int rows, float* scores, kernels::Scratch& gemm_scratch) const {
  gate_(input, scores, rows, gemm_scratch);
}

// k per row from the true errors (relative to the FFN input, as the gates
// were fitted): every learner runs on every row once to get FFN(x), then
// prefix by prefix, checking each.
void AdaptiveFfn::oracle_choice(const float* input, int rows, float log_epsilon, WidthScratch& s,
                                kernels::Scratch& gemm_scratch) const {
  const int N = learners(), H = hidden();
  const std::size_t n = static_cast<std::size_t>(rows) * H;
  std::fill(s.full.data(), s.full.data() + n, 0.f);
  std::fill(s.partial.data(), s.partial.data() + n, 0.f);
  std::fill(s.rows_for.begin(), s.rows_for.begin() + N, rows);
  learners_(input, s.full.data(), std::span(s.rows_for.data(), N), gemm_scratch, s.learner.data());
  const float epsilon = std::exp(log_epsilon);
  std::fill(s.k.begin(), s.k.begin() + rows, N);
  for (int j = 0; j < N; ++j) {
    const float* c = correction(j).data();
    for (int r = 0; r < rows; ++r) {
      if (s.k[r] < N) continue;
      const std::size_t at = static_cast<std::size_t>(r) * H;
      if (relative_error(s.partial.data() + at, c, s.full.data() + at, input + at, H) <= epsilon) s.k[r] = j;
    }
    learners_.next_prefix(input, s.partial.data(), rows, j, std::span(s.rows_for.data(), N), gemm_scratch,
                          s.learner.data());
  }
}

FlopCount AdaptiveFfn::operator()(const float* input, float* residual, int rows, const GateRule& rule,
                                  WidthScratch& s, kernels::Scratch& gemm_scratch) const {
  const int N = learners(), H = hidden();
  if (rows > s.max_rows || static_cast<int>(s.rows_for.size()) < N)
    throw Error(ErrorCode::internal, "ACM: the workspace is not sized for this model's adaptive FFNs");
  FlopCount flops;
  std::fill(s.rows_for.begin(), s.rows_for.begin() + N, rows);
  flops.dense = learners_.flops(std::span<const int>(s.rows_for.data(), N));
  if (rows == 0) return flops;

  // 1. Each row's k.
  switch (rule.gate) {
    case Gate::learned:
      predict_log_errors(input, rows, s.scores.data(), gemm_scratch);
      flops.executed += gate_.flops(rows);
      for (int r = 0; r < rows; ++r) {
        const float* e = s.scores.data() + static_cast<std::size_t>(r) * N;
        int k = 0;
        while (k < N && e[k] > rule.log_epsilon) ++k;
        s.k[r] = k;
      }
      break;
    case Gate::oracle:
      oracle_choice(input, rows, rule.log_epsilon, s, gemm_scratch);
      break;
    case Gate::uniform:
      std::fill(s.k.begin(), s.k.begin() + rows, std::clamp(rule.uniform_k, 0, N));
      break;
  }

  // 2. Rows ordered by k, descending (a counting sort); learner i's rows are
  // those with k > i, a prefix.
  std::fill(s.count.begin(), s.count.begin() + N + 1, 0);
  for (int r = 0; r < rows; ++r) ++s.count[s.k[r]];
  for (int i = N - 1, above = 0; i >= 0; --i) {
    above += s.count[i + 1];
    s.rows_for[i] = above;
  }
  // A GEMM on n rows computes Linear::padded_rows(n) of them (a multiple of
  // 16 past 16), so a prefix is rounded up to that: the extra rows run one
  // more learner than asked, which only brings them closer to the FFN, and
  // each GEMM keeps 16 or more rows. Rows past `rows` are scratch, never
  // scattered. (A floor of 32–64 rows per GEMM would pad further; with the
  // short texts of a service, one request's tokens would then all run the
  // widest prefix any of them asks for.)
  for (int i = 0; i < N; ++i) {
    const int limit = i == 0 ? rows : s.rows_for[i - 1];
    if (s.rows_for[i] > 0) s.rows_for[i] = std::min(Linear::padded_rows(s.rows_for[i]), limit);
  }
  {
    // Starting slot of each k in the descending order.
    std::vector<int>& next = s.count;
    for (int k = N, at = 0; k >= 0; --k) {
      const int c = next[k];
      next[k] = at;
      at += c;
    }
    for (int r = 0; r < rows; ++r) s.sorted_rows[next[s.k[r]]++] = r;
  }
  const std::span<const std::int32_t> order(s.sorted_rows.data(), rows);

  // 3. Gather, run the learners on their prefixes, add c_k, scatter back.
  kernels::gather_rows(input, H, order, s.sorted_input.data(), H, H);
  kernels::gather_rows(residual, H, order, s.sorted_output.data(), H, H);
  flops.executed += learners_(s.sorted_input.data(), s.sorted_output.data(), std::span(s.rows_for.data(), N),
                              gemm_scratch, s.learner.data())
                        .executed;
  for (int p = 0, k = N; p < rows; ++p) {
    while (k > 0 && p >= s.rows_for[k - 1]) --k;  // learners this position ran
    s.k[order[p]] = k;
    const float* c = correction(k).data();
    float* y = s.sorted_output.data() + static_cast<std::size_t>(p) * H;
    for (int i = 0; i < H; ++i) y[i] += c[i];
  }
  kernels::scatter_rows(s.sorted_output.data(), H, order, residual, H, H);
  return flops;
}

int WidthGating::max_learners() const noexcept {
  int n = 0;
  for (const auto& l : layers) n = std::max(n, l.learners());
  return n;
}

WidthScratch WidthGating::scratch(int max_rows) const {
  if (layers.empty()) return {};
  std::size_t learner_floats = 0;
  for (const auto& l : layers) learner_floats = std::max(learner_floats, l.ffn_learners().scratch_floats(max_rows));
  return WidthScratch(max_rows, layers.front().hidden(), max_learners(), learner_floats);
}

WidthRouting::WidthRouting(const WidthGating& gating, Gate gate, double wanted) : gating_(gating) {
  if (wanted == 0) wanted = gating.budget;
  if (!(wanted > 0 && wanted <= 1))
    throw Error(ErrorCode::invalid_argument, "ACM budget " + std::to_string(wanted) + " is outside (0, 1]");
  const auto& grid = gating.budgets;
  for (const auto& point : grid)
    if (point.log_epsilon.size() != gating.layers.size() || point.oracle_log_epsilon.size() != gating.layers.size())
      throw Error(ErrorCode::internal, "ACM: a budget point without one threshold per adaptive layer");
  // The two grid points around `wanted` and the weight of the upper one.
  std::size_t lo = 0, hi = 0;
  double t = 0;
  if (!grid.empty() && wanted >= grid.back().budget) {
    lo = hi = grid.size() - 1;
  } else if (!grid.empty() && wanted > grid.front().budget) {
    while (grid[hi].budget < wanted) ++hi;
    lo = hi - 1;
    t = (wanted - grid[lo].budget) / std::max(grid[hi].budget - grid[lo].budget, 1e-12);
  }
  for (std::size_t i = 0; i < gating.layers.size(); ++i) {
    GateRule r;
    r.gate = gate;
    r.uniform_k = static_cast<int>(std::lround(wanted * gating.layers[i].learners()));
    if (!grid.empty() && gate != Gate::uniform) {
      auto value = [&](const BudgetPoint& p) { return (gate == Gate::oracle ? p.oracle_log_epsilon : p.log_epsilon)[i]; };
      r.log_epsilon = static_cast<float>(value(grid[lo]) + t * (value(grid[hi]) - value(grid[lo])));
    }
    rules_.push_back(r);
  }
}

std::pair<const AdaptiveFfn*, const GateRule*> WidthRouting::find(int layer) const noexcept {
  for (std::size_t i = 0; i < gating_.layers.size(); ++i)
    if (gating_.layers[i].layer() == layer) return {&gating_.layers[i], &rules_[i]};
  return {nullptr, nullptr};
}

WidthGating build_width_gating(const WidthSpec& spec, const std::function<FfnWeights(int layer)>& weights,
                               Activation activation, int hidden, int ffn, const kernels::Backend& backend,
                               kernels::WeightPrecision precision) {
  WidthGating gating;
  gating.budgets = spec.budgets;
  gating.budget = spec.budget;
  for (const auto& l : spec.layers) {
    if (!l.learner_weights.empty() && static_cast<int>(l.learner_weights.size()) != l.learners)
      throw Error(ErrorCode::internal, "ACM layer " + std::to_string(l.layer) + ": " + std::to_string(l.learners) +
                                           " learners listed, " + std::to_string(l.learner_weights.size()) + " given");
    FfnLearners learners =
        l.learner_weights.empty()
            ? FfnLearners(backend, activation, weights(l.layer), hidden, ffn, l.order, l.learners, precision)
            : FfnLearners(backend, activation, l.learner_weights, hidden, precision);
    if (!l.refit_down.empty()) learners.set_refit(backend, l.refit_down, precision);
    gating.layers.emplace_back(l.layer, std::move(learners), l.gate_weight, l.gate_bias, l.corrections, backend);
  }
  return gating;
}

}  // namespace skim::execute::acm

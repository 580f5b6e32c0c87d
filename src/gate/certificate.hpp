#pragma once
// The gate's statistical certificate (Learn-then-Test). A cheap proposer
// gives each input a score s in [0, 1] and a label; the transformer's own
// output is the reference, and d = 1 when the two disagree. The gate answers
// with the proposal when s >= λ. certify() picks λ̂ from calibration data so
// that, with probability at least 1 − δ over the calibration draw, the risk
// at λ̂ is at most ε (see DESIGN.md, "Request level: propose and gate").
#include <cstddef>
#include <span>
#include <vector>

#include "skim/router.hpp"

namespace skim::gate {

// The public types (skim/router.hpp): what a certificate bounds and holds.
using skim::Certificate;
using skim::Risk;

// One calibration input: the proposer's score, whether its answer disagrees
// with the transformer's, and its proposed label id (for per-label
// certificates; -1 when unused).
struct CalibrationSample {
  double score = 0;
  bool disagree = false;
  int label = -1;
};

// The thresholds certify() tries, strict to loose, fixed before any data is
// seen: 1.0; then 1 − λ log-spaced at 20 per decade from 1e-6 to 10^-1.05
// (λ = 0.999999, 0.99999888, ..., 0.9109), because proposer probabilities
// crowd just below 1; then λ = 0.90, 0.89, ..., 0.01, 0.00 in steps of 0.01.
// 192 values in all.
std::vector<double> default_threshold_grid();

struct CertifyOptions {
  double epsilon = 0.01;  // the risk bound ε, in (0, 1)
  double delta = 0.05;    // the failure probability δ over the calibration draw, in (0, 1)
  Risk risk = Risk::selective;
  // One certificate per proposed label, each at δ/G, G = `labels` or, when 0,
  // the number of distinct labels among the samples.
  bool per_label = false;
  std::size_t labels = 0;
  // Strictly decreasing values in [0, 1]; empty = default_threshold_grid().
  std::vector<double> grid;
  // Selective risk only: the testing sequence starts at the first grid λ
  // with at least max(n_min, min_accepted) accepted samples, n_min being the
  // fewest that could ever reject (299 for ε = 1%, δ = 5%). A later start
  // gives up the smallest coverages for power when errors are spread thinly
  // over the scores (at n_min a test passes only with zero disagreements); it
  // depends on scores only, so validity is unchanged.
  // 0 (the default) runs two sequences at δ/2 each — one starting at n_min,
  // one at half the samples — and keeps the looser certified threshold: by
  // the union bound the pair still fails with probability at most δ, and it
  // certifies both a proposer that is only sure on a small top slice and one
  // whose rare errors are spread over most of the scores.
  std::size_t min_accepted = 0;
};

// P(Bin(n, p) <= k), exact: one term by Loader's saddle-point formula, the
// rest by the term ratio, summed over the smaller tail (the lower one, or 1 −
// the upper one) until the remainder is below 1e-17 of the sum; relative
// error ~1e-13 near the centre at n = 10^6, no overflow or NaN for any n.
// Throws skim::Error(invalid_argument) for p outside [0, 1].
double binomial_cdf(std::size_t k, std::size_t n, double p);

// The one-sided Clopper–Pearson upper (1 − alpha) bound on a binomial rate
// after k successes in n trials: the p with P(Bin(n, p) <= k) = alpha, by
// bisection to 1e-12; 1 when k == n (and when n == 0). Throws
// skim::Error(invalid_argument) for alpha outside (0, 1) or k > n.
double clopper_pearson_upper(std::size_t k, std::size_t n, double alpha);

// The fewest accepted samples at which a selective-risk test can reject at
// all (zero disagreements): the least m with (1 − ε)^m <= δ.
std::size_t min_accepted_for(double epsilon, double delta);


// Fixed-sequence testing over the grid, strict to loose; see certificate.cpp.
// Throws skim::Error(invalid_argument) naming the field for ε or δ outside
// (0, 1), a score that is NaN or outside [0, 1], an empty sample set, a grid
// that is not strictly decreasing within [0, 1], or (per-label mode) a label
// that is negative or not below `labels`.
Certificate certify(std::span<const CalibrationSample> samples, const CertifyOptions& options);

// Whether the gate may answer with a proposal of this score and label: false
// when the certificate is not certified, and (per-label mode) for a label
// without a threshold.
bool accepts(const Certificate& certificate, double score, int label = -1) noexcept;

}  // namespace skim::gate

#include "gate/certificate.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <sstream>
#include <utility>

#include "skim/error.hpp"

namespace skim::gate {

namespace {

std::string number(double value) {
  std::ostringstream out;
  out.precision(6);
  out << value;
  return out.str();
}

// ---- exact binomial probabilities -------------------------------------------
// Catherine Loader's saddle-point form ("Fast and accurate computation of
// binomial probabilities", 2000, as in R's dbinom): the binomial
// coefficient's huge lgamma terms cancel analytically instead of in floating
// point, so a term keeps ~full relative precision even for n = 10^9.

// log(n!) − log(sqrt(2πn) (n/e)^n), the Stirling series error.
double stirlerr(double n) {
  constexpr double s0 = 1.0 / 12, s1 = 1.0 / 360, s2 = 1.0 / 1260, s3 = 1.0 / 1680, s4 = 1.0 / 1188;
  if (n <= 15) return std::lgamma(n + 1) - (n + 0.5) * std::log(n) + n - 0.5 * std::log(2 * std::numbers::pi);
  const double nn = n * n;
  if (n > 500) return (s0 - s1 / nn) / n;
  if (n > 80) return (s0 - (s1 - s2 / nn) / nn) / n;
  if (n > 35) return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n;
  return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n;
}

// x log(x/m) + m − x, by a series when x ≈ m (where the direct form cancels).
double bd0(double x, double m) {
  if (std::abs(x - m) < 0.1 * (x + m)) {
    double v = (x - m) / (x + m);
    double s = (x - m) * v;
    double ej = 2 * x * v;
    v = v * v;
    for (int j = 1; j < 1000; ++j) {
      ej *= v;
      const double next = s + ej / (2 * j + 1);
      if (next == s) return next;
      s = next;
    }
    return s;
  }
  return x * std::log(x / m) + m - x;
}

// P(Bin(n, p) = x), with q = 1 − p; 0 < p < 1.
double binomial_pmf(double x, double n, double p, double q) {
  if (x == 0) {
    const double log_pmf = p < 0.1 ? -bd0(n, n * q) - n * p : n * std::log(q);
    return std::exp(log_pmf);
  }
  if (x == n) {
    const double log_pmf = q < 0.1 ? -bd0(n, n * p) - n * q : n * std::log(p);
    return std::exp(log_pmf);
  }
  const double lc = stirlerr(n) - stirlerr(x) - stirlerr(n - x) - bd0(x, n * p) - bd0(n - x, n * q);
  const double lf = std::log(2 * std::numbers::pi) + std::log(x) + std::log1p(-x / n);
  return std::exp(lc - 0.5 * lf);
}

// Sums a tail whose terms shrink geometrically away from the mode: `ratio(i)`
// is term(next)/term(i) and decreases along the walk, so once the current
// term t has ratio r the rest is at most t·r/(1 − r).
template <typename Ratio>
double geometric_tail(double first, std::size_t steps, Ratio ratio) {
  double sum = first;
  double term = first;
  for (std::size_t step = 0; step < steps && term > 0; ++step) {
    const double r = ratio(step);
    term *= r;
    sum += term;
    if (r < 1 && term * r / (1 - r) <= sum * 1e-17) break;
  }
  return sum;
}

// ---- the fixed-sequence test --------------------------------------------------

struct Scored {
  double score;
  bool disagree;
};

struct SequenceResult {
  bool certified = false;
  double threshold = std::numeric_limits<double>::infinity();
  std::size_t accepted = 0;
  std::size_t disagreements = 0;
  std::string reason;
};

std::string bound_text(double epsilon, double delta) {
  return "ε=" + number(epsilon) + ", δ=" + number(delta);
}

// One stratum: `sorted` by score, highest first.
SequenceResult run_sequence(const std::vector<Scored>& sorted, const std::vector<double>& grid,
                            double epsilon, double delta, Risk risk, std::size_t min_accepted) {
  SequenceResult result;
  const std::size_t n = sorted.size();
  const std::size_t n_min = min_accepted_for(epsilon, delta);
  if (risk == Risk::joint && n < n_min) {
    result.reason = "too little calibration data: " + std::to_string(n) + " samples, at least " +
                    std::to_string(n_min) + " are needed for a joint risk of " + bound_text(epsilon, delta);
    return result;
  }
  // Selective risk: the sequence starts where n_λ first reaches n_start. Before
  // that a λ is skipped instead of stopping the sequence: its p-value would
  // exceed δ whatever the disagreements (n_λ < n_min), or the caller chose a
  // later start. The skip depends on the scores only, never on a
  // disagreement, and n_λ only grows as λ loosens, so the tested hypotheses
  // are a suffix of the grid fixed by the scores. To certify a λ whose risk
  // exceeds ε, the first such λ of that suffix must be rejected, and given
  // the scores its k_λ is a sum of n_λ Bernoulli draws; when the
  // disagreement rate does not depend on the score among the accepted that
  // is Bin(n_λ, risk) and the chance is at most δ exactly. When it does, the
  // start point (chosen from the scores above λ) can tilt the mix slightly;
  // the tests check realistic shapes by simulation.
  const std::size_t n_start = std::max(n_min, min_accepted);
  std::size_t next = 0, accepted = 0, disagreements = 0;
  bool tested = false;
  for (const double lambda : grid) {
    while (next < n && sorted[next].score >= lambda) {
      ++accepted;
      disagreements += sorted[next].disagree ? 1 : 0;
      ++next;
    }
    if (risk == Risk::selective && accepted < n_start) continue;
    tested = true;
    // H_λ: risk(λ) > ε. Its p-value is the chance of so few disagreements
    // were the risk exactly ε; reject (certify λ) when it is at most δ.
    const double p_value = risk == Risk::selective ? binomial_cdf(disagreements, accepted, epsilon)
                                                   : binomial_cdf(disagreements, n, epsilon);
    if (p_value > delta) {
      if (!result.certified) {
        result.reason = "no threshold meets " + bound_text(epsilon, delta) + ": at λ=" + number(lambda) +
                        ", the first tested, " + std::to_string(disagreements) + " of " +
                        std::to_string(accepted) + " accepted samples disagree (p-value " + number(p_value) +
                        " > δ)";
      }
      break;
    }
    result.certified = true;
    result.threshold = lambda;
    result.accepted = accepted;
    result.disagreements = disagreements;
  }
  if (result.certified && result.accepted == 0) {
    // Joint risk can certify a λ no calibration sample reaches; answering
    // nothing is no certificate worth keeping.
    result = SequenceResult{};
    result.reason = "no threshold that accepts any calibration sample meets " + bound_text(epsilon, delta);
  }
  if (!tested) {
    const std::size_t eligible = accepted;  // samples at or above the loosest λ
    result.reason = "too little calibration data: " + std::to_string(n) + " samples";
    if (eligible < n) result.reason += " (" + std::to_string(eligible) + " scoring at least " + number(grid.back()) + ")";
    result.reason += ", at least " + std::to_string(n_start) + " accepted samples are needed for " +
                     bound_text(epsilon, delta);
    if (n_start > n_min) result.reason += " and min_accepted=" + std::to_string(min_accepted);
  }
  return result;
}

// The selective default (min_accepted 0): an early and a late start at δ/2
// each, the looser certified threshold kept (see CertifyOptions::min_accepted).
SequenceResult run_stratum(const std::vector<Scored>& sorted, const std::vector<double>& grid, double epsilon,
                           double delta, Risk risk, std::size_t min_accepted) {
  if (risk != Risk::selective || min_accepted > 0) return run_sequence(sorted, grid, epsilon, delta, risk, min_accepted);
  SequenceResult early = run_sequence(sorted, grid, epsilon, delta / 2, risk, 0);
  SequenceResult late = run_sequence(sorted, grid, epsilon, delta / 2, risk, std::max<std::size_t>(1, sorted.size() / 2));
  if (late.certified && (!early.certified || late.threshold < early.threshold)) return late;
  if (!early.certified) {
    // Say it in the caller's δ.
    const std::string per_sequence = bound_text(epsilon, delta / 2);
    if (auto at = early.reason.find(per_sequence); at != std::string::npos)
      early.reason.replace(at, per_sequence.size(), bound_text(epsilon, delta) + " (two testing sequences at δ/2 each)");
  }
  return early;
}

std::vector<Scored> sorted_by_score(std::vector<Scored> items) {
  std::sort(items.begin(), items.end(), [](const Scored& a, const Scored& b) { return a.score > b.score; });
  return items;
}

void check_unit_interval_open(double value, const char* field) {
  if (!(value > 0 && value < 1)) {
    throw Error(ErrorCode::invalid_argument,
                std::string("CertifyOptions.") + field + " must be in (0, 1), got " + number(value));
  }
}

}  // namespace


std::vector<double> default_threshold_grid() {
  std::vector<double> grid;
  grid.push_back(1.0);
  for (int i = 0; i < 100; ++i) grid.push_back(1.0 - std::pow(10.0, -6.0 + i / 20.0));
  for (int i = 90; i >= 0; --i) grid.push_back(i / 100.0);
  return grid;
}

double binomial_cdf(std::size_t k, std::size_t n, double p) {
  if (!(p >= 0 && p <= 1)) {
    throw Error(ErrorCode::invalid_argument, "binomial_cdf: p must be in [0, 1], got " + number(p));
  }
  if (k >= n || p == 0) return 1;
  if (p == 1) return 0;
  const double q = 1 - p;
  const double nd = static_cast<double>(n);
  const double kd = static_cast<double>(k);
  if (kd < nd * p) {
    // Lower tail, summed from k down: term(i−1)/term(i) = i q / ((n − i + 1) p) < 1.
    return std::min(1.0, geometric_tail(binomial_pmf(kd, nd, p, q), k, [&](std::size_t step) {
                      const double i = kd - static_cast<double>(step);
                      return i * q / ((nd - i + 1) * p);
                    }));
  }
  // k at or above the mean: 1 − the upper tail, summed from k + 1 up:
  // term(i+1)/term(i) = (n − i) p / ((i + 1) q) < 1.
  const double upper = geometric_tail(binomial_pmf(kd + 1, nd, p, q), n - k - 1, [&](std::size_t step) {
    const double i = kd + 1 + static_cast<double>(step);
    return (nd - i) * p / ((i + 1) * q);
  });
  return std::clamp(1.0 - upper, 0.0, 1.0);
}

double clopper_pearson_upper(std::size_t k, std::size_t n, double alpha) {
  if (!(alpha > 0 && alpha < 1)) {
    throw Error(ErrorCode::invalid_argument, "clopper_pearson_upper: alpha must be in (0, 1), got " + number(alpha));
  }
  if (k > n) {
    throw Error(ErrorCode::invalid_argument, "clopper_pearson_upper: k=" + std::to_string(k) +
                                                 " successes exceed n=" + std::to_string(n) + " trials");
  }
  if (k == n) return 1;
  // (1 − p)^n = alpha in closed form.
  if (k == 0) return -std::expm1(std::log(alpha) / static_cast<double>(n));
  // binomial_cdf(k, n, ·) falls from 1 at p = 0 to 0 at p = 1; keep
  // cdf(lo) > alpha >= cdf(hi) and return hi, the conservative side.
  double lo = 0, hi = 1;
  while (hi - lo > 1e-12) {
    const double mid = 0.5 * (lo + hi);
    if (binomial_cdf(k, n, mid) > alpha) lo = mid; else hi = mid;
  }
  return hi;
}

std::size_t min_accepted_for(double epsilon, double delta) {
  // ceil(ln δ / ln(1 − ε)), then nudged so that the defining inequality
  // holds exactly despite rounding in the logarithms.
  double estimate = std::ceil(std::log(delta) / std::log1p(-epsilon));
  std::size_t m = estimate < 1 ? 1 : static_cast<std::size_t>(estimate);
  auto fits = [&](std::size_t count) { return static_cast<double>(count) * std::log1p(-epsilon) <= std::log(delta); };
  while (m > 1 && fits(m - 1)) --m;
  while (!fits(m)) ++m;
  return m;
}

Certificate certify(std::span<const CalibrationSample> samples, const CertifyOptions& options) {
  check_unit_interval_open(options.epsilon, "epsilon");
  check_unit_interval_open(options.delta, "delta");
  const std::vector<double> grid = options.grid.empty() ? default_threshold_grid() : options.grid;
  for (std::size_t i = 0; i < grid.size(); ++i) {
    if (!(grid[i] >= 0 && grid[i] <= 1)) {
      throw Error(ErrorCode::invalid_argument,
                  "CertifyOptions.grid[" + std::to_string(i) + "] = " + number(grid[i]) + " is not in [0, 1]");
    }
    if (i > 0 && !(grid[i] < grid[i - 1])) {
      throw Error(ErrorCode::invalid_argument, "CertifyOptions.grid must be strictly decreasing (strict to loose): grid[" +
                                                   std::to_string(i) + "] = " + number(grid[i]) + " follows grid[" +
                                                   std::to_string(i - 1) + "] = " + number(grid[i - 1]));
    }
  }
  if (samples.empty()) throw Error(ErrorCode::invalid_argument, "empty calibration set");
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const CalibrationSample& sample = samples[i];
    if (!(sample.score >= 0 && sample.score <= 1)) {
      throw Error(ErrorCode::invalid_argument, "calibration sample " + std::to_string(i) + ": score " +
                                                   number(sample.score) + " is not in [0, 1]");
    }
    if (options.per_label && (sample.label < 0 || (options.labels > 0 && static_cast<std::size_t>(sample.label) >= options.labels))) {
      throw Error(ErrorCode::invalid_argument,
                  "calibration sample " + std::to_string(i) + ": label " + std::to_string(sample.label) +
                      (options.labels > 0 ? " is not in [0, CertifyOptions.labels=" + std::to_string(options.labels) + ")"
                                          : " is negative; per-label certificates need each sample's label"));
    }
  }

  Certificate certificate;
  certificate.risk = options.risk;
  certificate.epsilon = options.epsilon;
  certificate.delta = options.delta;
  certificate.n = samples.size();

  if (!options.per_label) {
    std::vector<Scored> items;
    items.reserve(samples.size());
    for (const CalibrationSample& sample : samples) items.push_back({sample.score, sample.disagree});
    const SequenceResult result = run_stratum(sorted_by_score(std::move(items)), grid, options.epsilon,
                                               options.delta, options.risk, options.min_accepted);
    certificate.certified = result.certified;
    certificate.reason = result.reason;
    if (!result.certified) return certificate;
    certificate.threshold = result.threshold;
    certificate.accepted = result.accepted;
    certificate.disagreements = result.disagreements;
  } else {
    // One stratum per proposed label, each at δ/G: by the union bound all G
    // hold together with probability at least 1 − δ, and then so does the
    // pooled risk (a mixture of risks each at most ε).
    std::map<int, std::vector<Scored>> strata;
    for (const CalibrationSample& sample : samples) strata[sample.label].push_back({sample.score, sample.disagree});
    const std::size_t groups = options.labels > 0 ? options.labels : strata.size();
    const std::size_t slots = options.labels > 0 ? options.labels : static_cast<std::size_t>(strata.rbegin()->first) + 1;
    const double delta_each = options.delta / static_cast<double>(groups);
    certificate.label_thresholds.assign(slots, std::numeric_limits<double>::infinity());
    std::string reasons;
    for (auto& [label, items] : strata) {
      const SequenceResult result = run_stratum(sorted_by_score(std::move(items)), grid, options.epsilon,
                                                 delta_each, options.risk, options.min_accepted);
      if (result.certified) {
        certificate.certified = true;
        certificate.label_thresholds[static_cast<std::size_t>(label)] = result.threshold;
      } else {
        reasons += (reasons.empty() ? "" : "; ") + std::string("label ") + std::to_string(label) + ": " + result.reason;
      }
    }
    if (strata.size() < groups) {
      reasons += (reasons.empty() ? "" : "; ") + std::to_string(groups - strata.size()) +
                 " label(s) have no calibration samples";
    }
    certificate.reason = reasons;
    if (!certificate.certified) return certificate;
    for (const CalibrationSample& sample : samples) {
      if (sample.score >= certificate.label_thresholds[static_cast<std::size_t>(sample.label)]) {
        ++certificate.accepted;
        certificate.disagreements += sample.disagree ? 1 : 0;
      }
    }
  }

  const std::size_t base = options.risk == Risk::selective ? certificate.accepted : certificate.n;
  certificate.empirical_risk =
      base == 0 ? 0 : static_cast<double>(certificate.disagreements) / static_cast<double>(base);
  certificate.upper_bound = clopper_pearson_upper(certificate.disagreements, base, options.delta);
  certificate.coverage = static_cast<double>(certificate.accepted) / static_cast<double>(certificate.n);
  return certificate;
}

bool accepts(const Certificate& certificate, double score, int label) noexcept {
  if (!certificate.certified) return false;
  if (!certificate.label_thresholds.empty()) {
    if (label < 0 || static_cast<std::size_t>(label) >= certificate.label_thresholds.size()) return false;
    return score >= certificate.label_thresholds[static_cast<std::size_t>(label)];
  }
  return score >= certificate.threshold;
}

}  // namespace skim::gate

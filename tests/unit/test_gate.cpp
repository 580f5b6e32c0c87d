// The request gate's guarantee and its live monitor: the exact binomial
// arithmetic against hand values and direct sums; certify() keeps its promise
// (wrong certificates in at most δ of simulated calibrations) and has power
// where it should; bad input is refused by name; the e-process's false-alarm
// rate stays under α without a shift, even over long streams, and it alarms
// within its predicted delay after one, however long the quiet time before;
// the monitor's state machine goes normal → collecting → normal with a fresh
// certificate, and fails closed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gate/certificate.hpp"
#include "gate/monitor.hpp"
#include "skim/error.hpp"
#include "test_support.hpp"

using skim::ErrorCode;
using namespace skim::gate;
using skim::testing::expect_error;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

// The count a Bin(trials, rate) stays at or below with probability 0.999: the
// slack allowed for a simulated frequency whose true value is at most `rate`
// (a correct implementation fails such a check once in a thousand runs at
// worst, and the seeds are fixed).
std::size_t upper_quantile_999(std::size_t trials, double rate) {
  std::size_t c = 0;
  while (binomial_cdf(c, trials, rate) < 0.999) ++c;
  return c;
}

// P(Bin(n, p) <= k) by summing every term in long double (Pascal's triangle
// is exact for n <= 60).
double direct_binomial_cdf(std::size_t k, std::size_t n, double p) {
  std::vector<long double> row{1.0L};
  for (std::size_t i = 1; i <= n; ++i) {
    std::vector<long double> next(i + 1, 1.0L);
    for (std::size_t j = 1; j < i; ++j) next[j] = row[j - 1] + row[j];
    row = std::move(next);
  }
  long double sum = 0;
  for (std::size_t i = 0; i <= std::min(k, n); ++i) {
    sum += row[i] * std::pow(static_cast<long double>(p), static_cast<long double>(i)) *
           std::pow(1.0L - p, static_cast<long double>(n - i));
  }
  return static_cast<double>(sum);
}

// n samples with uniform scores and a disagreement rate `rate` everywhere.
std::vector<CalibrationSample> flat_samples(std::mt19937_64& rng, std::size_t n, double rate) {
  std::uniform_real_distribution<double> uniform(0, 1);
  std::vector<CalibrationSample> samples(n);
  for (CalibrationSample& sample : samples) {
    sample.score = uniform(rng);
    sample.disagree = uniform(rng) < rate;
  }
  return samples;
}

// A proposer whose errors concentrate at low scores: s = 1 − U², so scores
// crowd near 1, and P(disagree | s) = 0.15 (1 − s): wrong on 5% of all
// inputs, but the selective risk at λ is R(λ) = E[0.15 U² | U² <= 1 − λ] =
// 0.05 (1 − λ), at most ε = 1% exactly for λ >= 0.8 (coverage √0.2 ≈ 45%).
std::vector<CalibrationSample> realistic_samples(std::mt19937_64& rng, std::size_t n) {
  std::uniform_real_distribution<double> uniform(0, 1);
  std::vector<CalibrationSample> samples(n);
  for (CalibrationSample& sample : samples) {
    const double u = uniform(rng);
    sample.score = 1 - u * u;
    sample.disagree = uniform(rng) < 0.15 * u * u;
  }
  return samples;
}
double realistic_selective_risk(double lambda) { return 0.05 * (1 - lambda); }

}  // namespace

// ---- binomial arithmetic -------------------------------------------------------

TEST(GateBinomial, CdfMatchesHandValues) {
  EXPECT_DOUBLE_EQ(binomial_cdf(0, 1, 0.5), 0.5);
  EXPECT_DOUBLE_EQ(binomial_cdf(1, 2, 0.5), 0.75);
  EXPECT_DOUBLE_EQ(binomial_cdf(0, 3, 0.5), 0.125);
  // 0.7^10 + 10·0.3·0.7^9 + 45·0.09·0.7^8
  EXPECT_NEAR(binomial_cdf(2, 10, 0.3), 0.3827827864, 1e-10);
  EXPECT_NEAR(binomial_cdf(0, 299, 0.01), std::pow(0.99, 299), 1e-15);
  EXPECT_EQ(binomial_cdf(5, 5, 0.3), 1.0);  // k >= n
  EXPECT_EQ(binomial_cdf(7, 5, 0.3), 1.0);
  EXPECT_EQ(binomial_cdf(0, 0, 0.3), 1.0);
  EXPECT_EQ(binomial_cdf(2, 10, 0.0), 1.0);
  EXPECT_EQ(binomial_cdf(9, 10, 1.0), 0.0);
  expect_error([] { binomial_cdf(1, 10, -0.1); }, ErrorCode::invalid_argument, {"p must be in [0, 1]"});
  expect_error([] { binomial_cdf(1, 10, std::nan("")); }, ErrorCode::invalid_argument, {"p must be in [0, 1]"});
}

TEST(GateBinomial, CdfMatchesDirectSummationForSmallN) {
  for (std::size_t n : {1u, 2u, 7u, 20u, 33u, 60u}) {
    for (double p : {1e-4, 0.01, 0.05, 0.3, 0.5, 0.77, 0.999}) {
      for (std::size_t k = 0; k <= n; ++k) {
        const double expected = direct_binomial_cdf(k, n, p);
        const double got = binomial_cdf(k, n, p);
        EXPECT_NEAR(got, expected, 1e-13 + 1e-12 * expected) << "k=" << k << " n=" << n << " p=" << p;
      }
    }
  }
}

TEST(GateBinomial, CdfIsAccurateAndStableForAMillionTrials) {
  const std::size_t n = 1000000;
  // The central term of Bin(10^6, 1/2) is 1/sqrt(π n / 2) to a relative 1e-7.
  const double central = std::sqrt(2 / (std::acos(-1.0) * n)) * (1 - 1.0 / (4 * n));
  EXPECT_NEAR(binomial_cdf(n / 2, n, 0.5), 0.5 + central / 2, 1e-12);
  // Close to Poisson(10) (difference of order p·λ).
  EXPECT_NEAR(binomial_cdf(10, n, 1e-5), 0.58303975019298557, 5e-5);
  // Far tails underflow to 0 and saturate to 1 without NaN.
  EXPECT_EQ(binomial_cdf(0, n, 0.01), 0.0);
  EXPECT_EQ(binomial_cdf(20000, n, 0.01), 1.0);
  // Both summation branches agree through the identity
  // P(Bin(n, p) <= k) + P(Bin(n, 1 − p) <= n − k − 1) = 1, and the CDF is
  // monotone in k.
  for (double p : {0.001, 0.01, 0.3}) {
    const double mean = p * n;
    double previous = 0;
    for (double z = -6; z <= 6; z += 0.25) {
      const auto k = static_cast<std::size_t>(mean + z * std::sqrt(mean * (1 - p)));
      const double lower = binomial_cdf(k, n, p);
      EXPECT_TRUE(lower >= 0 && lower <= 1);
      EXPECT_GE(lower, previous);
      previous = lower;
      EXPECT_NEAR(lower + binomial_cdf(n - k - 1, n, 1 - p), 1.0, 1e-12) << "k=" << k << " p=" << p;
    }
  }
}

TEST(GateBinomial, ClopperPearsonUpperMatchesKnownValues) {
  // k = 0: 1 − α^(1/n); the "rule of three" regime.
  EXPECT_NEAR(clopper_pearson_upper(0, 299, 0.05), 0.0099691468, 1e-9);
  EXPECT_NEAR(clopper_pearson_upper(0, 299, 0.05), 1 - std::pow(0.05, 1.0 / 299), 1e-15);
  EXPECT_EQ(clopper_pearson_upper(10, 10, 0.05), 1.0);
  EXPECT_EQ(clopper_pearson_upper(0, 0, 0.05), 1.0);
  // 1 of 2 at α = 0.25: (1 − p)² + 2p(1 − p) = 1 − p² = 0.25, p = sqrt(0.75).
  EXPECT_NEAR(clopper_pearson_upper(1, 2, 0.25), std::sqrt(0.75), 1e-11);
  // 5 of 1000 at 95%: qbeta(0.95, 6, 995) = 0.010484.
  const double upper = clopper_pearson_upper(5, 1000, 0.05);
  EXPECT_NEAR(upper, 0.010484, 5e-6);
  EXPECT_NEAR(binomial_cdf(5, 1000, upper), 0.05, 1e-9);
  expect_error([] { clopper_pearson_upper(11, 10, 0.05); }, ErrorCode::invalid_argument, {"exceed"});
  expect_error([] { clopper_pearson_upper(1, 10, 0.0); }, ErrorCode::invalid_argument, {"alpha"});
}

TEST(GateBinomial, MinAcceptedIsTheFewestSamplesThatCanReject) {
  EXPECT_EQ(min_accepted_for(0.01, 0.05), 299u);
  EXPECT_LE(binomial_cdf(0, 299, 0.01), 0.05);
  EXPECT_GT(binomial_cdf(0, 298, 0.01), 0.05);
  EXPECT_EQ(min_accepted_for(0.01, 0.025), 368u);  // δ/2 for two labels
  EXPECT_EQ(min_accepted_for(0.5, 0.5), 1u);
}

// ---- certify() -------------------------------------------------------------------

TEST(GateCertify, DefaultGridIsFixedStrictlyDecreasingAndDenseNearOne) {
  const std::vector<double> grid = default_threshold_grid();
  ASSERT_EQ(grid.size(), 192u);
  EXPECT_EQ(grid.front(), 1.0);
  EXPECT_EQ(grid.back(), 0.0);
  for (std::size_t i = 1; i < grid.size(); ++i) EXPECT_LT(grid[i], grid[i - 1]) << i;
  EXPECT_EQ(std::count_if(grid.begin(), grid.end(), [](double x) { return x > 0.9; }), 101);
  EXPECT_EQ(std::count_if(grid.begin(), grid.end(), [](double x) { return x > 0.99899; }), 62);  // λ >= 0.999
  EXPECT_EQ(default_threshold_grid(), grid);
}

TEST(GateCertify, CertifiesTheLoosestThresholdWhereTheRiskHolds) {
  // Scores 0.000 .. 0.999; every sample below 0.5 disagrees, none above.
  std::vector<CalibrationSample> samples;
  for (int i = 0; i < 1000; ++i) samples.push_back({i / 1000.0, i < 500});
  const Certificate certificate = certify(samples, {});
  ASSERT_TRUE(certificate.certified) << certificate.reason;
  // At λ = 0.49 the 10 new samples all disagree: 10 of 510, p-value ≈ 0.99 > δ.
  EXPECT_EQ(certificate.threshold, 0.5);
  EXPECT_EQ(certificate.n, 1000u);
  EXPECT_EQ(certificate.accepted, 500u);
  EXPECT_EQ(certificate.disagreements, 0u);
  EXPECT_EQ(certificate.empirical_risk, 0.0);
  EXPECT_DOUBLE_EQ(certificate.coverage, 0.5);
  EXPECT_NEAR(certificate.upper_bound, 1 - std::pow(0.05, 1.0 / 500), 1e-12);
  EXPECT_LE(certificate.upper_bound, certificate.epsilon);
  EXPECT_EQ(certificate.risk, Risk::selective);
  EXPECT_EQ(certificate.epsilon, 0.01);
  EXPECT_EQ(certificate.delta, 0.05);
  EXPECT_TRUE(certificate.reason.empty());
  EXPECT_TRUE(accepts(certificate, 0.5));
  EXPECT_TRUE(accepts(certificate, 1.0));
  EXPECT_FALSE(accepts(certificate, 0.4999));
  EXPECT_FALSE(accepts(certificate, std::nan("")));
}

TEST(GateCertify, UpperBoundAtTheThresholdIsAtMostEpsilon) {
  // The p-value test and the Clopper–Pearson bound are the same statement:
  // P(Bin(n, ε) <= k) <= δ exactly when the upper (1 − δ) bound is <= ε.
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    const Certificate certificate = certify(realistic_samples(rng, 3000), {});
    if (!certificate.certified) continue;
    EXPECT_LE(certificate.upper_bound, 0.01 + 1e-12);
    EXPECT_NEAR(certificate.coverage, static_cast<double>(certificate.accepted) / 3000, 1e-15);
  }
}

TEST(GateCertify, TooLittleDataIsUncertifiedWithAReason) {
  std::vector<CalibrationSample> samples(120, CalibrationSample{0.99, false});
  const Certificate certificate = certify(samples, {});
  EXPECT_FALSE(certificate.certified);
  EXPECT_EQ(certificate.threshold, inf);
  EXPECT_EQ(certificate.n, 120u);
  EXPECT_EQ(certificate.reason,
            "too little calibration data: 120 samples, at least 368 accepted samples are needed for ε=0.01, δ=0.05 "
            "(two testing sequences at δ/2 each)");
  EXPECT_FALSE(accepts(certificate, 1.0));

  // Plenty of samples, but 298 perfect ones followed by a disagreement: the
  // first testable threshold already fails.
  std::vector<CalibrationSample> edge;
  for (int i = 0; i < 400; ++i) edge.push_back({1.0 - i / 1000.0, i == 0});
  const Certificate failed = certify(edge, {});
  EXPECT_FALSE(failed.certified);
  EXPECT_NE(failed.reason.find("no threshold meets ε=0.01, δ=0.05"), std::string::npos) << failed.reason;
  EXPECT_NE(failed.reason.find("p-value"), std::string::npos) << failed.reason;
}

TEST(GateCertify, JointRiskCountsErrorsPerRequest) {
  // 3000 samples: scores uniform, disagreement 2% below 0.6 and 0.2% above.
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> uniform(0, 1);
  std::vector<CalibrationSample> samples(3000);
  for (auto& sample : samples) {
    sample.score = uniform(rng);
    sample.disagree = uniform(rng) < (sample.score < 0.6 ? 0.02 : 0.002);
  }
  CertifyOptions options;
  options.risk = Risk::joint;
  const Certificate certificate = certify(samples, options);
  ASSERT_TRUE(certificate.certified) << certificate.reason;
  EXPECT_EQ(certificate.risk, Risk::joint);
  EXPECT_NEAR(certificate.empirical_risk, static_cast<double>(certificate.disagreements) / 3000, 1e-15);
  EXPECT_LE(certificate.upper_bound, 0.01 + 1e-12);
  // Joint risk tolerates accepting part of the 2% region (errors per request).
  EXPECT_LT(certificate.threshold, 0.6);

  std::vector<CalibrationSample> few(200, CalibrationSample{0.9, false});
  const Certificate too_few = certify(few, options);
  EXPECT_FALSE(too_few.certified);
  EXPECT_NE(too_few.reason.find("at least 299"), std::string::npos) << too_few.reason;
}

TEST(GateCertify, PerLabelCertificatesUseDeltaOverLabels) {
  // Label 0 is reliable above a score of 0.3, label 1 disagrees 10% of the
  // time, label 2 has only 300 perfect samples: enough at δ (299) but not at
  // δ/3 (408).
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> uniform(0, 1);
  std::vector<CalibrationSample> samples;
  for (int i = 0; i < 2000; ++i) {
    const double score = uniform(rng);
    samples.push_back({score, score < 0.3 && uniform(rng) < 0.1, 0});
  }
  for (int i = 0; i < 2000; ++i) samples.push_back({uniform(rng), uniform(rng) < 0.1, 1});
  for (int i = 0; i < 300; ++i) samples.push_back({0.995, false, 2});
  CertifyOptions options;
  options.per_label = true;
  const Certificate certificate = certify(samples, options);
  ASSERT_TRUE(certificate.certified) << certificate.reason;
  ASSERT_EQ(certificate.label_thresholds.size(), 3u);
  EXPECT_LT(certificate.label_thresholds[0], 0.5);
  EXPECT_EQ(certificate.label_thresholds[1], inf);
  EXPECT_EQ(certificate.label_thresholds[2], inf);
  EXPECT_NE(certificate.reason.find("label 1: no threshold meets"), std::string::npos) << certificate.reason;
  EXPECT_NE(certificate.reason.find("label 2: too little calibration data"), std::string::npos) << certificate.reason;
  EXPECT_NE(certificate.reason.find("δ=0.0166667"), std::string::npos) << certificate.reason;
  EXPECT_TRUE(accepts(certificate, 0.9, 0));
  EXPECT_FALSE(accepts(certificate, 0.9, 1));
  EXPECT_FALSE(accepts(certificate, 1.0, 2));
  EXPECT_FALSE(accepts(certificate, 0.9, -1));
  EXPECT_FALSE(accepts(certificate, 0.9, 3));
  EXPECT_EQ(certificate.threshold, inf);  // per-label mode reads label_thresholds
  // The summary counts the samples accepted under each label's threshold.
  std::size_t accepted = 0;
  for (const auto& sample : samples) accepted += accepts(certificate, sample.score, sample.label) ? 1 : 0;
  EXPECT_EQ(certificate.accepted, accepted);
  EXPECT_DOUBLE_EQ(certificate.coverage, static_cast<double>(accepted) / samples.size());

  // With G = 5 declared labels, two of them unseen.
  options.labels = 5;
  const Certificate five = certify(samples, options);
  EXPECT_EQ(five.label_thresholds.size(), 5u);
  EXPECT_EQ(five.label_thresholds[4], inf);
  EXPECT_NE(five.reason.find("2 label(s) have no calibration samples"), std::string::npos) << five.reason;
}

TEST(GateCertify, BadInputIsRejectedNamingTheField) {
  const std::vector<CalibrationSample> good(10, CalibrationSample{0.5, false});
  auto with = [&](auto change) {
    CertifyOptions options;
    change(options);
    return [options, &good] { certify(good, options); };
  };
  expect_error(with([](CertifyOptions& o) { o.epsilon = 0; }), ErrorCode::invalid_argument, {"epsilon", "(0, 1)"});
  expect_error(with([](CertifyOptions& o) { o.epsilon = 1; }), ErrorCode::invalid_argument, {"epsilon"});
  expect_error(with([](CertifyOptions& o) { o.epsilon = std::nan(""); }), ErrorCode::invalid_argument, {"epsilon"});
  expect_error(with([](CertifyOptions& o) { o.delta = 0; }), ErrorCode::invalid_argument, {"delta"});
  expect_error(with([](CertifyOptions& o) { o.delta = 1.5; }), ErrorCode::invalid_argument, {"delta"});
  expect_error(with([](CertifyOptions& o) { o.grid = {1.0, 0.5, 0.5}; }), ErrorCode::invalid_argument,
               {"grid", "strictly decreasing", "grid[2]"});
  expect_error(with([](CertifyOptions& o) { o.grid = {0.2, 0.5}; }), ErrorCode::invalid_argument, {"grid"});
  expect_error(with([](CertifyOptions& o) { o.grid = {1.5, 0.5}; }), ErrorCode::invalid_argument, {"grid[0]", "[0, 1]"});

  expect_error([] { certify({}, {}); }, ErrorCode::invalid_argument, {"empty calibration set"});
  std::vector<CalibrationSample> bad = good;
  bad[3].score = std::nan("");
  expect_error([&] { certify(bad, {}); }, ErrorCode::invalid_argument, {"calibration sample 3", "score nan"});
  bad[3].score = 1.5;
  expect_error([&] { certify(bad, {}); }, ErrorCode::invalid_argument, {"sample 3", "score 1.5", "[0, 1]"});
  bad[3].score = -0.0001;
  expect_error([&] { certify(bad, {}); }, ErrorCode::invalid_argument, {"sample 3"});

  CertifyOptions per_label;
  per_label.per_label = true;
  expect_error([&] { certify(good, per_label); }, ErrorCode::invalid_argument, {"sample 0", "label -1"});
  std::vector<CalibrationSample> labelled(10, CalibrationSample{0.5, false, 4});
  per_label.labels = 3;
  expect_error([&] { certify(labelled, per_label); }, ErrorCode::invalid_argument, {"label 4", "labels=3"});
}

// ---- certify() by simulation ---------------------------------------------------------

TEST(GateCertifySimulation, WrongCertificatesInAtMostDeltaOfCalibrations) {
  // True disagreement rate 1.2ε at every score: every certificate is wrong.
  constexpr int calibrations = 1000;
  std::mt19937_64 rng(20240601);
  for (std::size_t min_accepted : {std::size_t{0}, std::size_t{1500}}) {
    int certified = 0;
    CertifyOptions options;
    options.min_accepted = min_accepted;
    for (int trial = 0; trial < calibrations; ++trial) {
      certified += certify(flat_samples(rng, 3000, 0.012), options).certified ? 1 : 0;
    }
    std::printf("[ gate     ] flat risk 1.2ε, min_accepted=%zu: wrongly certified in %d of %d (δ = 5%%)\n",
                min_accepted, certified, calibrations);
    // At most δ, allowing the simulation's own sampling error: the 99.9%
    // quantile of Bin(1000, 0.05) is 73.
    EXPECT_LE(static_cast<std::size_t>(certified), upper_quantile_999(calibrations, 0.05));
  }
}

TEST(GateCertifySimulation, HalfEpsilonFlatRiskCertifiesMostOfTheTime) {
  // True rate 0.5ε at every score, uniform scores, n = 3000. A single
  // sequence starting at n_min = 299 accepted passes its first test only with
  // zero disagreements among ~300 samples, probability (1 − ε/2)^299 = 0.22.
  // The default adds a second sequence starting at n/2 (each at δ/2), which
  // certifies such a proposer most of the time; min_accepted = 1500 alone
  // (one sequence at δ) more often still.
  constexpr int calibrations = 1000;
  std::mt19937_64 rng(99);
  int by_default = 0, late = 0;
  double late_coverage = 0;
  CertifyOptions late_start;
  late_start.min_accepted = 1500;
  for (int trial = 0; trial < calibrations; ++trial) {
    const std::vector<CalibrationSample> samples = flat_samples(rng, 3000, 0.005);
    by_default += certify(samples, {}).certified ? 1 : 0;
    const Certificate certificate = certify(samples, late_start);
    late += certificate.certified ? 1 : 0;
    late_coverage += certificate.coverage;
  }
  std::printf("[ gate     ] flat risk 0.5ε: certified %d of %d by default, %d with min_accepted=1500 "
              "(mean coverage %.2f)\n",
              by_default, calibrations, late, late_coverage / calibrations);
  EXPECT_GT(by_default, calibrations / 2);
  EXPECT_GT(late, calibrations / 2);
}

TEST(GateCertifySimulation, RealisticProposerIsCertifiedAndRarelyWrong) {
  // Errors concentrated at low scores (realistic_samples): certify with the
  // defaults, then judge λ̂ by the true selective risk 0.05 (1 − λ̂).
  constexpr int calibrations = 1000;
  std::mt19937_64 rng(4242);
  int certified = 0, wrong = 0;
  double coverage = 0;
  for (int trial = 0; trial < calibrations; ++trial) {
    const Certificate certificate = certify(realistic_samples(rng, 3000), {});
    if (!certificate.certified) continue;
    ++certified;
    coverage += certificate.coverage;
    wrong += realistic_selective_risk(certificate.threshold) > 0.01 ? 1 : 0;
  }
  std::printf("[ gate     ] realistic proposer: certified %d of %d, wrong %d, mean coverage %.3f "
              "(best possible 0.447)\n",
              certified, calibrations, wrong, certified ? coverage / certified : 0.0);
  EXPECT_LE(static_cast<std::size_t>(wrong), upper_quantile_999(calibrations, 0.05));
  // The early sequence (at δ/2) needs zero disagreements among the top ~370
  // samples, whose risk is ~0.0006: probability ~0.8; the late one starts
  // beyond the oracle coverage and never certifies here. Later tests stop
  // where the p-value at the true risk crosses δ/2, below the oracle coverage.
  EXPECT_GT(certified, calibrations * 2 / 3);
  EXPECT_GT(coverage / certified, 0.2);
}

TEST(GateCertifySimulation, OverconfidentTopScoresDoNotFoolTheSkippedStart) {
  // The skipped strict thresholds hide the worst region: scores above 0.97
  // disagree at 3%, the rest at 0.5%. The true selective risk
  // R(λ) = (0.03 (1 − max(λ, 0.97)) + 0.005 max(0, 0.97 − λ)) / (1 − λ)
  // exceeds ε for every λ > 0.85, including the first testable ones
  // (λ ≈ 0.9, R = 1.25%). Certificates there must stay rare.
  constexpr int calibrations = 1000;
  std::mt19937_64 rng(31);
  std::uniform_real_distribution<double> uniform(0, 1);
  auto risk = [](double lambda) {
    return (0.03 * (1 - std::max(lambda, 0.97)) + 0.005 * std::max(0.0, 0.97 - lambda)) / (1 - lambda);
  };
  int certified = 0, wrong = 0;
  for (int trial = 0; trial < calibrations; ++trial) {
    std::vector<CalibrationSample> samples(3000);
    for (CalibrationSample& sample : samples) {
      sample.score = uniform(rng);
      sample.disagree = uniform(rng) < (sample.score >= 0.97 ? 0.03 : 0.005);
    }
    const Certificate certificate = certify(samples, {});
    certified += certificate.certified ? 1 : 0;
    wrong += certificate.certified && risk(certificate.threshold) > 0.01 ? 1 : 0;
  }
  std::printf("[ gate     ] overconfident top: certified %d of %d, wrong %d\n", certified, calibrations, wrong);
  EXPECT_LE(static_cast<std::size_t>(wrong), upper_quantile_999(calibrations, 0.05));
}

// ---- shadow selection and the e-process ------------------------------------------------

TEST(GateMonitor, ShadowSelectionIsDeterministicAndMatchesTheRate) {
  EXPECT_EQ(shadow_selected("req-17", 0.3), shadow_selected("req-17", 0.3));
  EXPECT_FALSE(shadow_selected("req-17", 0.0));
  EXPECT_TRUE(shadow_selected("req-17", 1.0));
  EXPECT_FALSE(shadow_selected("req-17", std::nan("")));
  for (double rate : {0.01, 0.1, 0.5}) {
    constexpr int ids = 200000;
    int selected = 0;
    for (int i = 0; i < ids; ++i) selected += shadow_selected("req-" + std::to_string(i), rate) ? 1 : 0;
    const double sd = std::sqrt(rate * (1 - rate) / ids);
    EXPECT_NEAR(static_cast<double>(selected) / ids, rate, 4.5 * sd) << "rate " << rate;
  }
  // A lower rate selects a subset of what a higher one selects (one hash).
  for (int i = 0; i < 1000; ++i) {
    const std::string id = "x" + std::to_string(i);
    if (shadow_selected(id, 0.05)) {
      EXPECT_TRUE(shadow_selected(id, 0.2));
    }
  }
}

namespace {

// g(w) = E[log(1 + w(X − ε))] per observation, X = 1/π w.p. πr and 0
// otherwise: the growth of a bet's log-wealth at disagreement rate r. The
// mixture is at least 1/K times its best bet's newest start, so it alarms
// once that start's log-wealth reaches log(K / (α v_m)): delay ≈
// log(K / (α v_m)) / max_k g(w_k).
double best_growth(const EProcess& process, double rate) {
  const double pi = process.shadow_rate(), epsilon = process.epsilon();
  double best = 0;
  for (double w : process.bets()) {
    best = std::max(best, pi * rate * std::log1p(w * (1 / pi - epsilon)) + (1 - pi * rate) * std::log1p(-w * epsilon));
  }
  return best;
}

double predicted_delay(const EProcess& process, double rate, std::size_t first_block_after_shift) {
  const double log_k = std::log(static_cast<double>(process.bets().size()));
  return (log_k - std::log(process.alpha()) - EProcess::log_start_weight(first_block_after_shift)) /
         best_growth(process, rate);
}

// The mixture before restarts, for comparison: every bet's wealth runs from
// the first observation, so a quiet time's loss stays in it.
class SingleStartMixture {
 public:
  explicit SingleStartMixture(const EProcess& like) : alpha_(like.alpha()), log_wealth_(like.bets().size(), 0.0) {
    for (double w : like.bets()) {
      log_step_miss_.push_back(std::log1p(-w * like.epsilon()));
      log_step_hit_.push_back(std::log1p(w * (1 / like.shadow_rate() - like.epsilon())));
    }
  }
  void observe(bool shadowed, bool disagree) {
    ++count_;
    if (!(shadowed && disagree)) {
      ++unsettled_misses_;
      return;
    }
    double top = -inf;
    for (std::size_t k = 0; k < log_wealth_.size(); ++k) {
      log_wealth_[k] += static_cast<double>(unsettled_misses_) * log_step_miss_[k] + log_step_hit_[k];
      top = std::max(top, log_wealth_[k]);
    }
    unsettled_misses_ = 0;
    double sum = 0;
    for (double value : log_wealth_) sum += std::exp(value - top);
    alarmed_ = alarmed_ || top + std::log(sum / static_cast<double>(log_wealth_.size())) >= std::log(1 / alpha_);
  }
  bool alarmed() const { return alarmed_; }
  std::size_t count() const { return count_; }

 private:
  double alpha_;
  std::vector<double> log_wealth_, log_step_miss_, log_step_hit_;
  std::size_t count_ = 0, unsettled_misses_ = 0;
  bool alarmed_ = false;
};

// Feeds `process` accepted requests at disagreement rate `rate` until it
// alarms or has seen `until` in all. Only a shadowed disagreement (X = 1/π,
// probability π·rate) moves the e-process, so the gaps between them are
// drawn whole (geometric) and the rest enter as X = 0.
template <class Process>
void run_stream(Process& process, std::mt19937_64& rng, double pi, double rate, std::size_t until) {
  std::geometric_distribution<std::size_t> gap(pi * rate);
  while (!process.alarmed() && process.count() < until) {
    const std::size_t misses = std::min(gap(rng), until - process.count());
    for (std::size_t i = 0; i < misses; ++i) process.observe(false, false);
    if (process.count() < until) process.observe(true, true);
  }
}

double median(std::vector<double> values) {
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

}  // namespace

TEST(GateEProcess, StartsAtOneStaysFiniteAndResets) {
  EProcess process(0.01, 0.01, 0.01);
  EXPECT_EQ(process.log_value(), 0.0);
  EXPECT_EQ(process.bets().size(), EProcess::default_bets);
  EXPECT_EQ(process.block_size(), EProcess::default_block_size);
  for (double w : process.bets()) EXPECT_TRUE(w > 0 && w < 1 / 0.01);
  for (int i = 0; i < 100000; ++i) process.observe(true, true);  // X = 100 every step
  EXPECT_TRUE(std::isfinite(process.log_value()));
  EXPECT_GT(process.log_value(), 1000.0);
  EXPECT_TRUE(process.alarmed());
  process.reset();
  EXPECT_EQ(process.log_value(), 0.0);
  // 10^7 observations of X = 0: the wealths decay, and the starts keep being
  // placed (v_m ~ 1e-8 by the end) without an underflow to log 0 or a NaN.
  for (int i = 0; i < 10000000; ++i) process.observe(false, false);
  EXPECT_TRUE(std::isfinite(process.log_value()));
  EXPECT_LT(process.log_value(), 0.0);
  EXPECT_FALSE(process.alarmed());
  EXPECT_EQ(process.count(), 10000000u);
  EXPECT_EQ(process.disagreement_upper_bound(), 1.0);  // nothing shadowed
  // Then a shift: a fresh start alarms within a few hits, where one
  // started at the first observation would first have to earn back
  // 10^7 · log 2 nats (its best bet's) lost.
  int hits = 0;
  while (!process.alarmed() && hits < 100) {
    process.observe(true, true);
    ++hits;
  }
  EXPECT_TRUE(process.alarmed());
  EXPECT_LE(hits, 10);
  EXPECT_TRUE(std::isfinite(process.log_value()));
  double total = 0;  // the weights sum to F(0) = 1, a start at a time
  for (std::size_t m = 0; m < 1000; ++m) total += std::exp(EProcess::log_start_weight(m));
  EXPECT_NEAR(total, 1 - std::log(2.0) / std::log(1002.0), 1e-12);
  EXPECT_TRUE(std::isfinite(EProcess::log_start_weight(std::numeric_limits<std::size_t>::max())));
  expect_error([] { EProcess(0, 0.1, 0.01); }, ErrorCode::invalid_argument, {"epsilon"});
  expect_error([] { EProcess(0.01, 0, 0.01); }, ErrorCode::invalid_argument, {"shadow rate"});
  expect_error([] { EProcess(0.01, 0.1, 1); }, ErrorCode::invalid_argument, {"alpha"});
  expect_error([] { EProcess(0.01, 0.1, 0.01, 20, 0); }, ErrorCode::invalid_argument, {"block size"});
}

TEST(GateEProcess, FalseAlarmsStayBelowAlphaWithoutAShift) {
  // π = 10%, at a true rate of exactly ε and of ε/2: 1000 streams of 5000
  // accepted requests each drawn in full, and 1000 of 10^6 (10^4 starts;
  // drawn as gaps between disagreements). Ville: P(ever alarming) <= α = 1%
  // however long the stream, restarts and all.
  constexpr double epsilon = 0.01, pi = 0.1, alpha = 0.01;
  constexpr int streams = 1000, steps = 5000;
  constexpr std::size_t long_steps = 1000000;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> uniform(0, 1);
  for (double rate : {epsilon, epsilon / 2}) {
    int alarms = 0, long_alarms = 0;
    double estimate = 0;
    for (int stream = 0; stream < streams; ++stream) {
      EProcess process(epsilon, pi, alpha);
      for (int step = 0; step < steps && !process.alarmed(); ++step) {
        process.observe(uniform(rng) < pi, uniform(rng) < rate);
      }
      alarms += process.alarmed() ? 1 : 0;
      estimate += process.disagreement_rate();
      EProcess long_process(epsilon, pi, alpha);
      run_stream(long_process, rng, pi, rate, long_steps);
      long_alarms += long_process.alarmed() ? 1 : 0;
    }
    std::printf("[ gate     ] no shift, rate %.3f: false alarms in %d of %d streams of %d, %d of %d of %zu "
                "(α = 1%%)\n",
                rate, alarms, streams, steps, long_alarms, streams, long_steps);
    EXPECT_LE(static_cast<std::size_t>(alarms), upper_quantile_999(streams, alpha));
    EXPECT_LE(static_cast<std::size_t>(long_alarms), upper_quantile_999(streams, alpha));
    EXPECT_NEAR(estimate / streams, rate, rate * 0.1);
  }
}

TEST(GateEProcess, AlarmsWithinThePredictedDelayAfterAShiftToThreeEpsilon) {
  // A shift at the first observation: the best bet's first start (weight v_0
  // = 1 − ln 2 / ln 3 ≈ 0.37) reaches K/α after ≈ log(K / (α v_0)) / g
  // observations (best_growth's formula); later starts only help.
  constexpr double epsilon = 0.01, pi = 0.1, alpha = 0.01, rate = 3 * epsilon;
  const EProcess reference(epsilon, pi, alpha);
  const double predicted = predicted_delay(reference, rate, 0);

  constexpr int streams = 300;
  std::mt19937_64 rng(6);
  std::uniform_real_distribution<double> uniform(0, 1);
  std::vector<double> delays;
  for (int stream = 0; stream < streams; ++stream) {
    EProcess process(epsilon, pi, alpha);
    const auto cap = static_cast<std::size_t>(20 * predicted);
    while (!process.alarmed() && process.count() < cap) process.observe(uniform(rng) < pi, uniform(rng) < rate);
    delays.push_back(static_cast<double>(process.count()));
  }
  const double measured = median(delays);
  std::printf("[ gate     ] shift to 3ε (π = 10%%, α = 1%%, K = %zu): predicted delay %.0f, "
              "median measured %.0f accepted requests\n",
              reference.bets().size(), predicted, measured);
  EXPECT_LT(measured, 1.5 * predicted);
}

TEST(GateEProcess, DelayAfterAQuietTimeGrowsOnlyByThePriceOfALateStart) {
  // Quiet at ε/2 for 0, 10^4 or 10^5 accepted requests, then 3ε (π = 10%,
  // ε = α = 1%). The first start after a shift at t has weight v_m, m =
  // ⌈t/B⌉, so the predicted delay is log(K / (α v_m)) / g: after 10^5 quiet
  // requests (m = 1000) it is (log(K/α) + log(1/v_1000)) / (log(K/α) +
  // log(1/v_0)) ≈ 2.2 times that after none, allowed 1.25 times that for
  // the noise of two medians of 1000 streams. The mixture without restarts
  // pays the quiet time's whole loss: ~10 times.
  constexpr double epsilon = 0.01, pi = 0.1, alpha = 0.01, quiet_rate = epsilon / 2, rate = 3 * epsilon;
  constexpr int streams = 1000;
  const EProcess reference(epsilon, pi, alpha);
  const std::size_t block = reference.block_size();
  const std::vector<std::size_t> quiet_times = {0, 10000, 100000};
  std::vector<double> restarting, single_start, predicted;
  for (const std::size_t quiet : quiet_times) {
    std::mt19937_64 rng(7 + quiet);
    std::vector<double> delays, single_delays;
    int quiet_alarms = 0;
    const std::size_t cap = quiet + 2000000;
    for (int stream = 0; stream < streams; ++stream) {
      EProcess process(epsilon, pi, alpha);
      run_stream(process, rng, pi, quiet_rate, quiet);
      SingleStartMixture single(reference);
      run_stream(single, rng, pi, quiet_rate, quiet);
      quiet_alarms += (process.alarmed() ? 1 : 0) + (single.alarmed() ? 1 : 0);
      // A false alarm in the quiet time leaves no delay to measure.
      if (!process.alarmed()) {
        run_stream(process, rng, pi, rate, cap);
        delays.push_back(static_cast<double>(process.count() - quiet));
      }
      if (!single.alarmed()) {
        run_stream(single, rng, pi, rate, cap);
        single_delays.push_back(static_cast<double>(single.count() - quiet));
      }
    }
    restarting.push_back(median(delays));
    single_start.push_back(median(single_delays));
    predicted.push_back(predicted_delay(reference, rate, (quiet + block - 1) / block));
    std::printf("[ gate     ] %zu quiet at ε/2, then 3ε: median delay %.0f (predicted %.0f), without restarts %.0f; "
                "%d false alarms while quiet\n",
                quiet, restarting.back(), predicted.back(), single_start.back(), quiet_alarms);
    EXPECT_LT(restarting.back(), 1.5 * predicted.back()) << quiet << " quiet";
  }
  const double factor = predicted.back() / predicted.front();
  std::printf("[ gate     ] after 10^5 quiet / after none: %.2f with restarts (predicted %.2f), %.2f without\n",
              restarting.back() / restarting.front(), factor, single_start.back() / single_start.front());
  EXPECT_LT(restarting.back(), 1.25 * factor * restarting.front());
  EXPECT_GT(single_start.back(), 1.25 * factor * single_start.front());  // the test tells the two apart
}

// ---- the monitor's state machine -----------------------------------------------------

namespace {

Certificate good_certificate(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  // No disagreements at all, so it certifies λ = 0 whatever the seed.
  Certificate certificate = certify(flat_samples(rng, 3000, 0.0), {});
  EXPECT_TRUE(certificate.certified) << certificate.reason;
  certificate.proposer_version = "ngram-v7";
  certificate.data_hash = "calibration-0";
  return certificate;
}

MonitorOptions test_options() {
  MonitorOptions options;
  options.shadow_rate = 0.5;
  options.alpha = 0.01;
  options.recalibration_samples = 1000;
  options.recalibration_retry = 100;
  return options;
}

// Runs accepted traffic with disagreement rate `rate` until the monitor
// leaves `normal` or `requests` have been decided; returns how many were.
int run_normal_traffic(Monitor& monitor, std::mt19937_64& rng, double rate, int requests, int& next_id) {
  std::uniform_real_distribution<double> uniform(0, 1);
  for (int i = 0; i < requests; ++i) {
    const Decision decision = monitor.decide(uniform(rng), -1, "req-" + std::to_string(next_id++));
    if (decision.collect) return i;
    if (!decision.accept) continue;
    if (decision.shadow) monitor.record_shadow(decision, uniform(rng) < rate);
    else monitor.record_accepted_unshadowed(decision);
  }
  return requests;
}

}  // namespace

TEST(GateMonitor, AlarmCollectsFreshSamplesThenReturnsToNormalWithANewCertificate) {
  const Certificate initial = good_certificate(1);
  ASSERT_TRUE(initial.certified) << initial.reason;
  Monitor monitor(initial, test_options());
  EXPECT_EQ(monitor.state(), GateState::normal);
  std::mt19937_64 rng(2);
  std::uniform_real_distribution<double> uniform(0, 1);
  int next_id = 0;

  // No shift: stays normal.
  run_normal_traffic(monitor, rng, 0.001, 3000, next_id);
  EXPECT_EQ(monitor.state(), GateState::normal);
  MonitorStats stats = monitor.stats();
  EXPECT_EQ(stats.alarms, 0u);
  EXPECT_EQ(stats.decisions, 3000u);
  EXPECT_EQ(stats.accepted + stats.executed, stats.decisions);
  EXPECT_EQ(stats.observed, stats.accepted);
  EXPECT_NEAR(static_cast<double>(stats.shadowed) / stats.observed, 0.5, 0.05);

  // A decision taken before the alarm, reported after it, is dropped.
  Decision straggler;
  do straggler = monitor.decide(0.999, -1, "straggler-" + std::to_string(next_id++));
  while (!straggler.shadow);

  // Shift: 20% disagreement among accepted proposals.
  const int until_alarm = run_normal_traffic(monitor, rng, 0.2, 5000, next_id);
  EXPECT_LT(until_alarm, 5000);
  EXPECT_EQ(monitor.state(), GateState::collecting);
  stats = monitor.stats();
  EXPECT_EQ(stats.alarms, 1u);
  EXPECT_GE(stats.log_e_value, std::log(1 / 0.01));
  // Pooled with the 3000 requests before the shift (at 0.1%), which outnumber
  // the ~100 after it, so only above the rate before.
  EXPECT_GT(stats.disagreement_rate, 0.001);
  monitor.record_shadow(straggler, true);
  EXPECT_EQ(monitor.stats().stale_records, 1u);

  // Collecting: everything executes; the labelled samples arrive. The first
  // 999 still disagree at 20%, so certify() finds no threshold until fresh
  // traffic (now 0.1%) has slid most of them out of the window.
  for (int i = 0; i < 999; ++i) {
    const Decision decision = monitor.decide(uniform(rng), -1, "c" + std::to_string(i));
    ASSERT_FALSE(decision.accept);
    ASSERT_TRUE(decision.collect);
    monitor.record_collected(decision, {uniform(rng), uniform(rng) < 0.2, -1});
  }
  EXPECT_EQ(monitor.state(), GateState::collecting);
  EXPECT_EQ(monitor.stats().collected, 999u);
  int fresh = 0;
  while (monitor.state() == GateState::collecting && fresh < 5000) {
    const Decision decision = monitor.decide(0.5, -1, "f" + std::to_string(fresh++));
    ASSERT_TRUE(decision.collect);
    monitor.record_collected(decision, {uniform(rng), uniform(rng) < 0.001, -1});
  }
  stats = monitor.stats();
  std::printf("[ gate     ] alarm after %d accepted-traffic requests; back to normal after %d fresh samples\n",
              until_alarm, fresh);
  EXPECT_EQ(stats.state, GateState::normal);
  EXPECT_EQ(stats.recalibrations, 1u);
  EXPECT_GE(fresh, 100);  // the window had to slide past the bad samples
  EXPECT_TRUE(stats.last_recalibration_failure.empty());
  EXPECT_TRUE(stats.certificate.certified);
  EXPECT_EQ(stats.certificate.n, 1000u);
  EXPECT_EQ(stats.certificate.proposer_version, "ngram-v7");
  EXPECT_EQ(stats.certificate.data_hash.rfind("monitor-fnv1a64:", 0), 0u) << stats.certificate.data_hash;
  EXPECT_EQ(stats.observed, 0u);  // a fresh e-process
  EXPECT_EQ(stats.collected, 0u);
  EXPECT_EQ(monitor.current_certificate().data_hash, stats.certificate.data_hash);

  // Normal again: accepting under the new certificate.
  const Decision decision = monitor.decide(0.9999, -1, "after");
  EXPECT_TRUE(decision.accept);
  EXPECT_FALSE(decision.collect);
}

TEST(GateMonitor, FailedRecalibrationKeepsCollectingOnASlidingWindow) {
  MonitorOptions options = test_options();
  options.recalibration_samples = 500;
  options.recalibration_retry = 50;
  Monitor monitor(Certificate{}, options);  // uncertified: collecting from the start
  EXPECT_EQ(monitor.state(), GateState::collecting);
  std::mt19937_64 rng(8);
  std::uniform_real_distribution<double> uniform(0, 1);
  for (int i = 0; i < 2000; ++i) {  // 10% disagreement: never certifiable
    const Decision decision = monitor.decide(uniform(rng), -1, std::to_string(i));
    EXPECT_FALSE(decision.accept);
    monitor.record_collected(decision, {uniform(rng), uniform(rng) < 0.1, -1});
  }
  MonitorStats stats = monitor.stats();
  EXPECT_EQ(stats.state, GateState::collecting);
  EXPECT_EQ(stats.collected, 500u);  // the window slid
  EXPECT_NE(stats.last_recalibration_failure.find("no threshold meets"), std::string::npos)
      << stats.last_recalibration_failure;
  EXPECT_EQ(stats.recalibrations, 0u);
  int fresh = 0;
  while (monitor.state() == GateState::collecting && fresh < 2000) {
    const Decision decision = monitor.decide(0.5, -1, "f" + std::to_string(fresh++));
    monitor.record_collected(decision, {uniform(rng), false, -1});
  }
  EXPECT_EQ(monitor.state(), GateState::normal);
  EXPECT_LE(fresh, 500);
  EXPECT_TRUE(monitor.current_certificate().certified);
}

TEST(GateMonitor, FailsClosedAndRefusesMisreports) {
  // Certified at λ = 0.5: every sample below it disagrees.
  std::vector<CalibrationSample> samples;
  for (int i = 0; i < 1000; ++i) samples.push_back({i / 1000.0, i < 500});
  const Certificate certificate = certify(samples, {});
  ASSERT_EQ(certificate.threshold, 0.5);
  Monitor monitor(certificate, test_options());
  ASSERT_EQ(monitor.state(), GateState::normal);
  // Not acceptable proposals execute.
  EXPECT_FALSE(monitor.decide(std::nan(""), -1, "a").accept);
  EXPECT_FALSE(monitor.decide(-1.0, -1, "b").accept);
  // Records that would bias the e-process are refused.
  Decision executed = monitor.decide(0.2, -1, "c");
  ASSERT_FALSE(executed.accept);
  expect_error([&] { monitor.record_shadow(executed, false); }, ErrorCode::invalid_argument, {"record_shadow"});
  Decision accepted;
  int id = 0;
  do accepted = monitor.decide(0.9999, -1, "d" + std::to_string(id++));
  while (!accepted.shadow);
  expect_error([&] { monitor.record_accepted_unshadowed(accepted); }, ErrorCode::invalid_argument,
               {"record_accepted_unshadowed"});
  // A collected sample outside a collecting epoch is dropped, a bad score refused.
  monitor.record_collected(executed, {0.5, false, -1});
  EXPECT_EQ(monitor.stats().stale_records, 1u);
  Monitor collecting(Certificate{}, test_options());
  const Decision collect = collecting.decide(0.5, -1, "e");
  expect_error([&] { collecting.record_collected(collect, {2.0, false, -1}); }, ErrorCode::invalid_argument,
               {"score 2"});
  // Bad options.
  auto with = [](auto change) {
    MonitorOptions options = test_options();
    change(options);
    return [options] { Monitor(Certificate{}, options); };
  };
  expect_error(with([](MonitorOptions& o) { o.shadow_rate = -0.1; }), ErrorCode::invalid_argument, {"shadow_rate"});
  expect_error(with([](MonitorOptions& o) { o.shadow_rate = 1.5; }), ErrorCode::invalid_argument, {"shadow_rate"});
  expect_error(with([](MonitorOptions& o) { o.alpha = 1; }), ErrorCode::invalid_argument, {"alpha"});
  expect_error(with([](MonitorOptions& o) { o.recalibration_samples = 0; }), ErrorCode::invalid_argument,
               {"recalibration_samples"});
  expect_error(with([](MonitorOptions& o) { o.certify.epsilon = 2; }), ErrorCode::invalid_argument,
               {"certify.epsilon"});
}

TEST(GateMonitor, ZeroShadowRateTurnsMonitoringOff) {
  MonitorOptions options = test_options();
  options.shadow_rate = 0;
  Monitor monitor(good_certificate(5), options);
  std::mt19937_64 rng(13);
  int next_id = 0;
  run_normal_traffic(monitor, rng, 0.5, 5000, next_id);  // would alarm at once if watched
  const MonitorStats stats = monitor.stats();
  EXPECT_EQ(stats.state, GateState::normal);
  EXPECT_EQ(stats.alarms, 0u);
  EXPECT_GT(stats.accepted, 0u);
  EXPECT_EQ(stats.shadowed, 0u);
  EXPECT_EQ(stats.observed, 0u);
}

TEST(GateMonitor, JointRiskCountsRejectedProposalsAsObservations) {
  std::mt19937_64 rng(12);
  CertifyOptions joint;
  joint.risk = Risk::joint;
  // 2% everywhere: the joint risk 0.02 (1 − λ) is at most ε only above λ ≈ 0.5.
  const Certificate certificate = certify(flat_samples(rng, 3000, 0.02), joint);
  ASSERT_TRUE(certificate.certified) << certificate.reason;
  MonitorOptions options = test_options();
  options.certify = joint;
  Monitor monitor(certificate, options);
  int next_id = 0;
  run_normal_traffic(monitor, rng, 0.0, 2000, next_id);
  const MonitorStats stats = monitor.stats();
  EXPECT_GT(stats.executed, 0u);
  EXPECT_GT(stats.accepted, 0u);
  EXPECT_EQ(stats.observed, stats.decisions);  // accepted and rejected alike
}

TEST(GateMonitor, IsSafeToShareBetweenThreads) {
  Monitor monitor(good_certificate(4), test_options());
  constexpr int threads = 4, per_thread = 20000;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&monitor, t] {
      std::mt19937_64 rng(100 + t);
      std::uniform_real_distribution<double> uniform(0, 1);
      for (int i = 0; i < per_thread; ++i) {
        const Decision decision = monitor.decide(uniform(rng), -1, std::to_string(t) + ":" + std::to_string(i));
        if (decision.shadow) monitor.record_shadow(decision, false);
        else if (decision.accept) monitor.record_accepted_unshadowed(decision);
        if (i % 5000 == 0) (void)monitor.stats();
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  const MonitorStats stats = monitor.stats();
  EXPECT_EQ(stats.decisions, static_cast<std::size_t>(threads * per_thread));
  EXPECT_EQ(stats.accepted + stats.executed, stats.decisions);
  EXPECT_EQ(stats.observed, stats.accepted);
  EXPECT_EQ(stats.state, GateState::normal);
}

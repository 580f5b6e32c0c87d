// Adaptive Computation Modules: an FFN split into learners by its neurons.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "execute/acm/adaptive_ffn.hpp"
#include "execute/acm/ffn_learners.hpp"
#include "skim/error.hpp"
#include "test_support.hpp"

using namespace skim::execute::acm;
using skim::ErrorCode;

using skim::testing::random_vector;

namespace {

struct Ffn {
  Activation activation;
  int H, F;
  std::vector<float> up, up_bias, down, down_bias;
  // Neuron n's contribution to output o for input x, in double.
  double neuron(const float* x, int n, int o) const {
    double a = up_bias.empty() ? 0 : up_bias[n];
    for (int j = 0; j < H; ++j) a += double(up[static_cast<std::size_t>(n) * H + j]) * x[j];
    if (activation == Activation::gelu) {
      a = 0.5 * a * (1 + std::erf(a / std::sqrt(2.0)));
    } else {
      double u = 0;
      for (int j = 0; j < H; ++j) u += double(up[static_cast<std::size_t>(n + F) * H + j]) * x[j];
      a = a / (1 + std::exp(-a)) * u;
    }
    return a * down[static_cast<std::size_t>(o) * F + n];
  }
};

Ffn random_ffn(Activation activation, int H, int F) {
  Ffn f{activation, H, F, {}, {}, {}, {}};
  f.up = random_vector(static_cast<std::size_t>(activation == Activation::swiglu ? 2 * F : F) * H, 1, 0.15f);
  f.down = random_vector(static_cast<std::size_t>(H) * F, 2, 0.15f);
  if (activation == Activation::gelu) {
    f.up_bias = random_vector(F, 3, 0.1f);
    f.down_bias = random_vector(H, 4, 0.1f);
  }
  return f;
}

// Runs the learners with `rows_for` and checks each row against the sum of
// its first k groups' neurons (k = learners whose prefix holds the row).
void check(const Ffn& f, int learners, const std::vector<int>& rows_for) {
  const int rows = 7;
  std::vector<int> order(f.F);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(5));
  skim::kernels::Backend backend;
  skim::kernels::Scratch scratch(backend);
  FfnLearners acm(backend, f.activation, f.up, f.up_bias, f.down, f.down_bias, f.H, f.F, order, learners);
  auto x = random_vector(static_cast<std::size_t>(skim::kernels::Linear::padded_rows(rows)) * f.H, 6, 1.f);
  auto y = random_vector(static_cast<std::size_t>(skim::kernels::Linear::padded_rows(rows)) * f.H, 7, 1.f);
  const auto before = y;
  std::vector<float> buffer(acm.scratch_floats(rows));
  const auto flops = acm(x.data(), y.data(), rows_for, scratch, buffer.data());
  EXPECT_GT(flops.executed, 0);
  for (int r = 0; r < rows; ++r) {
    int k = 0;
    while (k < learners && rows_for[k] > r) ++k;
    int neurons = 0;
    for (int g = 0; g < k; ++g) neurons += acm.width(g);
    for (int o = 0; o < f.H; ++o) {
      double expect = before[r * f.H + o] + (k > 0 && !f.down_bias.empty() ? f.down_bias[o] : 0.0);
      for (int i = 0; i < neurons; ++i) expect += f.neuron(x.data() + r * f.H, order[i], o);
      ASSERT_NEAR(y[r * f.H + o], expect, 1e-4 * (1 + std::abs(expect))) << "row " << r << " (k " << k << ") out " << o;
    }
  }
}

}  // namespace

TEST(AcmLearners, AllLearnersReproduceTheGeluFfn) { check(random_ffn(Activation::gelu, 48, 96), 5, {7, 7, 7, 7, 7}); }

TEST(AcmLearners, AllLearnersReproduceTheSwigluFfn) {
  check(random_ffn(Activation::swiglu, 48, 100), 4, {7, 7, 7, 7});
}

TEST(AcmLearners, EachRowGetsItsFirstKLearners) {
  // Rows sorted by k descending: learner i runs on a prefix of them.
  check(random_ffn(Activation::gelu, 48, 96), 5, {7, 5, 5, 2, 0});
  check(random_ffn(Activation::swiglu, 48, 100), 4, {6, 6, 3, 1});
}

// With a refit: a row running k < N learners gets prefix k's own down
// projection (random here, no bias) over its neurons' activations; a row
// running all N, the FFN. Row counts chosen so that a middle segment's
// GEMM bucket (43 rows → 48) would reach into the next segment.
void check_refit(const Ffn& f, int learners, int rows, const std::vector<int>& rows_for) {
  std::vector<int> order(f.F);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(8));
  skim::kernels::Backend backend;
  skim::kernels::Scratch scratch(backend);
  FfnLearners acm(backend, f.activation, f.up, f.up_bias, f.down, f.down_bias, f.H, f.F, order, learners);
  std::vector<std::vector<float>> downs;
  for (int k = 1; k < learners; ++k)
    downs.push_back(random_vector(static_cast<std::size_t>(f.H) * acm.prefix_width(k), 20 + k, 0.2f));
  acm.set_refit(backend, downs);
  ASSERT_TRUE(acm.refit());
  const std::size_t padded = skim::kernels::Linear::padded_rows(rows);
  auto x = random_vector(padded * f.H, 9, 1.f);
  auto y = random_vector(padded * f.H, 10, 1.f);
  const auto before = y;
  std::vector<float> buffer(acm.scratch_floats(rows));
  acm(x.data(), y.data(), rows_for, scratch, buffer.data());
  for (int r = 0; r < rows; ++r) {
    int k = 0;
    while (k < learners && rows_for[k] > r) ++k;
    const int neurons = acm.prefix_width(k);
    for (int o = 0; o < f.H; ++o) {
      double expect = before[r * f.H + o];
      if (k == learners) {
        expect += f.down_bias.empty() ? 0.0 : f.down_bias[o];
        for (int i = 0; i < f.F; ++i) expect += f.neuron(x.data() + r * f.H, order[i], o);
      } else if (k > 0) {
        for (int i = 0; i < neurons; ++i) {
          const double unit_down = f.neuron(x.data() + r * f.H, order[i], o) / f.down[static_cast<std::size_t>(o) * f.F + order[i]];
          expect += unit_down * downs[k - 1][static_cast<std::size_t>(o) * neurons + i];
        }
      }
      ASSERT_NEAR(y[r * f.H + o], expect, 1e-5 * (1 + std::abs(expect))) << "row " << r << " (k " << k << ") out " << o;
    }
  }
}

TEST(AcmLearners, RefitPrefixesUseTheirOwnDownProjection) {
  check_refit(random_ffn(Activation::gelu, 48, 96), 4, 60, {60, 48, 5, 0});
  check_refit(random_ffn(Activation::swiglu, 40, 100), 5, 60, {60, 60, 48, 5, 5});
  check_refit(random_ffn(Activation::gelu, 48, 96), 4, 7, {7, 7, 7, 7});
  // Every k from 0 to N: segments of one row (the one-row path), of 14, and
  // of 17 and 18 rows starting mid-bucket (their buckets of 32 cross the
  // next segment, the last one past y's rows).
  check_refit(random_ffn(Activation::gelu, 48, 96), 6, 75, {70, 52, 35, 18, 17, 3});
  check_refit(random_ffn(Activation::swiglu, 40, 100), 6, 75, {70, 52, 35, 18, 17, 3});
}

TEST(AcmLearners, BadShapesAreNamed) {
  const Ffn f = random_ffn(Activation::gelu, 16, 32);
  std::vector<int> order(32);
  std::iota(order.begin(), order.end(), 0);
  skim::kernels::Backend backend;
  using skim::testing::expect_error;
  expect_error([&] { FfnLearners(backend, f.activation, f.up, f.up_bias, f.down, f.down_bias, 16, 32, order, 33); },
               ErrorCode::invalid_argument, {"33 learners", "width 32"});
  expect_error([&] { FfnLearners(backend, f.activation, f.up, f.up_bias, f.down, f.down_bias, 16, 32, order, 0); },
               ErrorCode::invalid_argument, {"0 learners"});
  order[3] = 4;
  expect_error([&] { FfnLearners(backend, f.activation, f.up, f.up_bias, f.down, f.down_bias, 16, 32, order, 4); },
               ErrorCode::model, {"not a permutation"});
  order[3] = 3;
  expect_error([&] { FfnLearners(backend, f.activation, f.up, f.up_bias, f.down, f.down_bias, 16, 30, order, 4); },
               ErrorCode::model, {"do not match"});
  FfnLearners acm(backend, f.activation, f.up, f.up_bias, f.down, f.down_bias, 16, 32, order, 4);
  expect_error([&] { acm.set_refit(backend, std::vector<std::vector<float>>(2)); }, ErrorCode::model,
               {"3 down projections"});
  expect_error([&] { acm.set_refit(backend, std::vector<std::vector<float>>(3, std::vector<float>(16 * 8))); },
               ErrorCode::model, {"2 learners", "16 × 16"});
}

namespace {

// An adaptive FFN over `f` with a gate that predicts log errors from the
// input (weights `gate_scale` × random) and random per-prefix corrections.
struct Adaptive {
  std::vector<int> order;
  std::vector<float> gate_weight, gate_bias, corrections;
  std::unique_ptr<AdaptiveFfn> ffn;
};

Adaptive make_adaptive(const Ffn& f, int learners, float gate_scale, skim::kernels::Backend& backend) {
  Adaptive a;
  a.order.resize(f.F);
  std::iota(a.order.begin(), a.order.end(), 0);
  std::shuffle(a.order.begin(), a.order.end(), std::mt19937(11));
  a.gate_weight = random_vector(static_cast<std::size_t>(learners) * f.H, 12, gate_scale);
  a.gate_bias.resize(learners);
  for (int j = 0; j < learners; ++j) a.gate_bias[j] = 1.f - 0.5f * j;  // errors fall with more learners
  a.corrections = random_vector(static_cast<std::size_t>(learners + 1) * f.H, 13, 0.05f);
  FfnLearners learners_(backend, f.activation, f.up, f.up_bias, f.down, f.down_bias, f.H, f.F, a.order, learners);
  a.ffn = std::make_unique<AdaptiveFfn>(3, std::move(learners_), a.gate_weight, a.gate_bias, a.corrections, backend);
  return a;
}

// residual + c_k + the first k learners' neurons, in double.
double expected_output(const Ffn& f, const Adaptive& a, const float* x, const float* residual, int k, int o) {
  double expect = residual[o] + a.corrections[static_cast<std::size_t>(k) * f.H + o] +
                  (k > 0 && !f.down_bias.empty() ? f.down_bias[o] : 0.0);
  const int neurons = k == a.ffn->learners() ? f.F : static_cast<int>((static_cast<std::size_t>(f.F) * k) / a.ffn->learners());
  for (int i = 0; i < neurons; ++i) expect += f.neuron(x, a.order[i], o);
  return expect;
}

}  // namespace

TEST(AcmAdaptiveFfn, EachRowRunsTheLearnersItsGateAsksForPlusItsCorrection) {
  for (Activation activation : {Activation::gelu, Activation::swiglu}) {
    const Ffn f = random_ffn(activation, 32, 64);
    const int N = 4, rows = 100;
    skim::kernels::Backend backend;
    skim::kernels::Scratch scratch(backend);
    Adaptive a = make_adaptive(f, N, 0.4f, backend);
    WidthScratch ws(rows, f.H, N, a.ffn->ffn_learners().scratch_floats(rows));
    const std::size_t n = static_cast<std::size_t>(skim::kernels::Linear::padded_rows(rows)) * f.H;
    const auto x = random_vector(n, 14, 1.f);
    auto y = random_vector(n, 15, 1.f);
    const auto before = y;
    GateRule rule{Gate::learned, 0.f, 0};
    const auto flops = a.ffn->operator()(x.data(), y.data(), rows, rule, ws, scratch);

    // The gate's own choice, from its predicted log errors.
    std::vector<float> scores(static_cast<std::size_t>(skim::kernels::Linear::padded_rows(rows)) * N);
    a.ffn->predict_log_errors(x.data(), rows, scores.data(), scratch);
    std::vector<int> per_k(N + 1, 0);
    for (int r = 0; r < rows; ++r) {
      int gate_k = 0;
      while (gate_k < N && scores[static_cast<std::size_t>(r) * N + gate_k] > 0.f) ++gate_k;
      const int k = ws.k[r];
      EXPECT_GE(k, gate_k) << "row " << r;  // padding only adds learners
      ++per_k[k];
      for (int o = 0; o < f.H; ++o) {
        const double expect = expected_output(f, a, x.data() + r * f.H, before.data() + r * f.H, k, o);
        ASSERT_NEAR(y[r * f.H + o], expect, 1e-4 * (1 + std::abs(expect))) << "row " << r << " k " << k;
      }
    }
    // The gate spread the rows over several k, and every learner that ran
    // ran on a whole GEMM bucket of rows (16) or on all of them.
    EXPECT_GE(std::count_if(per_k.begin(), per_k.end(), [](int c) { return c > 0; }), 2);
    for (int i = 0, above = rows; i < N; ++i) {
      above -= per_k[i];
      EXPECT_TRUE(above == 0 || above == rows || above % 16 == 0) << "learner " << i << " ran on " << above;
    }
    EXPECT_GT(flops.dense, flops.executed);
  }
}

TEST(AcmAdaptiveFfn, OracleAndUniformGates) {
  const Ffn f = random_ffn(Activation::gelu, 32, 64);
  const int N = 4, rows = 40;
  skim::kernels::Backend backend;
  skim::kernels::Scratch scratch(backend);
  Adaptive a = make_adaptive(f, N, 0.4f, backend);
  WidthScratch ws(rows, f.H, N, a.ffn->ffn_learners().scratch_floats(rows));
  const std::size_t n = static_cast<std::size_t>(skim::kernels::Linear::padded_rows(rows)) * f.H;
  const auto x = random_vector(n, 16, 1.f);
  auto check_all = [&](const GateRule& rule, int want_k) {
    auto y = x;  // in place, as the encoder calls it
    a.ffn->operator()(y.data(), y.data(), rows, rule, ws, scratch);
    for (int r = 0; r < rows; ++r) {
      ASSERT_EQ(ws.k[r], want_k) << "row " << r;
      for (int o = 0; o < f.H; ++o) {
        const double expect = expected_output(f, a, x.data() + r * f.H, x.data() + r * f.H, want_k, o);
        ASSERT_NEAR(y[r * f.H + o], expect, 1e-4 * (1 + std::abs(expect)));
      }
    }
  };
  check_all({Gate::uniform, 0, N}, N);        // every learner: the dense FFN plus c_N
  check_all({Gate::uniform, 0, 2}, 2);
  check_all({Gate::oracle, -100.f, 0}, N);    // no error tolerated: all learners
  check_all({Gate::oracle, 100.f, 0}, 0);     // any error tolerated: none
  // Between the two, a looser tolerance never asks for more learners, and
  // some tolerance splits the rows.
  double last_mean = N + 1;
  bool split = false;
  for (float log_epsilon = -6.f; log_epsilon <= 2.f; log_epsilon += 0.25f) {
    auto y = x;
    a.ffn->operator()(y.data(), y.data(), rows, {Gate::oracle, log_epsilon, 0}, ws, scratch);
    double mean = 0;
    for (int r = 0; r < rows; ++r) mean += ws.k[r], split |= ws.k[r] != ws.k[0];
    mean /= rows;
    EXPECT_LE(mean, last_mean + 1e-9) << "log ε " << log_epsilon;
    last_mean = mean;
  }
  EXPECT_TRUE(split);
}

TEST(AcmAdaptiveFfn, BadShapesAreNamed) {
  const Ffn f = random_ffn(Activation::gelu, 16, 32);
  std::vector<int> order(32);
  std::iota(order.begin(), order.end(), 0);
  skim::kernels::Backend backend;
  std::vector<float> gate_w(4 * 16), gate_b(4), corrections(5 * 16);
  using skim::testing::expect_error;
  expect_error([&] {
    AdaptiveFfn(2, FfnLearners(backend, f.activation, f.up, f.up_bias, f.down, f.down_bias, 16, 32, order, 4),
                std::span(gate_w).first(60), gate_b, corrections, backend);
  }, ErrorCode::model, {"ACM layer 2", "4 learners"});
  expect_error([&] {
    AdaptiveFfn(2, FfnLearners(backend, f.activation, f.up, f.up_bias, f.down, f.down_bias, 16, 32, order, 4), gate_w,
                gate_b, std::vector<float>(4 * 16), backend);
  }, ErrorCode::model, {"corrections"});
}

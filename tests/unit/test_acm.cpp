// Adaptive Computation Modules: an FFN split into learners by its neurons.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "execute/acm/ffn_learners.hpp"
#include "skim/error.hpp"
#include "test_support.hpp"

using namespace skim::execute::acm;
using skim::ErrorCode;

namespace {

std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

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
}

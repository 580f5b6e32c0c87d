// Kernels against straightforward loops.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/backend.hpp"
#include "kernels/matmul.hpp"
#include "kernels/ops.hpp"
#include "test_support.hpp"

using namespace skim::kernels;
using skim::testing::random_vector;

namespace {

float gelu(float x) { return 0.5f * x * (1.f + std::erf(x / std::sqrt(2.f))); }

// y = x·Wᵀ + b computed in double, for rows × in times [out, in].
std::vector<double> reference_linear(const std::vector<float>& x, std::size_t ld_x, const std::vector<float>& w,
                                     const std::vector<float>& b, int rows, int in, int out) {
  std::vector<double> y(static_cast<std::size_t>(rows) * out);
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o) {
      double s = b[o];
      for (int i = 0; i < in; ++i) s += double(x[r * ld_x + i]) * w[static_cast<std::size_t>(o) * in + i];
      y[static_cast<std::size_t>(r) * out + o] = s;
    }
  return y;
}

}  // namespace

class LinearTest : public ::testing::TestWithParam<int> {};

TEST_P(LinearTest, MatchesReferenceForEveryEpilogue) {
  const int rows = GetParam(), in = 97, out = 80;  // a partial k block and a partial column block
  Backend backend;
  Scratch scratch(backend);
  const std::size_t ld_x = in + 16, ld_y = out + 8;  // strided slices of wider buffers
  auto w = random_vector(static_cast<std::size_t>(in) * out, 1, 0.1f);
  auto b = random_vector(out, 2);
  auto x = random_vector(Linear::padded_rows(rows) * ld_x, 3);  // room for the padded row bucket
  auto ref = reference_linear(x, ld_x, w, b, rows, in, out);
  for (auto [e, path] : {std::pair{Epilogue::none, OneRowPath::same_as_batch},
                         {Epilogue::gelu_erf, OneRowPath::same_as_batch},
                         {Epilogue::add_to_output, OneRowPath::same_as_batch},
                         {Epilogue::tanh, OneRowPath::same_as_batch},
                         {Epilogue::none, OneRowPath::streaming},
                         {Epilogue::gelu_erf, OneRowPath::streaming},
                         {Epilogue::add_to_output, OneRowPath::streaming},
                         {Epilogue::tanh, OneRowPath::streaming}}) {
    SCOPED_TRACE(static_cast<int>(path));
    Linear linear(backend, w, b, in, out, e, WeightPrecision::f32, path);
    auto y = random_vector(Linear::padded_rows(rows) * ld_y, 4);
    const auto before = y;
    linear(x.data(), ld_x, y.data(), ld_y, rows, scratch);
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) {
        double expect = ref[static_cast<std::size_t>(r) * out + o];
        if (e == Epilogue::gelu_erf) expect = gelu(static_cast<float>(expect));
        if (e == Epilogue::tanh) expect = std::tanh(expect);
        if (e == Epilogue::add_to_output) expect += before[r * ld_y + o];
        ASSERT_NEAR(y[r * ld_y + o], expect, 1e-4 * (1 + std::abs(expect))) << "row " << r << " col " << o;
      }
    // Columns past `out` in each row belong to someone else: untouched.
    for (int r = 0; r < rows; ++r)
      for (std::size_t o = out; o < ld_y; ++o) ASSERT_EQ(y[r * ld_y + o], before[r * ld_y + o]);
  }
}

TEST_P(LinearTest, Bf16WeightsStayWithinBf16Rounding) {
  const int rows = GetParam(), in = 97, out = 80;
  Backend backend;
  Scratch scratch(backend);
  auto w = random_vector(static_cast<std::size_t>(in) * out, 1, 0.1f);
  auto b = random_vector(out, 2);
  auto x = random_vector(Linear::padded_rows(rows) * in, 3);
  auto ref = reference_linear(x, in, w, b, rows, in, out);
  for (auto path : {OneRowPath::same_as_batch, OneRowPath::streaming}) {
    Linear linear(backend, w, b, in, out, Epilogue::none, WeightPrecision::bf16, path);
    std::vector<float> y(Linear::padded_rows(rows) * out);
    linear(x.data(), y.data(), rows, scratch);
    // Each product carries two bf16 roundings (2^-8 relative each); the sum of
    // 97 terms of size ~0.1 stays within a few 1e-2.
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) ASSERT_NEAR(y[r * out + o], ref[r * out + o], 3e-2) << r << "," << o;
  }
}

// The streaming one-row kernel sums k in one chain; oneDNN blocks k. Both are
// f32 sums of the same products, so they agree to rounding, and a session's
// scratch keeps working across Linears created and destroyed under it (its
// bindings once keyed on addresses a new primitive could reuse).
TEST(Linear, StreamingOneRowAgreesWithTheBatchedGemm) {
  Backend backend;
  Scratch scratch(backend);
  for (int round = 0; round < 4; ++round)
    for (auto precision : {WeightPrecision::f32, WeightPrecision::bf16}) {
      const int in = 768, out = 1000;  // 3 MB of f32 weights: the huge-page path
      auto w = random_vector(static_cast<std::size_t>(in) * out, 10 + round, 0.05f);
      auto b = random_vector(out, 20 + round);
      auto x = random_vector(Linear::padded_rows(20) * in, 30 + round);
      Linear linear(backend, w, b, in, out, Epilogue::add_to_output, precision, OneRowPath::streaming);
      std::vector<float> batch(Linear::padded_rows(20) * out, 1.f), one(out, 1.f);
      linear(x.data(), batch.data(), 20, scratch);
      linear(x.data() + 7 * in, one.data(), 1, scratch);
      for (int o = 0; o < out; ++o) ASSERT_NEAR(one[o], batch[7 * out + o], 2e-5 * (1 + std::abs(batch[7 * out + o])));
    }
}

INSTANTIATE_TEST_SUITE_P(RowCounts, LinearTest, ::testing::Values(1, 7, 8, 13, 64, 130));

TEST(LayerNorm, MatchesReference) {
  const int rows = 5, width = 48;
  auto x = random_vector(rows * width, 5, 3.f);
  auto g = random_vector(width, 6), b = random_vector(width, 7);
  auto y = x;
  LayerNorm{g.data(), b.data(), width, 1e-12f}(y.data(), width, rows);
  for (int r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int j = 0; j < width; ++j) mean += x[r * width + j];
    mean /= width;
    for (int j = 0; j < width; ++j) var += (x[r * width + j] - mean) * (x[r * width + j] - mean);
    var /= width;
    for (int j = 0; j < width; ++j)
      EXPECT_NEAR(y[r * width + j], (x[r * width + j] - mean) / std::sqrt(var + 1e-12) * g[j] + b[j], 1e-4);
  }
}

TEST(Softmax, StableForLargeInputs) {
  std::vector<float> v = {1000.f, 1001.f, 999.f};
  softmax(v);
  EXPECT_NEAR(v[0] + v[1] + v[2], 1.f, 1e-6);
  EXPECT_GT(v[1], v[0]);
  EXPECT_FALSE(std::isnan(v[2]));
}

TEST(Attention, PackedSegmentsMatchPerSequenceReference) {
  const int heads = 3, hd = 8, H = heads * hd;
  const std::vector<int> lengths = {5, 1, 9};
  int rows = 0;
  std::vector<AttentionSegment> segs;
  for (int n : lengths) {
    segs.push_back({rows, n, rows, n});
    rows += n;
  }
  auto q = random_vector(rows * H, 8), k = random_vector(rows * H, 9), v = random_vector(rows * H, 10);
  std::vector<float> out(rows * H, 0.f), scratch(Attention::scratch_floats(9, 9, 4));
  const float scale = 1.f / std::sqrt(float(hd));
  Attention{heads, hd, scale}(q.data(), H, k.data(), v.data(), H, out.data(), H, segs, scratch.data(), 4);
  for (const auto& s : segs)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < s.q_count; ++i) {
        std::vector<double> p(s.kv_count);
        double mx = -1e30, sum = 0;
        for (int j = 0; j < s.kv_count; ++j) {
          double d = 0;
          for (int c = 0; c < hd; ++c) d += double(q[(s.q_begin + i) * H + h * hd + c]) * k[(s.kv_begin + j) * H + h * hd + c];
          p[j] = d * scale;
          mx = std::max(mx, p[j]);
        }
        for (auto& x : p) sum += (x = std::exp(x - mx));
        for (int c = 0; c < hd; ++c) {
          double o = 0;
          for (int j = 0; j < s.kv_count; ++j) o += p[j] / sum * v[(s.kv_begin + j) * H + h * hd + c];
          ASSERT_NEAR(out[(s.q_begin + i) * H + h * hd + c], o, 1e-5);
        }
      }
}

TEST(GatherScatter, RoundTrip) {
  const int width = 6;
  auto src = random_vector(10 * width, 11);
  std::vector<std::int32_t> rows = {1, 4, 9};
  std::vector<float> packed(rows.size() * width), back(10 * width, 0.f);
  gather_rows(src.data(), width, rows, packed.data(), width, width);
  scatter_rows(packed.data(), width, rows, back.data(), width, width);
  for (int r : rows)
    for (int j = 0; j < width; ++j) EXPECT_EQ(back[r * width + j], src[r * width + j]);
  EXPECT_EQ(back[0], 0.f);
}

// A column slice shares the packed weights and computes those columns.
TEST(Linear, ColumnSliceComputesItsColumnsFromTheSameWeights) {
  Backend backend;
  Scratch scratch(backend);
  const int in = 96, out = 192, rows = 5;
  auto w = random_vector(static_cast<std::size_t>(in) * out, 40, 0.1f);
  auto b = random_vector(out, 41);
  auto x = random_vector(static_cast<std::size_t>(rows) * in, 42);
  for (auto precision : {WeightPrecision::f32, WeightPrecision::bf16}) {
    Linear full(backend, w, b, in, out, Epilogue::none, precision, OneRowPath::streaming);
    std::vector<float> y(rows * out), part(rows * 128), one(128);
    full(x.data(), y.data(), rows, scratch);
    auto slice = full.column_slice(64, 128);
    ASSERT_TRUE(slice.has_value());
    EXPECT_EQ(slice->out_features(), 128);
    (*slice)(x.data(), part.data(), rows, scratch);
    (*slice)(x.data(), one.data(), 1, scratch);  // the streaming one-row kernel over the view
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < 128; ++o) ASSERT_NEAR(part[r * 128 + o], y[r * out + 64 + o], 1e-5) << r << "," << o;
    for (int o = 0; o < 128; ++o) ASSERT_NEAR(one[o], y[64 + o], 1e-4) << o;
    EXPECT_FALSE(full.column_slice(32, 64).has_value());   // not whole 64-column blocks
    EXPECT_FALSE(full.column_slice(128, 128).has_value());  // past the end
  }
}

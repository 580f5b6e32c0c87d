// Q8_0 weights computed in int8, against loops written from the format's
// definition (an fp16 scale d and 32 int8 q per block; value d·q).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "format/tensor.hpp"
#include "kernels/backend.hpp"
#include "kernels/matmul.hpp"
#include "kernels/q8_0.hpp"
#include "skim/error.hpp"

using namespace skim::kernels;

namespace {

// GGUF Q8_0 data for an [out, in] matrix: random scales and quants.
std::vector<std::byte> random_blocks(int in, int out, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> q(-127, 127);
  std::uniform_int_distribution<int> mantissa(0, 1023), exponent(5, 12);  // scales 2^-10 .. 2^-3
  std::vector<std::byte> blocks(static_cast<std::size_t>(out) * (in / 32) * 34);
  for (std::size_t b = 0; b < blocks.size() / 34; ++b) {
    const auto scale = static_cast<std::uint16_t>((exponent(rng) << 10) | mantissa(rng));
    std::memcpy(blocks.data() + b * 34, &scale, 2);
    for (int i = 0; i < 32; ++i) blocks[b * 34 + 2 + i] = static_cast<std::byte>(static_cast<std::int8_t>(q(rng)));
    // As a Q8_0 quantizer writes them: the block's largest |q| is 127.
    blocks[b * 34 + 2 + b % 32] = static_cast<std::byte>(static_cast<std::int8_t>(b % 2 ? 127 : -127));
  }
  return blocks;
}

std::vector<float> dequantized(const std::vector<std::byte>& blocks, int in, int out) {
  const skim::format::TensorView view{"w", skim::format::DType::q8_0, {out, in}, blocks, "test"};
  return skim::format::to_f32(view);
}

std::vector<float> random_rows(int rows, int in, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> x(static_cast<std::size_t>(rows) * in);
  for (auto& v : x) v = d(rng);
  return x;
}

}  // namespace

class Q8Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Q8Matrix::supported()) GTEST_SKIP() << "no AVX-512 VNNI: Q8_0 runs as f32 here";
  }
  Backend backend;
  Scratch scratch{backend};
};

TEST_F(Q8Test, PackingKeepsEveryGgufValue) {
  const int in = 96, out = 70;  // 70: a partial column block
  const auto blocks = random_blocks(in, out, 1);
  EXPECT_EQ(Q8Matrix::from_blocks(blocks, in, out).dequantize(), dequantized(blocks, in, out));
}

TEST_F(Q8Test, QuantizesFloatsWithTheQ8_0Rule) {
  // d = max|w|/127 per block of 32, stored as fp16; q = round(w/d), computed
  // as w·(1/d) (llama.cpp's reference quantizer, which GGUF files carry).
  const int in = 64, out = 3;
  auto w = random_rows(out, in, 2);
  w[5] = 0.f;
  for (int i = 32; i < 64; ++i) w[2 * in + i] = 0.f;  // an all-zero block: d = 0, q = 0
  const auto m = Q8Matrix::quantize(w, in, out);
  const auto values = m.dequantize();
  for (int n = 0; n < out; ++n)
    for (int b = 0; b < in / 32; ++b) {
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(w[n * in + b * 32 + i]));
      const float d = amax / 127.f, inverse = d != 0.f ? 1.f / d : 0.f;
      for (int i = 0; i < 32; ++i) {
        const float q = std::round(w[n * in + b * 32 + i] * inverse);
        const float value = values[n * in + b * 32 + i];
        // value = fp16(d)·q: within fp16 rounding of d·q, and exactly 0 with q.
        if (q == 0.f) {
          EXPECT_EQ(value, 0.f);
        } else {
          EXPECT_NEAR(value / q, d, d * 1e-3) << n << "," << b << "," << i;
        }
      }
    }
}

TEST_F(Q8Test, LinearComputesTheInt8DotProductsExactly) {
  // What the kernel promises: activations quantized per block of 32 (d_x =
  // max|x|/127, q_x rounded to nearest), then Σ_blocks d_w·d_x·Σ q_w·q_x.
  const int in = 160, out = 130, rows = 5;
  const auto blocks = random_blocks(in, out, 3);
  const auto w = dequantized(blocks, in, out);
  std::vector<float> bias(out);
  for (int n = 0; n < out; ++n) bias[n] = 0.01f * n;
  const auto x = random_rows(rows, in, 4);
  Linear linear(backend, blocks, bias, in, out, Epilogue::add_to_output);
  EXPECT_EQ(linear.precision(), WeightPrecision::q8_0);
  std::vector<float> y(rows * out, 1.f);
  linear(x.data(), y.data(), rows, scratch);
  for (int r = 0; r < rows; ++r)
    for (int n = 0; n < out; ++n) {
      double exact = 0, unquantized = 0, magnitude = 0;
      for (int b = 0; b < in / 32; ++b) {
        float amax = 0;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[r * in + b * 32 + i]));
        const float dx = amax / 127.f;
        for (int i = 0; i < 32; ++i) {
          const int k = b * 32 + i;
          const double qx = dx != 0 ? std::nearbyint(x[r * in + k] * (1.f / dx)) : 0;
          exact += double(w[n * in + k]) * dx * qx;
          unquantized += double(w[n * in + k]) * x[r * in + k];
          magnitude += std::fabs(double(w[n * in + k]) * x[r * in + k]);
        }
      }
      const double expect = 1.0 + bias[n] + exact;
      ASSERT_NEAR(y[r * out + n], expect, 1e-5 * (1 + magnitude)) << r << "," << n;
      // And the int8 activations cost at most about 1/254 of Σ|w·x|.
      ASSERT_NEAR(y[r * out + n], 1.0 + bias[n] + unquantized, magnitude / 200) << r << "," << n;
    }
}

TEST_F(Q8Test, OneRowHasTheBitsItHasInABatch) {
  // The router compares the transformer with itself across calls: a row's
  // result must not depend on what else ran with it.
  const int in = 768, out = 700;
  const auto blocks = random_blocks(in, out, 5);
  const auto x = random_rows(9, in, 6);
  Linear linear(backend, blocks, {}, in, out, Epilogue::none);
  std::vector<float> batch(9 * out), one(out);
  linear(x.data(), batch.data(), 9, scratch);
  for (int r = 0; r < 9; ++r) {
    linear(x.data() + r * in, one.data(), 1, scratch);
    ASSERT_EQ(0, std::memcmp(one.data(), batch.data() + r * out, out * sizeof(float))) << "row " << r;
  }
}

TEST_F(Q8Test, FloatWeightsQuantizedAtLoadMatchTheirQ8_0Twin) {
  // q8_0 packing of float weights is quantize-then-run: the same results as
  // Linear over the GGUF blocks of the same matrix.
  const int in = 64, out = 40;
  const auto blocks = random_blocks(in, out, 7);
  // Re-quantizing d·q gives back d and q when a block's largest |q| is 127.
  const auto w = dequantized(blocks, in, out);
  const auto x = random_rows(3, in, 8);
  Linear from_blocks(backend, blocks, {}, in, out, Epilogue::none);
  Linear from_floats(backend, w, {}, in, out, Epilogue::none, WeightPrecision::q8_0);
  std::vector<float> a(3 * out), b(3 * out);
  from_blocks(x.data(), a.data(), 3, scratch);
  from_floats(x.data(), b.data(), 3, scratch);
  EXPECT_EQ(a, b);
}

TEST(Q8Blocks, WrongByteCountIsAnError) {
  Backend backend;
  std::vector<std::byte> blocks(33 * 34);
  EXPECT_THROW(Linear(backend, blocks, {}, 64, 17, Epilogue::none), skim::Error);
  EXPECT_THROW(Linear(backend, std::vector<std::byte>(34), {}, 20, 1, Epilogue::none), skim::Error);  // in % 32
}

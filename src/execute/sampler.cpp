#include "execute/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "skim/error.hpp"

namespace skim::execute {

Sampler::Sampler(const SamplingSettings& s, int vocab)
    : settings_(s), state_(s.seed ^ 0x9E3779B97F4A7C15ull), order_(static_cast<std::size_t>(vocab)) {
  if (!(s.temperature >= 0.f) || !std::isfinite(s.temperature))
    throw Error(ErrorCode::invalid_argument, "temperature must be a finite number ≥ 0, got " + std::to_string(s.temperature));
  if (s.top_k < 0) throw Error(ErrorCode::invalid_argument, "top_k must be ≥ 0, got " + std::to_string(s.top_k));
  if (!(s.top_p > 0.f && s.top_p <= 1.f))
    throw Error(ErrorCode::invalid_argument, "top_p must be in (0, 1], got " + std::to_string(s.top_p));
  if (state_ == 0) state_ = 1;
}

float Sampler::next_uniform() {
  // xorshift64*: small, fast, and fully specified here.
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  const std::uint64_t r = state_ * 0x2545F4914F6CDD1Dull;
  return static_cast<float>(r >> 40) / 16777216.0f;
}

std::int32_t Sampler::sample(std::span<float> logits) {
  const int n = static_cast<int>(logits.size());
  if (settings_.temperature == 0.f)
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());

  // Candidates in descending logit order (only the top k need sorting).
  std::iota(order_.begin(), order_.begin() + n, 0);
  const int k = settings_.top_k > 0 ? std::min(settings_.top_k, n) : n;
  auto by_logit = [&](std::int32_t a, std::int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(order_.begin(), order_.begin() + k, order_.begin() + n, by_logit);

  // Softmax over the candidates at the given temperature.
  const float top = logits[order_[0]];
  double sum = 0;
  for (int i = 0; i < k; ++i) {
    float& l = logits[order_[i]];
    l = std::exp((l - top) / settings_.temperature);
    sum += l;
  }
  // Nucleus: the smallest prefix whose mass reaches top_p.
  int keep = k;
  if (settings_.top_p < 1.f) {
    double mass = 0;
    for (int i = 0; i < k; ++i) {
      mass += logits[order_[i]] / sum;
      if (mass >= settings_.top_p) {
        keep = i + 1;
        break;
      }
    }
    sum = 0;
    for (int i = 0; i < keep; ++i) sum += logits[order_[i]];
  }
  const double u = next_uniform() * sum;
  double acc = 0;
  for (int i = 0; i < keep; ++i) {
    acc += logits[order_[i]];
    if (u < acc) return order_[i];
  }
  return order_[keep - 1];  // rounding left u at the very top
}

}  // namespace skim::execute

#pragma once
// Picks the next token from logits: greedy, or temperature with top-k and
// top-p (nucleus) filtering, driven by a seeded generator of our own so the
// same seed gives the same tokens on every platform and library version.
#include <cstdint>
#include <span>
#include <vector>

namespace skim::execute {

struct SamplingSettings {
  float temperature = 0.f;  // 0: greedy (argmax)
  int top_k = 0;            // 0: no limit
  float top_p = 1.f;        // 1: no limit
  std::uint64_t seed = 0;
};

class Sampler {
 public:
  Sampler(const SamplingSettings& settings, int vocab);
  // `logits` is used as scratch.
  std::int32_t sample(std::span<float> logits);

 private:
  float next_uniform();  // [0, 1)
  SamplingSettings settings_;
  std::uint64_t state_;
  std::vector<std::int32_t> order_;
};

}  // namespace skim::execute

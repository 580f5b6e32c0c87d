#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace skim {

// Which stage produced an answer. Only `transformer` exists until the
// meaning-first router lands; the others are part of the contract already.
enum class Route { cache, rule, proposer, transformer };
std::string_view to_string(Route route) noexcept;

// What an answer cost, next to what the dense transformer would have cost.
struct Cost {
  double flops = 0;        // floating-point operations executed
  double dense_flops = 0;  // what the dense model spends on the same input
  double seconds = 0;      // wall time of the call, per input for batched calls
};

struct Answer {
  std::string label;  // id2label of the winning class
  int label_id = -1;
  float score = 0;  // softmax probability of `label`
  Route route = Route::transformer;
  Cost cost;
  std::size_t tokens = 0;  // tokens the transformer saw (special tokens included)
  bool truncated = false;  // the input was longer than max_sequence_length
  std::vector<float> logits;  // raw classifier outputs, one per label
};

struct Embedding {
  std::vector<float> values;  // hidden-size vector (CLS or mean pooled)
  Cost cost;
  std::size_t tokens = 0;
  bool truncated = false;
};

}  // namespace skim

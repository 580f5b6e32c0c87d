#pragma once

namespace skim::execute {

// FLOPs of a forward pass: what ran, and what the dense model would have run,
// so routed blocks can report what they skipped.
struct FlopCount {
  double executed = 0;
  double dense = 0;
  // The FFNs' part of both (included above), for width-level skipping.
  double ffn_executed = 0;
  double ffn_dense = 0;
  FlopCount& operator+=(const FlopCount& o) {
    executed += o.executed;
    dense += o.dense;
    ffn_executed += o.ffn_executed;
    ffn_dense += o.ffn_dense;
    return *this;
  }
};

}  // namespace skim::execute

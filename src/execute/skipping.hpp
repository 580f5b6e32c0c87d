#pragma once
// What one forward pass skips, for encoders and decoders alike: the two
// routings decide index lists and learner counts; the model code consumes them.
#include <functional>

#include "execute/acm/adaptive_ffn.hpp"
#include "execute/mod/token_routing.hpp"

namespace skim::execute {

// Either part may be absent.
struct Skipping {
  const mod::TokenRouting* tokens = nullptr;  // Mixture-of-Depths: rows a block runs
  const acm::WidthRouting* width = nullptr;   // Adaptive Computation Modules: learners a row's FFN runs
};

// Sees a dense FFN's input rows (rows × hidden, what its first GEMM reads)
// and activations (rows × FFN width, what its down projection reads) in
// layer `layer`, for calibration.
using FfnProbe = std::function<void(int layer, const float* input, const float* activations, int rows)>;

}  // namespace skim::execute

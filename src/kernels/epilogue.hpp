#pragma once
// Private to kernels/: the epilogue of skim's own GEMM loops, in the order
// oneDNN's epilogue applies it (bias first, then the residual), so a result
// differs from oneDNN's only where the sums themselves do.
#include <cmath>

#include "kernels/matmul.hpp"

namespace skim::kernels {

inline float apply_epilogue(Epilogue epilogue, float value, float old) {
  switch (epilogue) {
    case Epilogue::none: return value;
    case Epilogue::add_to_output: return old + value;
    case Epilogue::gelu_erf: return 0.5f * value * (1.f + std::erf(value * 0.70710678118654752f));
    case Epilogue::tanh: return std::tanh(value);
  }
  return value;
}

// y[first, first + count) from the sums of those columns.
inline void finish_columns(const float* sums, const float* bias, float* y, int first, int count, Epilogue epilogue) {
  for (int j = 0; j < count; ++j) {
    const int n = first + j;
    y[n] = apply_epilogue(epilogue, sums[j] + (bias ? bias[n] : 0.f), y[n]);
  }
}

}  // namespace skim::kernels

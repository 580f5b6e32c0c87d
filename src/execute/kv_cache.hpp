#pragma once
// Keys and values of every layer for the tokens a session has seen so far.
// Owned by a Session; sized once for the model's context.
#include <cstddef>

#include "kernels/aligned_buffer.hpp"

namespace skim::execute {

class KvCache {
 public:
  KvCache(int layers, int context, int kv_width)
      : layers_(layers), context_(context), kv_width_(kv_width),
        keys_(static_cast<std::size_t>(layers) * context * kv_width),
        values_(static_cast<std::size_t>(layers) * context * kv_width) {}

  float* keys(int layer) noexcept { return keys_.data() + offset(layer); }
  float* values(int layer) noexcept { return values_.data() + offset(layer); }
  int length() const noexcept { return length_; }  // tokens cached
  int context() const noexcept { return context_; }
  int kv_width() const noexcept { return kv_width_; }
  void set_length(int n) noexcept { length_ = n; }
  void clear() noexcept { length_ = 0; }

 private:
  std::size_t offset(int layer) const noexcept { return static_cast<std::size_t>(layer) * context_ * kv_width_; }
  int layers_, context_, kv_width_;
  int length_ = 0;
  kernels::AlignedBuffer<float> keys_, values_;
};

}  // namespace skim::execute

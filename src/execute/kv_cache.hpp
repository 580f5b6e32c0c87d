#pragma once
// Keys and values of every layer for the tokens a session has seen so far.
// Owned by a Session; sized once for the model's context.
//
// A layer holds entries(layer) rows of keys and values, in order of
// position. A dense layer (and a post-hoc Mixture-of-Depths one) holds one
// per token seen: entries == length, row p is position p. A layer a native
// Mixture-of-Depths block routes holds only the tokens it routed, compactly
// (row i is the i-th routed token; its position is baked into its key by
// RoPE), so entries ≤ length and nothing is stored or attended for skipped
// tokens. Same storage either way: context rows per layer.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernels/aligned_buffer.hpp"

namespace skim::execute {

class KvCache {
 public:
  KvCache(int layers, int context, int kv_width)
      : layers_(layers), context_(context), kv_width_(kv_width),
        keys_(static_cast<std::size_t>(layers) * context * kv_width),
        values_(static_cast<std::size_t>(layers) * context * kv_width), entries_(layers, 0) {}

  float* keys(int layer) noexcept { return keys_.data() + offset(layer); }
  float* values(int layer) noexcept { return values_.data() + offset(layer); }
  int length() const noexcept { return length_; }  // tokens cached
  int context() const noexcept { return context_; }
  int kv_width() const noexcept { return kv_width_; }
  void set_length(int n) noexcept { length_ = n; }
  int entries(int layer) const noexcept { return entries_[layer]; }  // rows of keys and values held
  void set_entries(int layer, int n) noexcept { entries_[layer] = n; }
  void clear() noexcept {
    length_ = 0;
    std::fill(entries_.begin(), entries_.end(), 0);
  }

 private:
  std::size_t offset(int layer) const noexcept { return static_cast<std::size_t>(layer) * context_ * kv_width_; }
  int layers_, context_, kv_width_;
  int length_ = 0;
  kernels::AlignedBuffer<float> keys_, values_;
  std::vector<int> entries_;
};

}  // namespace skim::execute

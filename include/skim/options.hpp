#pragma once
#include <cstddef>

namespace skim {

// How an Engine runs. Fluent: Options().threads(2).max_sequence_length(128).
class Options {
 public:
  // Worker threads for oneDNN and Eigen alike; 0 means one per hardware core.
  Options& threads(int n);
  int threads() const noexcept { return threads_; }

  // Longest token sequence (special tokens included) a request may use; longer
  // input is truncated and the Answer says so. 0 means the model's own limit.
  Options& max_sequence_length(std::size_t n);
  std::size_t max_sequence_length() const noexcept { return max_sequence_length_; }

  // Largest number of texts one batched call packs together; bigger spans are
  // run in chunks of this size. Bounds the scratch arena a Session owns.
  Options& max_batch_size(std::size_t n);
  std::size_t max_batch_size() const noexcept { return max_batch_size_; }

 private:
  int threads_ = 0;
  std::size_t max_sequence_length_ = 0;
  std::size_t max_batch_size_ = 32;
};

}  // namespace skim

#include "skim/options.hpp"

#include <string>

#include "skim/answer.hpp"
#include "skim/error.hpp"

namespace skim {

Options& Options::threads(int n) {
  if (n < 0) throw Error(ErrorCode::invalid_argument, "Options::threads: " + std::to_string(n) + " is negative");
  threads_ = n;
  return *this;
}

Options& Options::max_sequence_length(std::size_t n) {
  if (n == 1 || n == 2)
    throw Error(ErrorCode::invalid_argument,
                "Options::max_sequence_length: " + std::to_string(n) + " leaves no room for text besides [CLS] [SEP]");
  max_sequence_length_ = n;
  return *this;
}

Options& Options::tokenizer(std::string path) {
  tokenizer_ = std::move(path);
  return *this;
}

Options& Options::max_batch_tokens(std::size_t n) {
  max_batch_tokens_ = n;
  return *this;
}

std::string_view to_string(Route route) noexcept {
  switch (route) {
    case Route::cache: return "cache";
    case Route::rule: return "rule";
    case Route::proposer: return "proposer";
    case Route::transformer: return "transformer";
  }
  return "unknown";
}

}  // namespace skim

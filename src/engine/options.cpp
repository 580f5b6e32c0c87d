#include "skim/options.hpp"

#include <string>

#include "skim/answer.hpp"
#include "skim/error.hpp"
#include "skim/router.hpp"

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

Options& Options::shadow_rate(double rate) {
  if (!(rate >= 0 && rate <= 1))
    throw Error(ErrorCode::invalid_argument, "Options::shadow_rate: " + std::to_string(rate) + " is outside [0, 1]");
  shadow_rate_ = rate;
  return *this;
}

Options& Options::mod_capacity(double capacity) {
  if (!(capacity >= 0 && capacity <= 1))
    throw Error(ErrorCode::invalid_argument,
                "Options::mod_capacity: " + std::to_string(capacity) + " is outside (0, 1] (0 keeps the package's)");
  mod_capacity_ = capacity;
  return *this;
}

Options& Options::acm_budget(double budget) {
  if (!(budget >= 0 && budget <= 1))
    throw Error(ErrorCode::invalid_argument,
                "Options::acm_budget: " + std::to_string(budget) + " is outside (0, 1] (0 keeps the package's)");
  acm_budget_ = budget;
  return *this;
}

Options& Options::alarm_level(double alpha) {
  if (!(alpha > 0 && alpha < 1))
    throw Error(ErrorCode::invalid_argument, "Options::alarm_level: " + std::to_string(alpha) + " is outside (0, 1)");
  alarm_level_ = alpha;
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

std::string_view to_string(Risk risk) noexcept {
  switch (risk) {
    case Risk::selective: return "selective";
    case Risk::joint: return "joint";
  }
  return "unknown";
}

std::string_view to_string(GateState state) noexcept {
  switch (state) {
    case GateState::off: return "off";
    case GateState::normal: return "normal";
    case GateState::collecting: return "collecting";
  }
  return "unknown";
}

}  // namespace skim

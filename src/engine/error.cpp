#include "skim/error.hpp"

namespace skim {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::io: return "io";
    case ErrorCode::format: return "format";
    case ErrorCode::model: return "model";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::text: return "text";
    case ErrorCode::internal: return "internal";
  }
  return "unknown";
}

}  // namespace skim

#pragma once
// skim reports every failure at the C++ boundary as skim::Error: a code a
// program can branch on and a message a person can act on (it names the file,
// tensor or field and the position where the input went wrong).
#include <stdexcept>
#include <string>

namespace skim {

enum class ErrorCode {
  invalid_argument,  // a bad option or call argument (empty text, threads < 0, ...)
  io,                // a file could not be opened, mapped or read
  format,            // a file's bytes are malformed (truncated, lying header, bad JSON)
  model,             // a well-formed file that does not describe a usable model
  unsupported,       // valid but not handled by skim (model_type, dtype, ...)
  text,              // text that cannot be tokenized (invalid UTF-8, ...)
  internal,          // a bug in skim or a kernel library failure
};

const char* to_string(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace skim

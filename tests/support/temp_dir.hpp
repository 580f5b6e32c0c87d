#pragma once
// A fresh temporary directory, without GoogleTest: random_bert.hpp (and through
// it the benchmarks) and test_support.hpp both build on it.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

namespace skim::testing {

// Creates an empty directory named after `name`, unique to this process and
// call, under the system temporary directory; the caller removes it.
inline std::filesystem::path fresh_temp_dir(const std::string& name) {
  static std::atomic<int> counter{0};
  auto dir = std::filesystem::temp_directory_path() /
             ("skim-test-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);  // left by an earlier process with the same id
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace skim::testing

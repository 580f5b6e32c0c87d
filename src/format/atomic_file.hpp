#pragma once
// Writing a file so that it appears whole or not at all: bytes go to a
// temporary file beside the target, are synced, then renamed over it.
#include <cstddef>
#include <filesystem>
#include <string>

namespace skim::format {

// Removes the temporary file unless the write completed and it was renamed.
// Errors are skim::Error(io) naming the final path.
class TemporaryFile {
 public:
  explicit TemporaryFile(std::string path) : path_(std::move(path)) {}
  ~TemporaryFile();
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

  void open(const std::string& final_path);
  void write(const std::string& final_path, const void* data, std::size_t size);
  // fsync before rename so a crash never leaves a renamed but empty file.
  void commit(const std::string& final_path);

 private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

// A unique temporary name beside `path` (pid and a counter).
std::string temporary_path_for(const std::filesystem::path& path);

}  // namespace skim::format

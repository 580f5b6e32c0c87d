#pragma once
#include <cstddef>
#include <filesystem>
#include <span>
#include <string>

namespace skim::format {

// A read-only memory map of a whole file (RAII). Weights are read in place
// from the page cache; nothing is copied until the engine packs them.
class MappedFile {
 public:
  // Throws skim::Error(io) naming the path and the system error.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace skim::format

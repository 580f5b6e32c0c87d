#include "format/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "skim/error.hpp"

namespace skim::format {
namespace {

[[noreturn]] void throw_io(const std::string& path, const char* what, int error_number) {
  throw Error(ErrorCode::io, path + ": cannot " + what + ": " + std::strerror(error_number));
}

// Closes the descriptor on every path out of the constructor; the mapping
// stays valid after close, so the descriptor is never kept.
struct FileDescriptor {
  int fd = -1;
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path.string()) {
  FileDescriptor file;
  do {
    file.fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  } while (file.fd < 0 && errno == EINTR);
  if (file.fd < 0) throw_io(path_, "open", errno);

  struct stat status {};
  if (::fstat(file.fd, &status) != 0) throw_io(path_, "stat", errno);
  // A directory opens fine with O_RDONLY; say so instead of failing in mmap.
  if (!S_ISREG(status.st_mode)) {
    throw Error(ErrorCode::io, path_ + ": cannot map: not a regular file");
  }
  size_ = static_cast<std::size_t>(status.st_size);
  if (size_ == 0) return;  // mmap rejects length 0; an empty span is the whole file

  void* mapping = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.fd, 0);
  if (mapping == MAP_FAILED) throw_io(path_, "mmap", errno);
  data_ = static_cast<const std::byte*>(mapping);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

}  // namespace skim::format

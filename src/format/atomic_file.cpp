#include "format/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "skim/error.hpp"

namespace skim::format {

namespace {
[[noreturn]] void fail_io(const std::string& final_path, const std::string& what) {
  throw Error(ErrorCode::io, final_path + ": cannot " + what + ": " + std::strerror(errno));
}
}  // namespace

TemporaryFile::~TemporaryFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(path_.c_str());
}

void TemporaryFile::open(const std::string& final_path) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_io(final_path, "create " + path_);
}

void TemporaryFile::write(const std::string& final_path, const void* data, std::size_t size) {
  const char* cursor = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t written = ::write(fd_, cursor, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      fail_io(final_path, "write " + path_);
    }
    cursor += written;
    size -= static_cast<std::size_t>(written);
  }
}

void TemporaryFile::commit(const std::string& final_path) {
  if (::fsync(fd_) != 0) fail_io(final_path, "sync " + path_);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail_io(final_path, "close " + path_);
  if (::rename(path_.c_str(), final_path.c_str()) != 0) fail_io(final_path, "rename " + path_ + " to it");
  committed_ = true;
}

std::string temporary_path_for(const std::filesystem::path& path) {
  static std::atomic<unsigned> counter{0};
  return path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

}  // namespace skim::format

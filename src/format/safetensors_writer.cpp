#include "format/safetensors_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "skim/error.hpp"

namespace skim::format {
namespace {

[[noreturn]] void fail_argument(const std::filesystem::path& path, const std::string& message) {
  throw Error(ErrorCode::invalid_argument, "write_safetensors " + path.string() + ": " + message);
}

// Validates one tensor and returns its byte count.
std::uint64_t checked_byte_count(const std::filesystem::path& path, const TensorToWrite& tensor) {
  std::uint64_t bytes = element_size(tensor.dtype);
  for (std::int64_t dim : tensor.shape) {
    if (dim < 0) {
      fail_argument(path, "tensor '" + tensor.name + "' has negative dimension in shape " +
                              shape_string(tensor.shape));
    }
    if (__builtin_mul_overflow(bytes, static_cast<std::uint64_t>(dim), &bytes)) {
      fail_argument(path, "tensor '" + tensor.name + "' shape " + shape_string(tensor.shape) +
                              " overflows a 64-bit byte count");
    }
  }
  if (bytes != tensor.bytes.size()) {
    fail_argument(path, "tensor '" + tensor.name + "' shape " + shape_string(tensor.shape) + " × " +
                            std::string(to_string(tensor.dtype)) + " needs " + std::to_string(bytes) +
                            " bytes but " + std::to_string(tensor.bytes.size()) + " were given");
  }
  return bytes;
}

// Removes the temporary file unless the write completed and it was renamed.
class TemporaryFile {
 public:
  explicit TemporaryFile(std::string path) : path_(std::move(path)) {}
  ~TemporaryFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;

  void open(const std::string& final_path) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) fail_io(final_path, "create " + path_);
  }
  void write(const std::string& final_path, const void* data, std::size_t size) {
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
  // fsync before rename so a crash never leaves a renamed but empty file.
  void commit(const std::string& final_path) {
    if (::fsync(fd_) != 0) fail_io(final_path, "sync " + path_);
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail_io(final_path, "close " + path_);
    if (::rename(path_.c_str(), final_path.c_str()) != 0) fail_io(final_path, "rename " + path_ + " to it");
    committed_ = true;
  }

 private:
  [[noreturn]] static void fail_io(const std::string& final_path, const std::string& what) {
    throw Error(ErrorCode::io, final_path + ": cannot " + what + ": " + std::strerror(errno));
  }

  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

std::string temporary_path_for(const std::filesystem::path& path) {
  static std::atomic<unsigned> counter{0};
  return path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

}  // namespace

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps tensors in the caller's order, which is also data order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json metadata_json = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) metadata_json[key] = value;
    header["__metadata__"] = std::move(metadata_json);
  }
  std::set<std::string> seen_names;
  std::uint64_t offset = 0;
  for (const TensorToWrite& tensor : tensors) {
    if (tensor.name == "__metadata__") fail_argument(path, "'__metadata__' is reserved, not a tensor name");
    if (!seen_names.insert(tensor.name).second) {
      fail_argument(path, "tensor '" + tensor.name + "' is given twice");
    }
    const std::uint64_t bytes = checked_byte_count(path, tensor);
    header[tensor.name] = {{"dtype", std::string(to_string(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::ordered_json::exception& error) {  // e.g. a name that is not UTF-8
    fail_argument(path, std::string("cannot encode the header: ") + error.what());
  }
  // The data section starts 8-aligned, as Hugging Face's writer arranges.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const std::uint64_t header_length = header_text.size();  // little-endian host

  const std::string final_path = path.string();
  TemporaryFile file(temporary_path_for(path));
  file.open(final_path);
  file.write(final_path, &header_length, sizeof header_length);
  file.write(final_path, header_text.data(), header_text.size());
  for (const TensorToWrite& tensor : tensors) {
    file.write(final_path, tensor.bytes.data(), tensor.bytes.size());
  }
  file.commit(final_path);
}

}  // namespace skim::format

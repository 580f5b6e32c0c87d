#include "format/atomic_file.hpp"
#include "format/gguf_writer.hpp"

#include <cstring>
#include <set>
#include <type_traits>

#include "skim/error.hpp"

namespace skim::format {
namespace {

constexpr std::uint32_t gguf_version = 3;
constexpr std::size_t max_dimensions = 4;
constexpr int max_array_depth = 8;  // as the reader accepts

[[noreturn]] void fail_argument(const std::filesystem::path& path, const std::string& message) {
  throw Error(ErrorCode::invalid_argument, "write_gguf " + path.string() + ": " + message);
}

// The header (everything before the data section) is built in memory; it is
// small next to the tensors.
class HeaderBuffer {
 public:
  explicit HeaderBuffer(const std::filesystem::path& path) : path_(path) {}

  template <typename T>
  void put(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* raw = reinterpret_cast<const char*>(&value);  // little-endian host
    bytes_.append(raw, sizeof(T));
  }
  void put_string(const std::string& text) {
    put<std::uint64_t>(text.size());
    bytes_.append(text);
  }
  void put_value(const GgufValue& value, const std::string& key) {
    put<std::uint32_t>(static_cast<std::uint32_t>(value.type()));
    std::visit(
        [&](const auto& held) {
          using T = std::decay_t<decltype(held)>;
          if constexpr (std::is_same_v<T, std::string>) {
            put_string(held);
          } else if constexpr (std::is_same_v<T, GgufArray>) {
            put_array(held, key, 1);
          } else if constexpr (std::is_same_v<T, bool>) {
            put<std::uint8_t>(held ? 1 : 0);
          } else {
            put<T>(held);
          }
        },
        value.value);
  }
  std::string& bytes() { return bytes_; }

 private:
  void put_array(const GgufArray& array, const std::string& key, int depth) {
    if (depth > max_array_depth) {
      fail_argument(path_, "metadata key '" + key + "': arrays nested more than " +
                               std::to_string(max_array_depth) + " deep");
    }
    put<std::uint32_t>(static_cast<std::uint32_t>(array.element_type()));
    put<std::uint64_t>(array.size());
    std::visit(
        [&](const auto& elements) {
          using T = typename std::decay_t<decltype(elements)>::value_type;
          for (const auto& element : elements) {
            if constexpr (std::is_same_v<T, std::string>) {
              put_string(element);
            } else if constexpr (std::is_same_v<T, GgufArray>) {
              put_array(element, key, depth + 1);
            } else if constexpr (std::is_same_v<T, bool>) {
              put<std::uint8_t>(element ? 1 : 0);
            } else {
              put<T>(element);
            }
          }
        },
        array.elements);
  }

  const std::filesystem::path& path_;
  std::string bytes_;
};


std::uint64_t padding_to(std::uint64_t offset, std::uint32_t alignment) {
  return (alignment - offset % alignment) % alignment;
}

// Validates one tensor and returns its byte count.
std::uint64_t checked_byte_count(const std::filesystem::path& path, const GgufTensorToWrite& tensor) {
  const std::string name = "tensor '" + tensor.name + "'";
  if (tensor.shape.size() > max_dimensions) {
    fail_argument(path, name + " has " + std::to_string(tensor.shape.size()) +
                            " dimensions, GGUF allows at most 4");
  }
  if (tensor.dtype == DType::u64 || tensor.dtype == DType::i32)
    fail_argument(path, name + " is " + std::string(to_string(tensor.dtype)) + ", which skim does not write to GGUF");
  std::int64_t numel = 1;
  for (std::int64_t dim : tensor.shape) {
    if (dim < 0) fail_argument(path, name + " has a negative dimension in shape " + shape_string(tensor.shape));
    if (__builtin_mul_overflow(numel, dim, &numel)) {
      fail_argument(path, name + " shape " + shape_string(tensor.shape) + " overflows a 64-bit element count");
    }
  }
  const std::int64_t row = tensor.shape.empty() ? 1 : tensor.shape.back();
  if (row % block_elements(tensor.dtype) != 0) {
    fail_argument(path, name + " shape " + shape_string(tensor.shape) + ": " +
                            std::string(to_string(tensor.dtype)) + " rows of " + std::to_string(row) +
                            " values are not whole blocks of " +
                            std::to_string(block_elements(tensor.dtype)));
  }
  std::uint64_t bytes = 0;
  try {
    bytes = byte_size(tensor.dtype, numel);
  } catch (const Error& error) {
    fail_argument(path, name + ": " + error.what());
  }
  if (bytes != tensor.bytes.size()) {
    fail_argument(path, name + " shape " + shape_string(tensor.shape) + " × " +
                            std::string(to_string(tensor.dtype)) + " needs " + std::to_string(bytes) +
                            " bytes but " + std::to_string(tensor.bytes.size()) + " were given");
  }
  return bytes;
}

}  // namespace

void write_gguf(const std::filesystem::path& path, const std::vector<GgufMetadataEntry>& metadata,
                const std::vector<GgufTensorToWrite>& tensors, std::uint32_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    fail_argument(path, "alignment " + std::to_string(alignment) + " is not a power of two");
  }
  std::set<std::string> keys;
  bool alignment_written = false;
  for (const GgufMetadataEntry& entry : metadata) {
    if (!keys.insert(entry.key).second) fail_argument(path, "metadata key '" + entry.key + "' is given twice");
    if (entry.key == "general.alignment") {
      const auto* value = std::get_if<std::uint32_t>(&entry.value.value);
      if (value == nullptr || *value != alignment) {
        fail_argument(path, "metadata general.alignment (" + entry.value.describe() +
                                ") must be a uint32 equal to the alignment argument " + std::to_string(alignment));
      }
      alignment_written = true;
    }
  }
  const bool add_alignment = alignment != 32 && !alignment_written;

  HeaderBuffer header(path);
  header.bytes().append("GGUF", 4);
  header.put<std::uint32_t>(gguf_version);
  header.put<std::uint64_t>(tensors.size());
  header.put<std::uint64_t>(metadata.size() + (add_alignment ? 1 : 0));
  for (const GgufMetadataEntry& entry : metadata) {
    header.put_string(entry.key);
    header.put_value(entry.value, entry.key);
  }
  if (add_alignment) {
    header.put_string("general.alignment");
    header.put_value(GgufValue{alignment}, "general.alignment");
  }

  std::set<std::string> names;
  std::vector<std::uint64_t> sizes;
  sizes.reserve(tensors.size());
  std::uint64_t offset = 0;
  for (const GgufTensorToWrite& tensor : tensors) {
    if (!names.insert(tensor.name).second) fail_argument(path, "tensor '" + tensor.name + "' is given twice");
    const std::uint64_t bytes = checked_byte_count(path, tensor);
    sizes.push_back(bytes);
    header.put_string(tensor.name);
    header.put<std::uint32_t>(static_cast<std::uint32_t>(tensor.shape.size()));
    for (auto dim = tensor.shape.rbegin(); dim != tensor.shape.rend(); ++dim) {
      header.put<std::uint64_t>(static_cast<std::uint64_t>(*dim));  // ne[0] is the last row-major axis
    }
    header.put<std::uint32_t>(ggml_type_of(tensor.dtype));
    header.put<std::uint64_t>(offset);
    offset += bytes + padding_to(bytes, alignment);
  }
  header.bytes().append(padding_to(header.bytes().size(), alignment), '\0');

  const std::string final_path = path.string();
  TemporaryFile file(temporary_path_for(path));
  file.open(final_path);
  file.write(final_path, header.bytes().data(), header.bytes().size());
  static constexpr char zeros[256] = {};
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    file.write(final_path, tensors[i].bytes.data(), tensors[i].bytes.size());
    for (std::uint64_t pad = padding_to(sizes[i], alignment); pad > 0;) {
      const std::size_t chunk = pad < sizeof zeros ? pad : sizeof zeros;
      file.write(final_path, zeros, chunk);
      pad -= chunk;
    }
  }
  file.commit(final_path);
}

}  // namespace skim::format

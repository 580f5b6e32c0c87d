#include "format/atomic_file.hpp"
#include "format/safetensors_writer.hpp"

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

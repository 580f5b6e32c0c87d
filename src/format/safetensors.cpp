#include "format/safetensors.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <system_error>

#include <nlohmann/json.hpp>

#include "skim/error.hpp"

namespace skim::format {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// The reference implementation refuses headers above 100 MB; a real header is
// a few hundred KB, so a larger value means a corrupt or hostile length.
constexpr std::uint64_t max_header_bytes = 100'000'000;
constexpr std::size_t header_length_bytes = 8;

// The dtypes the safetensors format defines that skim does not read: these are
// "unsupported"; any other string is not a safetensors dtype at all ("format").
constexpr std::string_view other_safetensors_dtypes[] = {
    "BOOL", "U8",  "I8",  "U16",     "I16",     "U32",     "I64",
    "F64",  "C64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
};

std::optional<DType> dtype_from_name(std::string_view name) {
  if (name == "F32") return DType::f32;
  if (name == "F16") return DType::f16;
  if (name == "BF16") return DType::bf16;
  if (name == "U64") return DType::u64;
  if (name == "I32") return DType::i32;
  return std::nullopt;
}

std::string single_quoted(std::string_view name) { return "'" + std::string(name) + "'"; }

std::string range_string(std::uint64_t begin, std::uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// A tensor entry of the header after its JSON shape has been checked.
struct HeaderEntry {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

// Reads and checks one header; every message starts with the file's path.
class HeaderParser {
 public:
  explicit HeaderParser(const std::string& path) : path_(path) {}

  [[noreturn]] void fail(ErrorCode code, const std::string& message) const {
    throw Error(code, path_ + ": " + message);
  }
  [[noreturn]] void fail_tensor(ErrorCode code, const std::string& tensor,
                                const std::string& message) const {
    fail(code, "tensor " + single_quoted(tensor) + ": " + message);
  }

  std::map<std::string, std::string> parse_metadata(const Json& metadata) const {
    if (!metadata.is_object()) {
      fail(ErrorCode::format, "__metadata__ is a JSON " + std::string(metadata.type_name()) +
                                  ", expected an object of strings");
    }
    std::map<std::string, std::string> result;
    for (const auto& [key, value] : metadata.items()) {
      if (!value.is_string()) {
        fail(ErrorCode::format, "__metadata__ value for " + single_quoted(key) + " is a JSON " +
                                    value.type_name() + ", expected a string");
      }
      result.emplace(key, value.get<std::string>());
    }
    return result;
  }

  // Non-negative JSON integer as uint64 (JSON parsers keep non-negative
  // literals as unsigned, negative ones as signed).
  std::uint64_t non_negative_integer(const Json& value, const std::string& tensor,
                                     const std::string& what) const {
    if (value.is_number_unsigned()) return value.get<std::uint64_t>();
    if (value.is_number_integer()) {
      fail_tensor(ErrorCode::format, tensor,
                  what + " is negative (" + std::to_string(value.get<std::int64_t>()) + ")");
    }
    fail_tensor(ErrorCode::format, tensor,
                what + " is " + value.dump() + ", expected a non-negative integer");
  }

  HeaderEntry parse_entry(const std::string& name, const Json& entry) const {
    if (!entry.is_object()) {
      fail_tensor(ErrorCode::format, name,
                  "entry is a JSON " + std::string(entry.type_name()) + ", expected an object");
    }
    HeaderEntry result;
    result.name = name;

    const auto dtype_field = entry.find("dtype");
    if (dtype_field == entry.end()) fail_tensor(ErrorCode::format, name, "missing 'dtype'");
    if (!dtype_field->is_string()) {
      fail_tensor(ErrorCode::format, name, "'dtype' is " + dtype_field->dump() + ", expected a string");
    }

    const auto shape_field = entry.find("shape");
    if (shape_field == entry.end()) fail_tensor(ErrorCode::format, name, "missing 'shape'");
    if (!shape_field->is_array()) {
      fail_tensor(ErrorCode::format, name, "'shape' is " + shape_field->dump() + ", expected an array");
    }
    for (std::size_t axis = 0; axis < shape_field->size(); ++axis) {
      const std::uint64_t dim =
          non_negative_integer((*shape_field)[axis], name, "shape[" + std::to_string(axis) + "]");
      if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        fail_tensor(ErrorCode::format, name,
                    "shape[" + std::to_string(axis) + "] = " + std::to_string(dim) + " is too large");
      }
      result.shape.push_back(static_cast<std::int64_t>(dim));
    }

    const auto offsets_field = entry.find("data_offsets");
    if (offsets_field == entry.end()) fail_tensor(ErrorCode::format, name, "missing 'data_offsets'");
    if (!offsets_field->is_array() || offsets_field->size() != 2) {
      fail_tensor(ErrorCode::format, name,
                  "'data_offsets' is " + offsets_field->dump() + ", expected [begin, end]");
    }
    result.begin = non_negative_integer((*offsets_field)[0], name, "data_offsets begin");
    result.end = non_negative_integer((*offsets_field)[1], name, "data_offsets end");
    if (result.begin > result.end) {
      fail_tensor(ErrorCode::format, name,
                  "data_offsets " + range_string(result.begin, result.end) + " end before they begin");
    }

    // The dtype is judged after the entry's structure so a malformed entry is
    // reported as such even when its dtype is also one skim does not read.
    const std::string dtype_name = dtype_field->get<std::string>();
    const std::optional<DType> dtype = dtype_from_name(dtype_name);
    if (!dtype) {
      const bool is_safetensors_dtype =
          std::find(std::begin(other_safetensors_dtypes), std::end(other_safetensors_dtypes),
                    dtype_name) != std::end(other_safetensors_dtypes);
      if (is_safetensors_dtype) {
        fail_tensor(ErrorCode::unsupported, name,
                    "dtype " + dtype_name + " is not supported (skim reads F32, F16 and BF16)");
      }
      fail_tensor(ErrorCode::format, name, "unknown dtype " + single_quoted(dtype_name));
    }
    result.dtype = *dtype;
    return result;
  }

  // shape × element size must be exactly the byte range, without overflow.
  void check_size(const HeaderEntry& entry) const {
    const std::size_t bytes_per_element = element_size(entry.dtype);
    std::uint64_t bytes = bytes_per_element;
    for (std::int64_t dim : entry.shape) {
      if (__builtin_mul_overflow(bytes, static_cast<std::uint64_t>(dim), &bytes)) {
        fail_tensor(ErrorCode::format, entry.name,
                    "shape " + shape_string(entry.shape) + " × " + std::string(to_string(entry.dtype)) +
                        " overflows a 64-bit byte count");
      }
    }
    const std::uint64_t span = entry.end - entry.begin;
    if (bytes != span) {
      fail_tensor(ErrorCode::format, entry.name,
                  "shape " + shape_string(entry.shape) + " × " + std::string(to_string(entry.dtype)) +
                      " needs " + std::to_string(bytes) + " bytes but data_offsets span " +
                      std::to_string(span));
    }
  }

 private:
  const std::string& path_;
};

}  // namespace

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : file_(path) {
  const HeaderParser parser(file_.path());
  const std::size_t file_size = file_.size();
  if (file_size < header_length_bytes) {
    parser.fail(ErrorCode::format, "file is " + std::to_string(file_size) +
                                       " bytes, too short for the 8-byte header length");
  }

  std::uint64_t header_length = 0;
  std::memcpy(&header_length, file_.data(), sizeof header_length);  // little-endian host
  const std::uint64_t bytes_after_length = file_size - header_length_bytes;
  if (header_length == 0) parser.fail(ErrorCode::format, "header length is 0");
  if (header_length > max_header_bytes) {
    parser.fail(ErrorCode::format, "header length " + std::to_string(header_length) +
                                       " exceeds the 100000000-byte limit");
  }
  if (header_length > bytes_after_length) {
    parser.fail(ErrorCode::format, "header length " + std::to_string(header_length) +
                                       " exceeds the " + std::to_string(bytes_after_length) +
                                       " bytes after the length (file truncated?)");
  }

  const char* header_begin = reinterpret_cast<const char*>(file_.data()) + header_length_bytes;
  Json header;
  try {
    header = Json::parse(header_begin, header_begin + header_length);
  } catch (const Json::exception& error) {
    parser.fail(ErrorCode::format, std::string("header is not valid JSON: ") + error.what());
  }
  if (!header.is_object()) {
    parser.fail(ErrorCode::format,
                "header is a JSON " + std::string(header.type_name()) + ", expected an object");
  }

  std::vector<HeaderEntry> entries;
  entries.reserve(header.size());
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      metadata_ = parser.parse_metadata(value);
      continue;
    }
    entries.push_back(parser.parse_entry(key, value));
  }

  const std::byte* data_section = file_.data() + header_length_bytes + header_length;
  const std::uint64_t data_size = bytes_after_length - header_length;
  for (const HeaderEntry& entry : entries) {
    parser.check_size(entry);
    if (entry.end > data_size) {
      parser.fail_tensor(ErrorCode::format, entry.name,
                         "data_offsets " + range_string(entry.begin, entry.end) +
                             " run past the data section's " + std::to_string(data_size) +
                             " bytes (file truncated?)");
    }
  }

  // Sorted by offset, each non-empty range must start at or after the furthest
  // end seen so far; empty ranges hold no bytes and cannot overlap.
  std::sort(entries.begin(), entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const HeaderEntry* furthest = nullptr;
  for (const HeaderEntry& entry : entries) {
    if (entry.begin == entry.end) continue;
    if (furthest != nullptr && entry.begin < furthest->end) {
      parser.fail(ErrorCode::format,
                  "tensors " + single_quoted(furthest->name) + " " + range_string(furthest->begin, furthest->end) +
                      " and " + single_quoted(entry.name) + " " + range_string(entry.begin, entry.end) +
                      " overlap in the data section");
    }
    if (furthest == nullptr || entry.end > furthest->end) furthest = &entry;
  }

  tensors_.reserve(entries.size());
  for (HeaderEntry& entry : entries) {
    TensorView view;
    view.name = std::move(entry.name);
    view.dtype = entry.dtype;
    view.shape = std::move(entry.shape);
    view.bytes = std::span<const std::byte>(data_section + entry.begin, entry.end - entry.begin);
    view.file = file_.path();
    index_by_name_.emplace(view.name, tensors_.size());
    tensors_.push_back(std::move(view));
  }
}

const TensorView* SafetensorsFile::find(const std::string& name) const noexcept {
  const auto found = index_by_name_.find(name);
  return found == index_by_name_.end() ? nullptr : &tensors_[found->second];
}

namespace {

// Reads model.safetensors.index.json: weight_map as tensor name → shard file
// name, each shard a plain file name in the index's directory.
std::map<std::string, std::string> read_weight_map(const fs::path& index_path) {
  const MappedFile index_file(index_path);
  const std::string& path = index_file.path();
  const char* text = reinterpret_cast<const char*>(index_file.data());
  Json index;
  try {
    index = Json::parse(text, text + index_file.size());
  } catch (const Json::exception& error) {
    throw Error(ErrorCode::format, path + ": not valid JSON: " + error.what());
  }
  if (!index.is_object()) {
    throw Error(ErrorCode::format,
                path + ": is a JSON " + std::string(index.type_name()) + ", expected an object");
  }
  const auto weight_map = index.find("weight_map");
  if (weight_map == index.end()) throw Error(ErrorCode::format, path + ": missing 'weight_map'");
  if (!weight_map->is_object()) {
    throw Error(ErrorCode::format, path + ": 'weight_map' is a JSON " +
                                       std::string(weight_map->type_name()) + ", expected an object");
  }
  if (weight_map->empty()) throw Error(ErrorCode::format, path + ": 'weight_map' names no tensors");

  std::map<std::string, std::string> shard_by_tensor;
  for (const auto& [tensor, shard] : weight_map->items()) {
    if (!shard.is_string()) {
      throw Error(ErrorCode::format, path + ": weight_map entry for tensor " + single_quoted(tensor) +
                                         " is " + shard.dump() + ", expected a file name");
    }
    const std::string shard_name = shard.get<std::string>();
    // Shards must sit next to the index; a path could point anywhere.
    const bool plain_file_name = !shard_name.empty() && shard_name != "." && shard_name != ".." &&
                                 shard_name.find_first_of(std::string_view("/\0", 2)) ==
                                     std::string::npos;
    if (!plain_file_name) {
      throw Error(ErrorCode::format, path + ": weight_map entry for tensor " + single_quoted(tensor) +
                                         " names shard " + single_quoted(shard_name) +
                                         ", expected a file name in the same directory");
    }
    shard_by_tensor.emplace(tensor, shard_name);
  }
  return shard_by_tensor;
}

}  // namespace

TensorStore TensorStore::open_directory(const std::filesystem::path& dir) {
  std::error_code status_error;
  if (!fs::is_directory(dir, status_error)) {
    throw Error(ErrorCode::io, dir.string() + ": not a directory" +
                                   (status_error ? " (" + status_error.message() + ")" : ""));
  }
  const fs::path single_file = dir / "model.safetensors";
  if (fs::exists(single_file, status_error)) {
    TensorStore store = open_file(single_file);
    store.source_ = dir.string();
    return store;
  }
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (!fs::exists(index_path, status_error)) {
    throw Error(ErrorCode::io, dir.string() +
                                   ": has neither model.safetensors nor model.safetensors.index.json");
  }

  const std::map<std::string, std::string> shard_by_tensor = read_weight_map(index_path);
  const std::string index_name = index_path.string();

  // Each shard is opened once however many tensors the index maps to it.
  std::map<std::string, std::vector<std::string>> tensors_by_shard;
  for (const auto& [tensor, shard] : shard_by_tensor) tensors_by_shard[shard].push_back(tensor);

  TensorStore store;
  store.source_ = dir.string();
  std::map<std::string, const SafetensorsFile*> shard_files;
  for (const auto& [shard, tensors] : tensors_by_shard) {
    const fs::path shard_path = dir / shard;
    if (!fs::exists(shard_path, status_error)) {
      throw Error(ErrorCode::io, index_name + ": names shard " + single_quoted(shard) + " (for " +
                                     std::to_string(tensors.size()) + " tensors, e.g. " +
                                     single_quoted(tensors.front()) + ") but " + shard_path.string() +
                                     " does not exist");
    }
    auto file = std::make_unique<SafetensorsFile>(shard_path);
    for (const TensorView& view : file->tensors()) {
      const auto [existing, inserted] = store.by_name_.emplace(view.name, &view);
      if (!inserted) {
        throw Error(ErrorCode::format, dir.string() + ": tensor " + single_quoted(view.name) +
                                           " is stored in both " + existing->second->file + " and " +
                                           view.file);
      }
    }
    shard_files.emplace(shard, file.get());
    store.files_.push_back(std::move(file));
  }

  for (const auto& [tensor, shard] : shard_by_tensor) {
    if (shard_files.at(shard)->find(tensor) == nullptr) {
      throw Error(ErrorCode::format, index_name + ": maps tensor " + single_quoted(tensor) + " to " +
                                         single_quoted(shard) + " but " + (dir / shard).string() +
                                         " has no such tensor");
    }
  }
  return store;
}

TensorStore TensorStore::open_file(const std::filesystem::path& file) {
  TensorStore store;
  store.source_ = file.string();
  auto opened = std::make_unique<SafetensorsFile>(file);
  for (const TensorView& view : opened->tensors()) store.by_name_.emplace(view.name, &view);
  store.files_.push_back(std::move(opened));
  return store;
}

const TensorView* TensorStore::find(const std::string& name) const noexcept {
  const auto found = by_name_.find(name);
  return found == by_name_.end() ? nullptr : found->second;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> result;
  result.reserve(by_name_.size());
  for (const auto& [name, view] : by_name_) result.push_back(name);
  return result;
}

}  // namespace skim::format

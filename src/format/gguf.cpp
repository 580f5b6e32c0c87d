#include "format/gguf.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "skim/error.hpp"

namespace skim::format {
namespace {

static_assert(std::endian::native == std::endian::little, "skim assumes a little-endian host");

constexpr std::uint32_t default_alignment = 32;
constexpr std::uint32_t max_dimensions = 4;
// Nested arrays are allowed, but a hostile file could nest them deep enough to
// exhaust the stack; no real file nests more than once.
constexpr int max_array_depth = 8;
// The fewest bytes a metadata entry can take: key length (8) + empty key +
// value type (4) + a one-byte value.
constexpr std::uint64_t min_metadata_entry_bytes = 8 + 4 + 1;
// A tensor info with an empty name and no dimensions: name length (8) +
// n_dims (4) + type (4) + offset (8).
constexpr std::uint64_t min_tensor_info_bytes = 8 + 4 + 4 + 8;
constexpr std::uint64_t string_length_bytes = 8;
constexpr std::uint64_t array_header_bytes = 4 + 8;  // element type + length

std::string single_quoted(std::string_view text) { return "'" + std::string(text) + "'"; }

// ggml's type numbers; the gaps (4, 5, 31..33, 36..38) are types ggml has
// since removed, named so a file using them is reported precisely.
constexpr std::string_view ggml_type_names[] = {
    "F32",        "F16",        "Q4_0",       "Q4_1",    "Q4_2",     "Q4_3",    "Q5_0",
    "Q5_1",       "Q8_0",       "Q8_1",       "Q2_K",    "Q3_K",     "Q4_K",    "Q5_K",
    "Q6_K",       "Q8_K",       "IQ2_XXS",    "IQ2_XS",  "IQ3_XXS",  "IQ1_S",   "IQ4_NL",
    "IQ3_S",      "IQ2_S",      "IQ4_XS",     "I8",      "I16",      "I32",     "I64",
    "F64",        "IQ1_M",      "BF16",       "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",
    "TQ2_0",      "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
};
constexpr std::uint32_t ggml_f32 = 0, ggml_f16 = 1, ggml_q8_0 = 8, ggml_bf16 = 30;

std::optional<DType> dtype_from_ggml(std::uint32_t type) {
  switch (type) {
    case ggml_f32: return DType::f32;
    case ggml_f16: return DType::f16;
    case ggml_q8_0: return DType::q8_0;
    case ggml_bf16: return DType::bf16;
    default: return std::nullopt;
  }
}

bool is_power_of_two(std::uint64_t value) { return value != 0 && (value & (value - 1)) == 0; }

// Reads the file front to back; every read is bounds-checked and every
// message starts with the path and what was being read.
class Parser {
 public:
  Parser(const std::string& path, std::span<const std::byte> bytes) : path_(path), bytes_(bytes) {}

  [[noreturn]] void fail(ErrorCode code, const std::string& message) const {
    throw Error(code, path_ + ": " + (context_.empty() ? "" : context_ + ": ") + message);
  }
  void set_context(std::string context) { context_ = std::move(context); }

  std::uint64_t position() const noexcept { return position_; }
  std::uint64_t left() const noexcept { return bytes_.size() - position_; }

  void need(std::uint64_t count, const char* what) const {
    if (count > left()) {
      fail(ErrorCode::format, std::string("the ") + std::to_string(count) + "-byte " + what + " at byte " +
                                  std::to_string(position_) + " runs past the end of the file (" +
                                  std::to_string(bytes_.size()) + " bytes; truncated?)");
    }
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes_.data() + position_, sizeof(T));
    position_ += sizeof(T);
    return value;
  }

  // A GGUF string: uint64 length, then that many bytes (no terminator). The
  // length is checked against the bytes left before anything is allocated.
  std::string read_string(const char* what) {
    const auto length = read<std::uint64_t>(what);
    if (length > left()) {
      fail(ErrorCode::format, std::string(what) + " of " + std::to_string(length) +
                                  " bytes cannot fit in the " + std::to_string(left()) + " bytes left");
    }
    std::string text(reinterpret_cast<const char*>(bytes_.data() + position_), length);
    position_ += length;
    return text;
  }

  GgufValue read_value(GgufType type) {
    switch (type) {
      case GgufType::uint8: return {read<std::uint8_t>("uint8 value")};
      case GgufType::int8: return {read<std::int8_t>("int8 value")};
      case GgufType::uint16: return {read<std::uint16_t>("uint16 value")};
      case GgufType::int16: return {read<std::int16_t>("int16 value")};
      case GgufType::uint32: return {read<std::uint32_t>("uint32 value")};
      case GgufType::int32: return {read<std::int32_t>("int32 value")};
      case GgufType::float32: return {read<float>("float32 value")};
      case GgufType::boolean: return {read_bool()};
      case GgufType::string: return {read_string("string")};
      case GgufType::array: return {read_array(1)};
      case GgufType::uint64: return {read<std::uint64_t>("uint64 value")};
      case GgufType::int64: return {read<std::int64_t>("int64 value")};
      case GgufType::float64: return {read<double>("float64 value")};
    }
    fail(ErrorCode::internal, "unhandled value type");
  }

  GgufType read_type(const char* what) {
    const auto code = read<std::uint32_t>(what);
    if (code > static_cast<std::uint32_t>(GgufType::float64)) {
      fail(ErrorCode::format, "unknown " + std::string(what) + " " + std::to_string(code) +
                                  " (GGUF defines 0..12)");
    }
    return static_cast<GgufType>(code);
  }

 private:
  bool read_bool() {
    const auto byte = read<std::uint8_t>("bool value");
    if (byte > 1) fail(ErrorCode::format, "bool value " + std::to_string(byte) + " is neither 0 nor 1");
    return byte == 1;
  }

  [[noreturn]] void fail_array_fit(std::uint64_t count, const std::string& elements) const {
    fail(ErrorCode::format, "array of " + std::to_string(count) + " " + elements + " cannot fit in the " +
                                std::to_string(left()) + " bytes left");
  }

  // Fixed-size elements are copied in one go once count × size is known to fit.
  template <typename T>
  std::vector<T> read_fixed_array(std::uint64_t count, GgufType type) {
    std::uint64_t bytes = 0;
    if (__builtin_mul_overflow(count, sizeof(T), &bytes) || bytes > left()) {
      fail_array_fit(count, std::string(to_string(type)) + " (" + std::to_string(sizeof(T)) + " bytes each)");
    }
    std::vector<T> values(count);
    if (bytes > 0) std::memcpy(values.data(), bytes_.data() + position_, bytes);
    position_ += bytes;
    return values;
  }

  // Variable-size elements: count × their smallest size must fit before the
  // vector is reserved, so a lying count cannot allocate more than a few
  // times the file size.
  void check_min_fit(std::uint64_t count, std::uint64_t min_bytes, const char* elements) const {
    std::uint64_t bytes = 0;
    if (__builtin_mul_overflow(count, min_bytes, &bytes) || bytes > left()) fail_array_fit(count, elements);
  }

  GgufArray read_array(int depth) {
    if (depth > max_array_depth) {
      fail(ErrorCode::format, "arrays nested more than " + std::to_string(max_array_depth) + " deep");
    }
    const GgufType type = read_type("array element type");
    const auto count = read<std::uint64_t>("array length");
    switch (type) {
      case GgufType::uint8: return {read_fixed_array<std::uint8_t>(count, type)};
      case GgufType::int8: return {read_fixed_array<std::int8_t>(count, type)};
      case GgufType::uint16: return {read_fixed_array<std::uint16_t>(count, type)};
      case GgufType::int16: return {read_fixed_array<std::int16_t>(count, type)};
      case GgufType::uint32: return {read_fixed_array<std::uint32_t>(count, type)};
      case GgufType::int32: return {read_fixed_array<std::int32_t>(count, type)};
      case GgufType::float32: return {read_fixed_array<float>(count, type)};
      case GgufType::uint64: return {read_fixed_array<std::uint64_t>(count, type)};
      case GgufType::int64: return {read_fixed_array<std::int64_t>(count, type)};
      case GgufType::float64: return {read_fixed_array<double>(count, type)};
      case GgufType::boolean: {
        check_min_fit(count, 1, "bool");
        std::vector<bool> values(count);
        for (std::uint64_t i = 0; i < count; ++i) values[i] = read_bool();
        return {std::move(values)};
      }
      case GgufType::string: {
        check_min_fit(count, string_length_bytes, "strings");
        std::vector<std::string> values;
        values.reserve(count);
        for (std::uint64_t i = 0; i < count; ++i) values.push_back(read_string("string"));
        return {std::move(values)};
      }
      case GgufType::array: {
        check_min_fit(count, array_header_bytes, "arrays");
        std::vector<GgufArray> values;
        values.reserve(count);
        for (std::uint64_t i = 0; i < count; ++i) values.push_back(read_array(depth + 1));
        return {std::move(values)};
      }
    }
    fail(ErrorCode::internal, "unhandled array element type");
  }

  const std::string& path_;
  std::span<const std::byte> bytes_;
  std::uint64_t position_ = 0;
  std::string context_;
};

// A tensor info after its fields have been checked on their own.
struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;  // row-major
  std::uint64_t offset = 0;         // relative to the data section
  std::uint64_t size = 0;           // bytes
};

std::string range_string(std::uint64_t begin, std::uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

std::string printable_magic(std::span<const std::byte> magic) {
  std::string text = "'";
  for (std::byte byte : magic) {
    const auto c = static_cast<unsigned char>(byte);
    if (c >= 0x20 && c < 0x7f) {
      text += static_cast<char>(c);
    } else {
      static constexpr char hex[] = "0123456789abcdef";
      text += "\\x";
      text += hex[c >> 4];
      text += hex[c & 15];
    }
  }
  return text + "'";
}

}  // namespace

std::string_view to_string(GgufType type) noexcept {
  switch (type) {
    case GgufType::uint8: return "uint8";
    case GgufType::int8: return "int8";
    case GgufType::uint16: return "uint16";
    case GgufType::int16: return "int16";
    case GgufType::uint32: return "uint32";
    case GgufType::int32: return "int32";
    case GgufType::float32: return "float32";
    case GgufType::boolean: return "bool";
    case GgufType::string: return "string";
    case GgufType::array: return "array";
    case GgufType::uint64: return "uint64";
    case GgufType::int64: return "int64";
    case GgufType::float64: return "float64";
  }
  return "?";
}

std::size_t GgufArray::size() const noexcept {
  return std::visit([](const auto& values) { return values.size(); }, elements);
}

std::string GgufValue::describe() const {
  if (const auto* array = std::get_if<GgufArray>(&value)) {
    return "array of " + std::to_string(array->size()) + " " + std::string(to_string(array->element_type()));
  }
  return std::string(to_string(type()));
}

std::string ggml_type_name(std::uint32_t ggml_type) {
  if (ggml_type < std::size(ggml_type_names)) return std::string(ggml_type_names[ggml_type]);
  return "type " + std::to_string(ggml_type);
}

std::uint32_t ggml_type_of(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return ggml_f32;
    case DType::f16: return ggml_f16;
    case DType::bf16: return ggml_bf16;
    case DType::q8_0: return ggml_q8_0;
    case DType::u64:
    case DType::i32: break;  // not GGUF tensor types here; the writer rejects them first
  }
  return ggml_f32;
}

GgufFile::GgufFile(const std::filesystem::path& path) : file_(path) {
  const std::string& file_path = file_.path();
  Parser parser(file_path, file_.bytes());
  const std::uint64_t file_size = file_.size();

  // Header: magic, version, tensor count, metadata count.
  if (file_size < 4) {
    parser.fail(ErrorCode::format,
                "file is " + std::to_string(file_size) + " bytes, too short for the 4-byte GGUF magic");
  }
  if (std::memcmp(file_.data(), "GGUF", 4) != 0) {
    parser.fail(ErrorCode::format, "not a GGUF file: magic is " + printable_magic(file_.bytes().first(4)) +
                                       ", expected 'GGUF'");
  }
  parser.read<std::uint32_t>("magic");
  version_ = parser.read<std::uint32_t>("version");
  if (version_ != 2 && version_ != 3) {
    const std::uint32_t swapped = __builtin_bswap32(version_);
    if (swapped >= 1 && swapped <= 3) {
      parser.fail(ErrorCode::unsupported, "big-endian GGUF (version " + std::to_string(swapped) +
                                              " stored byte-swapped) is not supported");
    }
    parser.fail(ErrorCode::unsupported, "GGUF version " + std::to_string(version_) +
                                            " is not supported (skim reads versions 2 and 3)");
  }
  const auto tensor_count = parser.read<std::uint64_t>("tensor count");
  const auto metadata_count = parser.read<std::uint64_t>("metadata count");
  // Counts are judged against the bytes left before anything is reserved.
  std::uint64_t min_bytes = 0;
  if (__builtin_mul_overflow(tensor_count, min_tensor_info_bytes, &min_bytes) || min_bytes > parser.left()) {
    parser.fail(ErrorCode::format, "tensor count " + std::to_string(tensor_count) +
                                       " cannot fit: each tensor info takes at least " +
                                       std::to_string(min_tensor_info_bytes) + " bytes and " +
                                       std::to_string(parser.left()) + " bytes are left");
  }
  if (__builtin_mul_overflow(metadata_count, min_metadata_entry_bytes, &min_bytes) ||
      min_bytes > parser.left()) {
    parser.fail(ErrorCode::format, "metadata count " + std::to_string(metadata_count) +
                                       " cannot fit: each metadata entry takes at least " +
                                       std::to_string(min_metadata_entry_bytes) + " bytes and " +
                                       std::to_string(parser.left()) + " bytes are left");
  }

  // Metadata.
  metadata_.reserve(metadata_count);
  for (std::uint64_t i = 0; i < metadata_count; ++i) {
    parser.set_context("metadata entry " + std::to_string(i + 1) + " of " + std::to_string(metadata_count));
    std::string key = parser.read_string("key");
    parser.set_context("metadata key " + single_quoted(key));
    if (metadata_index_.count(key) != 0) parser.fail(ErrorCode::format, "appears twice");
    const GgufType type = parser.read_type("value type");
    GgufValue value = parser.read_value(type);
    metadata_index_.emplace(key, metadata_.size());
    metadata_.push_back({std::move(key), std::move(value)});
  }
  parser.set_context("");

  if (const GgufValue* alignment = find_metadata("general.alignment")) {
    const std::optional<std::uint64_t> value = std::visit(
        [](const auto& held) -> std::optional<std::uint64_t> {
          using T = std::decay_t<decltype(held)>;
          if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
            if (std::in_range<std::uint32_t>(held)) return static_cast<std::uint64_t>(held);
          }
          return std::nullopt;
        },
        alignment->value);
    if (!value) {
      parser.fail(ErrorCode::format, "metadata key 'general.alignment' is " + alignment->describe() +
                                         ", expected an unsigned 32-bit integer");
    }
    if (!is_power_of_two(*value)) {
      parser.fail(ErrorCode::format,
                  "general.alignment = " + std::to_string(*value) + " is not a power of two");
    }
    alignment_ = static_cast<std::uint32_t>(*value);
  } else {
    alignment_ = default_alignment;
  }

  // Tensor infos.
  if (__builtin_mul_overflow(tensor_count, min_tensor_info_bytes, &min_bytes) || min_bytes > parser.left()) {
    parser.fail(ErrorCode::format, "tensor count " + std::to_string(tensor_count) +
                                       " cannot fit: each tensor info takes at least " +
                                       std::to_string(min_tensor_info_bytes) + " bytes and " +
                                       std::to_string(parser.left()) + " bytes are left after the metadata");
  }
  std::vector<TensorInfo> infos;
  infos.reserve(tensor_count);
  for (std::uint64_t i = 0; i < tensor_count; ++i) {
    parser.set_context("tensor info " + std::to_string(i + 1) + " of " + std::to_string(tensor_count));
    TensorInfo info;
    info.name = parser.read_string("name");
    parser.set_context("tensor " + single_quoted(info.name));
    if (tensor_index_.count(info.name) != 0) parser.fail(ErrorCode::format, "appears twice");
    tensor_index_.emplace(info.name, infos.size());

    const auto n_dims = parser.read<std::uint32_t>("dimension count");
    if (n_dims > max_dimensions) {
      parser.fail(ErrorCode::format, "has " + std::to_string(n_dims) + " dimensions, GGUF allows at most " +
                                         std::to_string(max_dimensions));
    }
    std::vector<std::uint64_t> ne(n_dims);
    for (std::uint32_t axis = 0; axis < n_dims; ++axis) ne[axis] = parser.read<std::uint64_t>("dimension");
    const auto ggml_type = parser.read<std::uint32_t>("type");
    info.offset = parser.read<std::uint64_t>("data offset");

    std::string ne_text = "ne [";
    for (std::uint32_t axis = 0; axis < n_dims; ++axis) {
      ne_text += (axis > 0 ? ", " : "") + std::to_string(ne[axis]);
    }
    ne_text += "]";
    std::int64_t numel = 1;
    for (std::uint32_t axis = 0; axis < n_dims; ++axis) {
      if (ne[axis] > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
          __builtin_mul_overflow(numel, static_cast<std::int64_t>(ne[axis]), &numel)) {
        parser.fail(ErrorCode::format, ne_text + " overflows a 64-bit element count");
      }
    }
    info.shape.assign(ne.rbegin(), ne.rend());  // ne[0] varies fastest: it is the last row-major axis

    const std::optional<DType> dtype = dtype_from_ggml(ggml_type);
    if (!dtype) {
      if (ggml_type < std::size(ggml_type_names)) {
        parser.fail(ErrorCode::unsupported, "type " + ggml_type_name(ggml_type) + " (" +
                                                std::to_string(ggml_type) +
                                                ") is not supported (skim reads F32, F16, BF16 and Q8_0)");
      }
      parser.fail(ErrorCode::format, "unknown ggml type " + std::to_string(ggml_type));
    }
    info.dtype = *dtype;
    const std::int64_t per_block = block_elements(info.dtype);
    const std::uint64_t row = n_dims > 0 ? ne[0] : 1;
    if (row % static_cast<std::uint64_t>(per_block) != 0) {
      parser.fail(ErrorCode::format, std::string(to_string(info.dtype)) + " " + ne_text + ": rows of " +
                                          std::to_string(row) + " values are not whole blocks of " +
                                          std::to_string(per_block));
    }
    try {
      info.size = byte_size(info.dtype, numel);
    } catch (const Error& error) {
      parser.fail(ErrorCode::format, ne_text + ": " + error.what());
    }
    if (info.offset % alignment_ != 0) {
      parser.fail(ErrorCode::format, "data offset " + std::to_string(info.offset) +
                                         " is not a multiple of the alignment " + std::to_string(alignment_));
    }
    infos.push_back(std::move(info));
  }
  parser.set_context("");

  // The data section starts at the next multiple of the alignment.
  const std::uint64_t header_end = parser.position();
  if (__builtin_add_overflow(header_end, alignment_ - 1, &data_offset_)) {
    parser.fail(ErrorCode::format, "data section offset overflows");
  }
  data_offset_ -= data_offset_ % alignment_;
  const std::uint64_t data_size = data_offset_ <= file_size ? file_size - data_offset_ : 0;
  for (const TensorInfo& info : infos) {
    std::uint64_t end = 0;
    if (__builtin_add_overflow(info.offset, info.size, &end) || end > data_size) {
      parser.fail(ErrorCode::format,
                  "tensor " + single_quoted(info.name) + ": data at offset " + std::to_string(info.offset) + " (" +
                      std::to_string(info.size) + " bytes of " + std::string(to_string(info.dtype)) + " " +
                      shape_string(info.shape) + ") runs past the end of the file: the data section at byte " +
                      std::to_string(data_offset_) + " holds " + std::to_string(data_size) +
                      " bytes (file truncated?)");
    }
  }

  // Sorted by offset, each non-empty range must start at or after the furthest
  // end seen so far; empty ranges hold no bytes and cannot overlap.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(infos.size());
  for (const TensorInfo& info : infos) by_offset.push_back(&info);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->size < b->size;
  });
  const TensorInfo* furthest = nullptr;
  for (const TensorInfo* info : by_offset) {
    if (info->size == 0) continue;
    if (furthest != nullptr && info->offset < furthest->offset + furthest->size) {
      parser.fail(ErrorCode::format,
                  "tensors " + single_quoted(furthest->name) + " " +
                      range_string(furthest->offset, furthest->offset + furthest->size) + " and " +
                      single_quoted(info->name) + " " + range_string(info->offset, info->offset + info->size) +
                      " overlap in the data section");
    }
    if (furthest == nullptr || info->offset + info->size > furthest->offset + furthest->size) furthest = info;
  }

  tensors_.reserve(infos.size());
  for (TensorInfo& info : infos) {
    TensorView view;
    view.name = std::move(info.name);
    view.dtype = info.dtype;
    view.shape = std::move(info.shape);
    if (info.size > 0) view.bytes = file_.bytes().subspan(data_offset_ + info.offset, info.size);
    view.file = file_path;
    tensors_.push_back(std::move(view));
  }
}

const TensorView* GgufFile::find(const std::string& name) const noexcept {
  const auto found = tensor_index_.find(name);
  return found == tensor_index_.end() ? nullptr : &tensors_[found->second];
}

std::vector<std::string> GgufFile::names() const {
  std::vector<std::string> result;
  result.reserve(tensor_index_.size());
  for (const auto& [name, index] : tensor_index_) result.push_back(name);
  return result;
}

const GgufValue* GgufFile::find_metadata(const std::string& key) const noexcept {
  const auto found = metadata_index_.find(key);
  return found == metadata_index_.end() ? nullptr : &metadata_[found->second].value;
}

const GgufValue& GgufFile::require_metadata(const std::string& key) const {
  const GgufValue* value = find_metadata(key);
  if (value == nullptr) throw Error(ErrorCode::model, path() + ": metadata key " + single_quoted(key) + " not found");
  return *value;
}

namespace {

[[noreturn]] void fail_type(const std::string& path, const std::string& key, const GgufValue& value,
                            const std::string& expected) {
  throw Error(ErrorCode::model,
              path + ": metadata key " + single_quoted(key) + " is " + value.describe() + ", expected " + expected);
}

template <typename T>
constexpr bool is_integer_v = std::is_integral_v<T> && !std::is_same_v<T, bool>;

template <typename Int>
std::string integer_name() {
  return std::string(std::is_signed_v<Int> ? "a signed " : "an unsigned ") + std::to_string(8 * sizeof(Int)) +
         "-bit integer";
}

template <typename Int>
Int integer_value(const std::string& path, const std::string& key, const GgufValue& value) {
  return std::visit(
      [&](const auto& held) -> Int {
        using T = std::decay_t<decltype(held)>;
        if constexpr (is_integer_v<T>) {
          if (!std::in_range<Int>(held)) {
            throw Error(ErrorCode::model, path + ": metadata key " + single_quoted(key) + " is " + value.describe() +
                                              " " + std::to_string(held) + ", which does not fit " +
                                              integer_name<Int>());
          }
          return static_cast<Int>(held);
        } else {
          fail_type(path, key, value, integer_name<Int>());
        }
      },
      value.value);
}

template <typename Float>
Float float_value(const std::string& path, const std::string& key, const GgufValue& value) {
  if (const auto* f = std::get_if<float>(&value.value)) return static_cast<Float>(*f);
  if (const auto* d = std::get_if<double>(&value.value)) return static_cast<Float>(*d);
  fail_type(path, key, value, "a float32 or float64");
}

const std::vector<std::string>& string_array(const std::string& path, const std::string& key,
                                             const GgufValue& value) {
  if (const auto* array = std::get_if<GgufArray>(&value.value)) {
    if (const auto* strings = std::get_if<std::vector<std::string>>(&array->elements)) return *strings;
  }
  fail_type(path, key, value, "an array of string");
}

const std::vector<float>& f32_array(const std::string& path, const std::string& key, const GgufValue& value) {
  if (const auto* array = std::get_if<GgufArray>(&value.value)) {
    if (const auto* floats = std::get_if<std::vector<float>>(&array->elements)) return *floats;
  }
  fail_type(path, key, value, "an array of float32");
}

std::vector<std::int32_t> i32_array(const std::string& path, const std::string& key, const GgufValue& value) {
  const auto* array = std::get_if<GgufArray>(&value.value);
  if (array == nullptr) fail_type(path, key, value, "an array of integers");
  return std::visit(
      [&](const auto& elements) -> std::vector<std::int32_t> {
        using T = typename std::decay_t<decltype(elements)>::value_type;
        if constexpr (is_integer_v<T>) {
          std::vector<std::int32_t> result(elements.size());
          for (std::size_t i = 0; i < elements.size(); ++i) {
            if (!std::in_range<std::int32_t>(elements[i])) {
              throw Error(ErrorCode::model, path + ": metadata key " + single_quoted(key) + " element " +
                                                std::to_string(i) + " = " + std::to_string(elements[i]) +
                                                " does not fit a signed 32-bit integer");
            }
            result[i] = static_cast<std::int32_t>(elements[i]);
          }
          return result;
        } else {
          fail_type(path, key, value, "an array of integers");
        }
      },
      array->elements);
}

}  // namespace

std::uint32_t GgufFile::get_u32(const std::string& key) const {
  return integer_value<std::uint32_t>(path(), key, require_metadata(key));
}
std::int32_t GgufFile::get_i32(const std::string& key) const {
  return integer_value<std::int32_t>(path(), key, require_metadata(key));
}
std::uint64_t GgufFile::get_u64(const std::string& key) const {
  return integer_value<std::uint64_t>(path(), key, require_metadata(key));
}
std::int64_t GgufFile::get_i64(const std::string& key) const {
  return integer_value<std::int64_t>(path(), key, require_metadata(key));
}
float GgufFile::get_f32(const std::string& key) const {
  return float_value<float>(path(), key, require_metadata(key));
}
double GgufFile::get_f64(const std::string& key) const {
  return float_value<double>(path(), key, require_metadata(key));
}
bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& value = require_metadata(key);
  if (const auto* flag = std::get_if<bool>(&value.value)) return *flag;
  fail_type(path(), key, value, "a bool");
}
const std::string& GgufFile::get_string(const std::string& key) const {
  const GgufValue& value = require_metadata(key);
  if (const auto* text = std::get_if<std::string>(&value.value)) return *text;
  fail_type(path(), key, value, "a string");
}
std::span<const std::string> GgufFile::get_string_array(const std::string& key) const {
  return string_array(path(), key, require_metadata(key));
}
std::span<const float> GgufFile::get_f32_array(const std::string& key) const {
  return f32_array(path(), key, require_metadata(key));
}
std::vector<std::int32_t> GgufFile::get_i32_array(const std::string& key) const {
  return i32_array(path(), key, require_metadata(key));
}
const GgufArray& GgufFile::get_array(const std::string& key) const {
  const GgufValue& value = require_metadata(key);
  if (const auto* array = std::get_if<GgufArray>(&value.value)) return *array;
  fail_type(path(), key, value, "an array");
}

std::optional<std::uint32_t> GgufFile::find_u32(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_u32(key);
}
std::optional<std::int32_t> GgufFile::find_i32(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_i32(key);
}
std::optional<std::uint64_t> GgufFile::find_u64(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_u64(key);
}
std::optional<std::int64_t> GgufFile::find_i64(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_i64(key);
}
std::optional<float> GgufFile::find_f32(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_f32(key);
}
std::optional<double> GgufFile::find_f64(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_f64(key);
}
std::optional<bool> GgufFile::find_bool(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_bool(key);
}
std::optional<std::string> GgufFile::find_string(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_string(key);
}
std::optional<std::span<const std::string>> GgufFile::find_string_array(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_string_array(key);
}
std::optional<std::span<const float>> GgufFile::find_f32_array(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_f32_array(key);
}
std::optional<std::vector<std::int32_t>> GgufFile::find_i32_array(const std::string& key) const {
  if (!has_metadata(key)) return std::nullopt;
  return get_i32_array(key);
}

}  // namespace skim::format

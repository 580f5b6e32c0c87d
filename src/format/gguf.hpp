#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "format/mapped_file.hpp"
#include "format/tensor.hpp"
#include "format/tensor_source.hpp"

namespace skim::format {

// GGUF metadata value types, numbered as in the file.
enum class GgufType : std::uint32_t {
  uint8 = 0,
  int8 = 1,
  uint16 = 2,
  int16 = 3,
  uint32 = 4,
  int32 = 5,
  float32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  uint64 = 10,
  int64 = 11,
  float64 = 12,
};
std::string_view to_string(GgufType type) noexcept;  // "uint32", "bool", "string", ...

struct GgufArray;
// One typed vector per element type; the variant index is the GgufType value,
// so 32000 token strings are one std::vector<std::string> and 32000 scores one
// std::vector<float>. Arrays may nest (an array of arrays).
using GgufArrayElements =
    std::variant<std::vector<std::uint8_t>, std::vector<std::int8_t>, std::vector<std::uint16_t>,
                 std::vector<std::int16_t>, std::vector<std::uint32_t>, std::vector<std::int32_t>,
                 std::vector<float>, std::vector<bool>, std::vector<std::string>, std::vector<GgufArray>,
                 std::vector<std::uint64_t>, std::vector<std::int64_t>, std::vector<double>>;

struct GgufArray {
  GgufArrayElements elements;

  GgufType element_type() const noexcept { return static_cast<GgufType>(elements.index()); }
  std::size_t size() const noexcept;
};

// One metadata value; the variant index is the GgufType value.
struct GgufValue {
  using Storage = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t, std::uint32_t,
                               std::int32_t, float, bool, std::string, GgufArray, std::uint64_t,
                               std::int64_t, double>;
  Storage value;

  GgufType type() const noexcept { return static_cast<GgufType>(value.index()); }
  // "uint32", "string", "array of 512 string", for messages.
  std::string describe() const;
};

struct GgufMetadataEntry {
  std::string key;
  GgufValue value;
};

// ggml's tensor type numbers and names ("Q4_K" for 12); "type 99" for a
// number ggml never defined.
std::string ggml_type_name(std::uint32_t ggml_type);
// The ggml type number skim writes for a dtype (F32 0, F16 1, Q8_0 8, BF16 30).
std::uint32_t ggml_type_of(DType dtype) noexcept;

// One GGUF file (versions 2 and 3): header, metadata, tensor infos, then the
// aligned data section, all little-endian. Every check is made at open time
// (counts and lengths against the bytes left before anything is allocated,
// tensor types, shapes, alignment, ranges inside the file, no overlaps), so a
// TensorView handed out is always in bounds. Tensor shapes are row-major:
// GGUF's ne[] (ne[0] fastest-varying) reversed.
class GgufFile : public TensorSource {
 public:
  explicit GgufFile(const std::filesystem::path& path);  // throws skim::Error
  GgufFile(GgufFile&&) = default;
  GgufFile& operator=(GgufFile&&) = default;

  const std::string& path() const noexcept { return file_.path(); }
  std::uint32_t version() const noexcept { return version_; }
  std::uint32_t alignment() const noexcept { return alignment_; }
  std::uint64_t data_offset() const noexcept { return data_offset_; }  // file offset of the data section

  // TensorSource.
  const TensorView* find(const std::string& name) const noexcept override;
  std::vector<std::string> names() const override;
  const std::string& source() const noexcept override { return file_.path(); }

  const std::vector<TensorView>& tensors() const noexcept { return tensors_; }  // file order
  const std::vector<GgufMetadataEntry>& metadata() const noexcept { return metadata_; }  // file order
  const GgufValue* find_metadata(const std::string& key) const noexcept;
  bool has_metadata(const std::string& key) const noexcept { return find_metadata(key) != nullptr; }

  // Typed metadata. get_* throw skim::Error(model) naming the file and key
  // when the key is missing or of the wrong type; find_* return nullopt when
  // the key is missing and throw when it has the wrong type. Integer
  // accessors accept any integer type whose value fits; float accessors
  // accept float32 and float64; the integer array accessor accepts arrays of
  // any integer type whose values all fit.
  std::uint32_t get_u32(const std::string& key) const;
  std::int32_t get_i32(const std::string& key) const;
  std::uint64_t get_u64(const std::string& key) const;
  std::int64_t get_i64(const std::string& key) const;
  float get_f32(const std::string& key) const;
  double get_f64(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  std::span<const std::string> get_string_array(const std::string& key) const;
  std::span<const float> get_f32_array(const std::string& key) const;  // float32 elements only
  std::vector<std::int32_t> get_i32_array(const std::string& key) const;
  const GgufArray& get_array(const std::string& key) const;

  std::optional<std::uint32_t> find_u32(const std::string& key) const;
  std::optional<std::int32_t> find_i32(const std::string& key) const;
  std::optional<std::uint64_t> find_u64(const std::string& key) const;
  std::optional<std::int64_t> find_i64(const std::string& key) const;
  std::optional<float> find_f32(const std::string& key) const;
  std::optional<double> find_f64(const std::string& key) const;
  std::optional<bool> find_bool(const std::string& key) const;
  std::optional<std::string> find_string(const std::string& key) const;
  std::optional<std::span<const std::string>> find_string_array(const std::string& key) const;
  std::optional<std::span<const float>> find_f32_array(const std::string& key) const;
  std::optional<std::vector<std::int32_t>> find_i32_array(const std::string& key) const;

 private:
  const GgufValue& require_metadata(const std::string& key) const;

  MappedFile file_;
  std::uint32_t version_ = 0;
  std::uint32_t alignment_ = 32;
  std::uint64_t data_offset_ = 0;
  std::vector<GgufMetadataEntry> metadata_;
  std::map<std::string, std::size_t, std::less<>> metadata_index_;  // key → position in metadata_
  std::vector<TensorView> tensors_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;  // name → position in tensors_
};

}  // namespace skim::format

#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace skim::format {

// Element types skim reads from model files. GGUF's quantized types join later.
enum class DType { f32, f16, bf16 };
std::string_view to_string(DType dtype) noexcept;
std::size_t element_size(DType dtype) noexcept;

// "[768, 3072]"; "[]" for a scalar. Shared by TensorView and error messages.
std::string shape_string(std::span<const std::int64_t> shape);

// A tensor as it lies in a mapped file: no copy, no conversion.
struct TensorView {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> bytes;  // exactly numel × element_size bytes
  std::string file;                  // the file it lives in, for error messages

  std::int64_t numel() const noexcept;
  std::string shape_string() const;  // "[768, 3072]"
};

// Converts any supported dtype to f32 (F16 and BF16 widen exactly).
void convert_to_f32(const TensorView& tensor, std::span<float> out);
std::vector<float> to_f32(const TensorView& tensor);

}  // namespace skim::format

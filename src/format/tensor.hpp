#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace skim::format {

// Element types skim reads from model files. q8_0 is GGUF's Q8_0: blocks of 32
// values, each block one fp16 scale d then 32 int8 q (value = d·q), 34 bytes.
// u64 is not a weight type: skim's own package stores 64-bit fingerprints in it.
enum class DType { f32, f16, bf16, q8_0, u64, i32 };
std::string_view to_string(DType dtype) noexcept;
// Bytes per element of a plain (unblocked) type; 0 for a block type (q8_0),
// whose size only byte_size gives.
std::size_t element_size(DType dtype) noexcept;
// Elements per block (1 for plain types, 32 for q8_0) and bytes per block.
std::int64_t block_elements(DType dtype) noexcept;
std::size_t block_bytes(DType dtype) noexcept;
// Bytes that `numel` elements of `dtype` occupy. Throws skim::Error(format) if
// numel is not a multiple of the block size or the count overflows, and
// skim::Error(invalid_argument) if numel is negative.
std::size_t byte_size(DType dtype, std::int64_t numel);

// "[768, 3072]"; "[]" for a scalar. Shared by TensorView and error messages.
std::string shape_string(std::span<const std::int64_t> shape);

// A tensor as it lies in a mapped file: no copy, no conversion.
struct TensorView {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> bytes;  // exactly byte_size(dtype, numel) bytes
  std::string file;                  // the file it lives in, for error messages

  std::int64_t numel() const noexcept;
  std::string shape_string() const;  // "[768, 3072]"
};

// Converts any supported dtype to f32 (F16 and BF16 widen exactly; Q8_0 is
// dequantized as d·q, which is exact in f32).
void convert_to_f32(const TensorView& tensor, std::span<float> out);
std::vector<float> to_f32(const TensorView& tensor);

}  // namespace skim::format

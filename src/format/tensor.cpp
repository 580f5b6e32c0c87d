#include "format/tensor.hpp"

#include <bit>
#include <cstring>
#include <optional>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "skim/error.hpp"

namespace skim::format {

// Tensor bytes are read as stored; safetensors and GGUF are little-endian.
static_assert(std::endian::native == std::endian::little, "skim assumes a little-endian host");

std::string_view to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::q8_0: return "Q8_0";
    case DType::u64: return "U64";
    case DType::i32: return "I32";
  }
  return "?";
}

std::size_t element_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::q8_0: return 0;  // a block type: see byte_size
    case DType::u64: return 8;
    case DType::i32: return 4;
  }
  return 0;
}

namespace {
constexpr std::int64_t q8_0_block_elements = 32;
constexpr std::size_t q8_0_block_bytes = 2 + 32;  // fp16 scale + 32 int8
}  // namespace

std::int64_t block_elements(DType dtype) noexcept {
  return dtype == DType::q8_0 ? q8_0_block_elements : 1;
}

std::size_t block_bytes(DType dtype) noexcept {
  return dtype == DType::q8_0 ? q8_0_block_bytes : element_size(dtype);
}

std::size_t byte_size(DType dtype, std::int64_t numel) {
  if (numel < 0) {
    throw Error(ErrorCode::invalid_argument,
                "byte_size: negative element count " + std::to_string(numel));
  }
  const std::int64_t per_block = block_elements(dtype);
  if (numel % per_block != 0) {
    throw Error(ErrorCode::format, std::string(to_string(dtype)) + " stores blocks of " +
                                       std::to_string(per_block) + " values but " +
                                       std::to_string(numel) + " is not a multiple of " +
                                       std::to_string(per_block));
  }
  std::size_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(numel / per_block), block_bytes(dtype), &bytes)) {
    throw Error(ErrorCode::format, std::to_string(numel) + " " + std::string(to_string(dtype)) +
                                       " values overflow a 64-bit byte count");
  }
  return bytes;
}

std::int64_t TensorView::numel() const noexcept {
  std::int64_t count = 1;  // a scalar (shape []) has one element
  for (std::int64_t dim : shape) count *= dim;
  return count;
}

std::string shape_string(std::span<const std::int64_t> shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  text += "]";
  return text;
}

std::string TensorView::shape_string() const { return format::shape_string(shape); }

namespace {

// IEEE half → single, exact for every input. The 15 exponent+mantissa bits are
// placed in a float's low exponent/mantissa positions, which reads as the half
// value scaled by 2^-112 (for half subnormals this is a float subnormal with
// the same mantissa), so one multiply by 2^112 rescales it exactly. Half inf
// and NaN (exponent 31) land at or above 2^16 after rescaling; for those the
// float exponent is forced to all ones, keeping the NaN payload and setting
// the quiet bit as F16C's vcvtph2ps does, so both paths give identical bits.
inline float half_to_float(std::uint16_t half) {
  constexpr std::uint32_t half_exponent_all_ones = 0x1fu << 23;  // after the shift by 13
  const std::uint32_t magnitude_bits = static_cast<std::uint32_t>(half & 0x7fffu) << 13;
  const std::uint32_t sign_bits = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  const float rescaled = std::bit_cast<float>(magnitude_bits) * 0x1p112f;
  std::uint32_t value_bits = std::bit_cast<std::uint32_t>(rescaled);
  if (magnitude_bits >= half_exponent_all_ones) {
    const std::uint32_t quiet_bit = magnitude_bits > half_exponent_all_ones ? 0x00400000u : 0u;
    value_bits = magnitude_bits | 0x7f800000u | quiet_bit;
  }
  return std::bit_cast<float>(value_bits | sign_bits);
}

void f16_to_f32(const std::byte* source, std::size_t count, float* out) {
  std::size_t i = 0;
#if defined(__F16C__)
  // Hardware conversion is exact too (it never rounds when widening).
  for (; i + 8 <= count; i += 8) {
    const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(source + 2 * i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(halves));
  }
#endif
  for (; i < count; ++i) {
    std::uint16_t half;
    std::memcpy(&half, source + 2 * i, 2);  // tensor data need not be 2-aligned
    out[i] = half_to_float(half);
  }
}

// BF16 is the top half of an F32, so widening is a 16-bit shift.
void bf16_to_f32(const std::byte* source, std::size_t count, float* out) {
  for (std::size_t i = 0; i < count; ++i) {
    std::uint16_t upper;
    std::memcpy(&upper, source + 2 * i, 2);
    out[i] = std::bit_cast<float>(static_cast<std::uint32_t>(upper) << 16);
  }
}

// Q8_0: per block of 32, an fp16 scale d then 32 int8 q; value = d·q. The
// product of an 11-bit and an 8-bit significand is exact in f32.
void q8_0_to_f32(const std::byte* source, std::size_t count, float* out) {
  const std::size_t blocks = count / q8_0_block_elements;
  for (std::size_t block = 0; block < blocks; ++block) {
    const std::byte* data = source + block * q8_0_block_bytes;
    std::uint16_t half;
    std::memcpy(&half, data, 2);
    const float scale = half_to_float(half);
    const auto* quants = reinterpret_cast<const std::int8_t*>(data + 2);
    float* values = out + block * q8_0_block_elements;
    for (std::int64_t i = 0; i < q8_0_block_elements; ++i) values[i] = scale * static_cast<float>(quants[i]);
  }
}

// The byte count a well-formed view of `count` elements has; nullopt if the
// count does not fill whole blocks (never true for a view a reader handed out).
std::optional<std::size_t> expected_bytes(DType dtype, std::size_t count) {
  const auto per_block = static_cast<std::size_t>(block_elements(dtype));
  if (count % per_block != 0) return std::nullopt;
  return count / per_block * block_bytes(dtype);
}

}  // namespace

void convert_to_f32(const TensorView& tensor, std::span<float> out) {
  const std::size_t count = static_cast<std::size_t>(tensor.numel());
  if (out.size() != count) {
    throw Error(ErrorCode::invalid_argument,
                "convert_to_f32: tensor '" + tensor.name + "' has " + std::to_string(count) +
                    " elements but the output holds " + std::to_string(out.size()));
  }
  if (expected_bytes(tensor.dtype, count) != tensor.bytes.size()) {
    throw Error(ErrorCode::internal, tensor.file + ": tensor '" + tensor.name +
                                         "': byte span does not match shape × dtype");
  }
  if (count == 0) return;
  switch (tensor.dtype) {
    case DType::f32: std::memcpy(out.data(), tensor.bytes.data(), count * sizeof(float)); return;
    case DType::f16: f16_to_f32(tensor.bytes.data(), count, out.data()); return;
    case DType::bf16: bf16_to_f32(tensor.bytes.data(), count, out.data()); return;
    case DType::q8_0: q8_0_to_f32(tensor.bytes.data(), count, out.data()); return;
    case DType::u64:
    case DType::i32:
      throw Error(ErrorCode::model, tensor.file + ": tensor '" + tensor.name + "' is " + std::string(to_string(tensor.dtype)) +
                                        " (integers), not a float tensor");
  }
}

std::vector<float> to_f32(const TensorView& tensor) {
  std::vector<float> values(static_cast<std::size_t>(tensor.numel()));
  convert_to_f32(tensor, values);
  return values;
}

}  // namespace skim::format

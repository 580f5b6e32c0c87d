#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "format/tensor.hpp"

namespace skim::format {

// One tensor to store: `bytes` must hold exactly numel(shape) × element_size
// bytes, little-endian, and stay alive until write_safetensors returns.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> bytes;
};

// Writes a .safetensors file the way Hugging Face does (8-byte length, JSON
// header padded with spaces to a multiple of 8, data in the given order). The
// file appears atomically: it is written to a temporary name beside `path`,
// flushed, then renamed. Throws skim::Error(invalid_argument) for a bad tensor
// (duplicate or reserved name, negative dimension, byte count not matching
// shape × dtype) and skim::Error(io) naming the path when writing fails.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace skim::format

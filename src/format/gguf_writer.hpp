#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "format/gguf.hpp"
#include "format/tensor.hpp"

namespace skim::format {

// One tensor to store: `shape` is row-major (written to the file as ne[]
// reversed), at most 4 dimensions; `bytes` must hold exactly
// byte_size(dtype, numel) bytes, little-endian, and stay alive until
// write_gguf returns.
struct GgufTensorToWrite {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> bytes;
};

// Writes a GGUF v3 file: the metadata in the given order, the tensor infos,
// then each tensor's data at the next multiple of `alignment` (a power of
// two; when it is not 32, general.alignment is written unless `metadata`
// already holds it with the same value). Tensor data are streamed from the
// caller's spans, so a large model is never copied in memory. The file appears
// atomically (temporary name beside `path`, flushed, renamed). Throws
// skim::Error(invalid_argument) for a bad argument (duplicate key or tensor
// name, bad shape, byte count not matching shape × dtype, Q8_0 rows not whole
// blocks, alignment not a power of two, arrays nested more than 8 deep) and
// skim::Error(io) naming the path when writing fails.
void write_gguf(const std::filesystem::path& path, const std::vector<GgufMetadataEntry>& metadata,
                const std::vector<GgufTensorToWrite>& tensors, std::uint32_t alignment = 32);

}  // namespace skim::format

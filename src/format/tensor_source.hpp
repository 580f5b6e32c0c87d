#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "format/tensor.hpp"

namespace skim::format {

// Anything that hands out named tensors: a safetensors checkpoint
// (TensorStore), a GGUF file (GgufFile), a llama2.c checkpoint
// (Llama2cCheckpoint). Shapes are always row-major / PyTorch order
// (outermost first), whatever order the file stores its dimensions in.
class TensorSource {
 public:
  virtual ~TensorSource();

  // nullptr when there is no tensor of that name.
  virtual const TensorView* find(const std::string& name) const noexcept = 0;
  // Every tensor name, sorted.
  virtual std::vector<std::string> names() const = 0;
  // The file or directory the tensors come from, for messages.
  virtual const std::string& source() const noexcept = 0;

  // Throws skim::Error(model) naming the tensor (and where it was looked for)
  // when it is missing or its shape is not `shape`.
  const TensorView& require(const std::string& name, const std::vector<std::int64_t>& shape) const;

 protected:
  // Copy and move only through a derived class (no slicing through the base).
  TensorSource() = default;
  TensorSource(const TensorSource&) = default;
  TensorSource(TensorSource&&) = default;
  TensorSource& operator=(const TensorSource&) = default;
  TensorSource& operator=(TensorSource&&) = default;
};

}  // namespace skim::format

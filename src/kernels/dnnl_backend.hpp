#pragma once
// Private to kernels/: the oneDNN objects behind Backend and Scratch.
#include <dnnl.hpp>

#include <vector>

#include "kernels/aligned_buffer.hpp"
#include "kernels/backend.hpp"

namespace skim::kernels {

struct Backend::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
};

struct Scratch::Impl {
  explicit Impl(const dnnl::engine& engine) : stream(engine) {}
  dnnl::stream stream;
  AlignedBuffer<std::byte> scratchpad;  // grows to the largest primitive's need, once
  AlignedBuffer<std::uint16_t> bf16_input;  // activations rounded to bf16 for bf16 GEMMs
};

}  // namespace skim::kernels

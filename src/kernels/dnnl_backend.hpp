#pragma once
// Private to kernels/: the oneDNN objects behind Backend and Scratch.
#include <dnnl.hpp>

#include <unordered_map>
#include <vector>

#include "kernels/aligned_buffer.hpp"
#include "kernels/backend.hpp"
#include "kernels/q8_0.hpp"

namespace skim::kernels {

struct Backend::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
};

struct Scratch::Impl {
  explicit Impl(const dnnl::engine& engine) : stream(engine) {}
  dnnl::stream stream;
  AlignedBuffer<std::byte> scratchpad;  // grows to the largest primitive's need, once
  AlignedBuffer<std::uint16_t> bf16_input;  // activations rounded to bf16 for bf16 GEMMs
  Q8Activations q8_input;                   // activations quantized for Q8_0 weights

  // Memory objects and argument maps for each primitive this session has run,
  // built once and re-pointed at each call's buffers, so a warm forward pass
  // allocates nothing on our side.
  struct Bound {
    dnnl::memory src, dst, pad;
    std::unordered_map<int, dnnl::memory> args;
  };
  std::unordered_map<std::uint64_t, Bound> bound;  // key: the cached primitive's id
};

}  // namespace skim::kernels

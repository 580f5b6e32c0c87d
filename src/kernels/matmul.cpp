#include "kernels/matmul.hpp"

#include <omp.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "kernels/dnnl_backend.hpp"
#include "kernels/gemv.hpp"
#include "kernels/q8_0.hpp"
#include "skim/error.hpp"

namespace skim::kernels {

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// Row counts above 16 are rounded up to a multiple of 16 (Linear::padded_rows)
// so a bounded number of primitives serve all batch shapes; up to 16 rows run
// exactly, because a decoding step (one row) is bound by streaming the weights
// and padding it would multiply its work.

// The row count whose primitive picks the packed weight layout; the layout
// depends on the weight shape, and every other row count reuses it.
constexpr int layout_probe_rows = 128;

// The one-row kernel, if oneDNN chose a layout it reads (BA16a64b for f32,
// BA16a64b2a for bf16) and the CPU has the instructions.
std::optional<BlockedLayout> gemv_layout(const memory::desc& md, int in, int out, WeightPrecision precision) {
  const auto& d = md.data;
  if (d.format_kind != dnnl_blocked || d.ndims != 2 || !Gemv::supported(precision)) return std::nullopt;
  const auto& b = d.format_desc.blocking;
  const bool bf16 = precision == WeightPrecision::bf16;
  const int k_block = bf16 ? 32 : 16;
  const bool tiles = bf16 ? (b.inner_nblks == 3 && b.inner_blks[0] == 16 && b.inner_idxs[0] == 0 &&
                             b.inner_blks[1] == 64 && b.inner_idxs[1] == 1 && b.inner_blks[2] == 2 &&
                             b.inner_idxs[2] == 0)
                          : (b.inner_nblks == 2 && b.inner_blks[0] == 16 && b.inner_idxs[0] == 0 &&
                             b.inner_blks[1] == 64 && b.inner_idxs[1] == 1);
  // k blocks must follow each other inside a column block.
  if (!tiles || b.strides[0] != k_block * BlockedLayout::column_block) return std::nullopt;
  BlockedLayout layout;
  layout.in = in;
  layout.out = out;
  layout.k_block = k_block;
  layout.column_block_stride = static_cast<std::size_t>(b.strides[1]);
  layout.precision = precision;
  return layout;
}

}  // namespace

struct Linear::Impl {
  const Backend& backend;
  memory::desc weights_md;  // the packed layout
  // On huge pages (every decoded token streams it); shared with column slices.
  std::shared_ptr<AlignedBuffer<std::byte>> weight_storage;
  memory weights;
  std::optional<Gemv> gemv;  // one-row path over the same packed weights
  std::optional<Q8Matrix> q8;  // set: every row count runs the Q8_0 kernel, not oneDNN
  memory bias;
  dnnl::primitive_attr attr;

  struct Cached {
    dnnl::matmul primitive;
    std::size_t scratchpad_bytes;
    // Names this primitive in a Scratch's bindings for the process's life: an
    // address could be reused by another Linear's primitive after this one
    // is destroyed, and stale bindings point at freed weights.
    std::uint64_t id;
  };
  mutable std::shared_mutex mutex;
  mutable std::unordered_map<std::int64_t, Cached> by_shape;  // key: rows, ld_x, ld_y

  dt src_type = dt::f32;

  explicit Impl(const Backend& b) : backend(b) {}

  dnnl::matmul::primitive_desc describe(int rows, std::size_t ld_x, std::size_t ld_y, int in,
                                        int out, const memory::desc& wmd) const {
    const auto& engine = backend.impl().engine;
    memory::desc src_md({rows, in}, src_type, memory::dims{static_cast<memory::dim>(ld_x), 1});
    memory::desc dst_md({rows, out}, dt::f32, memory::dims{static_cast<memory::dim>(ld_y), 1});
    memory::desc bias_md({1, out}, dt::f32, tag::ab);
    dnnl::matmul::desc desc(src_md, wmd, bias_md, dst_md);
    return dnnl::matmul::primitive_desc(desc, attr, engine);
  }

  const Cached& get(int rows, std::size_t ld_x, std::size_t ld_y, int in, int out) const {
    const std::int64_t key = (static_cast<std::int64_t>(rows) << 40) ^
                             (static_cast<std::int64_t>(ld_x) << 20) ^ static_cast<std::int64_t>(ld_y);
    {
      std::shared_lock lock(mutex);
      auto it = by_shape.find(key);
      if (it != by_shape.end()) return it->second;
    }
    auto pd = describe(rows, ld_x, ld_y, in, out, weights_md);
    // oneDNN 2.6 falls back to its reference GEMM for some strides (a
    // strided output, for one): correct, but a hundred times slower.
    if (std::string(pd.impl_info_str()).starts_with("ref"))
      spdlog::warn("skim: oneDNN runs a {}x{}x{} GEMM (input stride {}, output stride {}) with its reference "
                   "implementation; expect it to be slow",
                   rows, in, out, ld_x, ld_y);
    static std::atomic<std::uint64_t> next_id{1};
    Cached entry{dnnl::matmul(pd), pd.scratchpad_desc().get_size(), next_id++};
    std::unique_lock lock(mutex);
    return by_shape.emplace(key, std::move(entry)).first->second;
  }
};

Linear::Linear(const Backend& backend, std::span<const float> weight_out_in,
               std::span<const float> bias, int in, int out, Epilogue epilogue, WeightPrecision precision,
               OneRowPath one_row)
    : in_(in), out_(out), epilogue_(epilogue), precision_(precision), impl_(std::make_unique<Impl>(backend)) {
  if (in <= 0 || out <= 0 || weight_out_in.size() != static_cast<std::size_t>(in) * out ||
      (!bias.empty() && bias.size() != static_cast<std::size_t>(out)))
    throw Error(ErrorCode::internal, "Linear: weight/bias sizes do not match " +
                                         std::to_string(out) + "x" + std::to_string(in));
  set_bias(bias);
  if (precision == WeightPrecision::q8_0 && Q8Matrix::supported()) {
    impl_->q8 = Q8Matrix::quantize(weight_out_in, in, out);
    return;
  }
  if (precision_ == WeightPrecision::q8_0) precision_ = WeightPrecision::f32;
  pack_for_onednn(weight_out_in, one_row);
}

Linear::Linear(const Backend& backend, std::span<const std::byte> q8_0_blocks, std::span<const float> bias, int in,
               int out, Epilogue epilogue)
    : in_(in), out_(out), epilogue_(epilogue), precision_(WeightPrecision::q8_0),
      impl_(std::make_unique<Impl>(backend)) {
  if (in <= 0 || out <= 0 || in % Q8Matrix::block != 0 ||
      q8_0_blocks.size() != static_cast<std::size_t>(out) * (in / Q8Matrix::block) * Q8Matrix::block_bytes ||
      (!bias.empty() && bias.size() != static_cast<std::size_t>(out)))
    throw Error(ErrorCode::internal, "Linear: Q8_0 data does not hold a " + std::to_string(out) + "x" +
                                         std::to_string(in) + " matrix");
  set_bias(bias);
  impl_->q8 = Q8Matrix::from_blocks(q8_0_blocks, in, out);
  if (Q8Matrix::supported()) return;
  precision_ = WeightPrecision::f32;
  const std::vector<float> values = impl_->q8->dequantize();
  impl_->q8.reset();
  pack_for_onednn(values, OneRowPath::same_as_batch);
}

void Linear::set_bias(std::span<const float> bias) {
  const auto& engine = impl_->backend.impl().engine;
  impl_->bias = memory(memory::desc({1, out_}, dt::f32, tag::ab), engine);
  float* b = static_cast<float*>(impl_->bias.get_data_handle());
  for (int j = 0; j < out_; ++j) b[j] = bias.empty() ? 0.f : bias[j];
}

void Linear::pack_for_onednn(std::span<const float> weight_out_in, OneRowPath one_row) {
  const int in = in_, out = out_;
  const auto& engine = impl_->backend.impl().engine;
  auto& attr = impl_->attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::post_ops ops;
  if (epilogue_ == Epilogue::gelu_erf) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
  if (epilogue_ == Epilogue::add_to_output) ops.append_sum(1.f);
  if (epilogue_ == Epilogue::tanh) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_tanh, 0.f, 0.f);
  attr.set_post_ops(ops);

  // Let oneDNN choose the weight layout, then reorder the [out, in] matrix
  // (which is Wᵀ in "ba" order) into it once.
  const dt weight_type = precision_ == WeightPrecision::bf16 ? dt::bf16 : dt::f32;
  impl_->src_type = weight_type;
  memory::desc any_md({in, out}, weight_type, tag::any);
  auto probe = impl_->describe(layout_probe_rows, in, out, in, out, any_md);
  impl_->weights_md = probe.weights_desc();
  memory::desc plain_md({in, out}, dt::f32, tag::ba);
  memory plain(plain_md, engine, const_cast<float*>(weight_out_in.data()));
  impl_->weight_storage = std::make_shared<AlignedBuffer<std::byte>>();
  impl_->weight_storage->resize_for_streaming(impl_->weights_md.get_size());
  impl_->weights = memory(impl_->weights_md, engine, impl_->weight_storage->data());
  dnnl::stream stream(engine);
  dnnl::reorder(plain, impl_->weights).execute(stream, plain, impl_->weights);
  // oneDNN's erf and tanh are its own approximations; the streaming kernel
  // takes the epilogues whose arithmetic it reproduces.
  const bool exact_epilogue = epilogue_ == Epilogue::none || epilogue_ == Epilogue::add_to_output;
  if (one_row == OneRowPath::streaming && exact_epilogue)
    if (auto layout = gemv_layout(impl_->weights_md, in, out, precision_))
      impl_->gemv = Gemv{*layout, impl_->weight_storage->data()};
  stream.wait();
}

std::optional<Linear> Linear::column_slice(int first, int count) const {
  constexpr int block = BlockedLayout::column_block;
  if (impl_->q8 || !impl_->weight_storage || first < 0 || count <= 0 || first + count > out_ || first % block ||
      count % block)
    return std::nullopt;
  // Inside oneDNN's blocked layouts (BA16a64b, BA16a64b2a) a block of 64
  // output columns is one contiguous run of the packed weights; a slice of
  // whole blocks is the same layout with fewer blocks, at an offset.
  const auto& parent = impl_->weights_md.data;
  if (parent.format_kind != dnnl_blocked || parent.format_desc.blocking.inner_nblks < 2 ||
      parent.format_desc.blocking.inner_blks[1] != block || parent.format_desc.blocking.inner_idxs[1] != 1)
    return std::nullopt;
  std::optional<Linear> slice(Linear(impl_->backend, in_, count, epilogue_, precision_));
  auto& impl = *slice->impl_;
  impl.attr = impl_->attr;
  impl.src_type = impl_->src_type;
  memory::desc any_md({in_, count}, impl_->weights_md.data_type(), tag::any);
  impl.weights_md = impl.describe(layout_probe_rows, in_, count, in_, count, any_md).weights_desc();
  const auto& child = impl.weights_md.data;
  if (child.format_kind != dnnl_blocked || child.format_desc.blocking.inner_nblks != parent.format_desc.blocking.inner_nblks ||
      !std::equal(child.format_desc.blocking.inner_blks, child.format_desc.blocking.inner_blks + child.format_desc.blocking.inner_nblks,
                  parent.format_desc.blocking.inner_blks) ||
      child.format_desc.blocking.strides[0] != parent.format_desc.blocking.strides[0] ||
      child.format_desc.blocking.strides[1] != parent.format_desc.blocking.strides[1])
    return std::nullopt;  // oneDNN would lay the slice out otherwise
  const std::size_t element = precision_ == WeightPrecision::bf16 ? 2 : 4;
  const std::size_t offset = static_cast<std::size_t>(first / block) * parent.format_desc.blocking.strides[1] * element;
  impl.weight_storage = impl_->weight_storage;
  const auto& engine = impl_->backend.impl().engine;
  impl.weights = memory(impl.weights_md, engine, impl.weight_storage->data() + offset);
  impl.bias = memory(memory::desc({1, count}, dt::f32, tag::ab), engine);
  const float* b = static_cast<const float*>(impl_->bias.get_data_handle());
  std::copy(b + first, b + first + count, static_cast<float*>(impl.bias.get_data_handle()));
  if (impl_->gemv) {
    BlockedLayout layout = impl_->gemv->layout;
    layout.out = count;
    impl.gemv = Gemv{layout, impl.weight_storage->data() + offset};
  }
  return slice;
}

Linear::Linear(const Backend& backend, int in, int out, Epilogue epilogue, WeightPrecision precision)
    : in_(in), out_(out), epilogue_(epilogue), precision_(precision), impl_(std::make_unique<Impl>(backend)) {}

Linear::~Linear() = default;
Linear::Linear(Linear&&) noexcept = default;
Linear& Linear::operator=(Linear&&) noexcept = default;

void Linear::operator()(const float* x, std::size_t ld_x, float* y, std::size_t ld_y, int rows,
                        Scratch& scratch) const {
  if (rows <= 0) return;
  auto& s = scratch.impl();
  const float* bias = static_cast<const float*>(impl_->bias.get_data_handle());
  if (impl_->q8) return (*impl_->q8)(x, ld_x, bias, y, ld_y, rows, epilogue_, s.q8_input, omp_get_max_threads());
  if (rows == 1 && impl_->gemv) {
    if (precision_ == WeightPrecision::bf16) s.bf16_input.reserve(static_cast<std::size_t>(in_) + 1);
    (*impl_->gemv)(x, bias, y, epilogue_, s.bf16_input.data(), omp_get_max_threads());
    return;
  }
  const int padded = padded_rows(rows);
  // bf16 GEMMs read their own dense copy of x, so the row stride is in_.
  const std::size_t src_ld = precision_ == WeightPrecision::bf16 ? static_cast<std::size_t>(in_) : ld_x;
  const auto& cached = impl_->get(padded, src_ld, ld_y, in_, out_);
  const auto& engine = impl_->backend.impl().engine;
  if (s.scratchpad.size() < cached.scratchpad_bytes) s.scratchpad.resize(cached.scratchpad_bytes);

  const float* src_data = x;
  if (precision_ == WeightPrecision::bf16) {
    // Round the activations to bf16 (nearest even) into a dense buffer.
    s.bf16_input.reserve(static_cast<std::size_t>(padded) * in_);
    std::uint16_t* dst16 = s.bf16_input.data();
    for (int r = 0; r < padded; ++r) {
      const float* row = x + static_cast<std::size_t>(r) * ld_x;
      std::uint16_t* out16 = dst16 + static_cast<std::size_t>(r) * in_;
      for (int i = 0; i < in_; ++i) {
        std::uint32_t bits;
        std::memcpy(&bits, row + i, 4);
        out16[i] = static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
      }
    }
    src_data = reinterpret_cast<const float*>(dst16);
  }
  auto [it, fresh] = s.bound.try_emplace(cached.id);
  auto& b = it->second;
  if (fresh) {
    const dt src_type = precision_ == WeightPrecision::bf16 ? dt::bf16 : dt::f32;
    b.src = memory(memory::desc({padded, in_}, src_type, memory::dims{static_cast<memory::dim>(src_ld), 1}), engine,
                   DNNL_MEMORY_NONE);
    b.dst = memory(memory::desc({padded, out_}, dt::f32, memory::dims{static_cast<memory::dim>(ld_y), 1}), engine,
                   DNNL_MEMORY_NONE);
    b.pad = memory(memory::desc({static_cast<memory::dim>(cached.scratchpad_bytes)}, dt::u8, tag::a), engine,
                   DNNL_MEMORY_NONE);
    b.args = {{DNNL_ARG_SRC, b.src},
              {DNNL_ARG_WEIGHTS, impl_->weights},
              {DNNL_ARG_BIAS, impl_->bias},
              {DNNL_ARG_DST, b.dst},
              {DNNL_ARG_SCRATCHPAD, b.pad}};
  }
  b.src.set_data_handle(const_cast<float*>(src_data));
  b.dst.set_data_handle(y);
  b.pad.set_data_handle(s.scratchpad.data());
  cached.primitive.execute(s.stream, b.args);
  s.stream.wait();
}

}  // namespace skim::kernels

#include "kernels/matmul.hpp"

#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "kernels/dnnl_backend.hpp"
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

}  // namespace

struct Linear::Impl {
  const Backend& backend;
  memory::desc weights_md;  // the packed layout
  memory weights;
  memory bias;
  dnnl::primitive_attr attr;

  struct Cached {
    dnnl::matmul primitive;
    std::size_t scratchpad_bytes;
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
    Cached entry{dnnl::matmul(pd), pd.scratchpad_desc().get_size()};
    std::unique_lock lock(mutex);
    return by_shape.emplace(key, std::move(entry)).first->second;
  }
};

Linear::Linear(const Backend& backend, std::span<const float> weight_out_in,
               std::span<const float> bias, int in, int out, Epilogue epilogue, WeightPrecision precision)
    : in_(in), out_(out), epilogue_(epilogue), precision_(precision), impl_(std::make_unique<Impl>(backend)) {
  if (in <= 0 || out <= 0 || weight_out_in.size() != static_cast<std::size_t>(in) * out ||
      (!bias.empty() && bias.size() != static_cast<std::size_t>(out)))
    throw Error(ErrorCode::internal, "Linear: weight/bias sizes do not match " +
                                         std::to_string(out) + "x" + std::to_string(in));
  const auto& engine = backend.impl().engine;
  auto& attr = impl_->attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::post_ops ops;
  if (epilogue == Epilogue::gelu_erf) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
  if (epilogue == Epilogue::add_to_output) ops.append_sum(1.f);
  if (epilogue == Epilogue::tanh) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_tanh, 0.f, 0.f);
  attr.set_post_ops(ops);

  // Let oneDNN choose the weight layout, then reorder the [out, in] matrix
  // (which is Wᵀ in "ba" order) into it once.
  const dt weight_type = precision == WeightPrecision::bf16 ? dt::bf16 : dt::f32;
  impl_->src_type = weight_type;
  memory::desc any_md({in, out}, weight_type, tag::any);
  auto probe = impl_->describe(layout_probe_rows, in, out, in, out, any_md);
  impl_->weights_md = probe.weights_desc();
  memory::desc plain_md({in, out}, dt::f32, tag::ba);
  memory plain(plain_md, engine, const_cast<float*>(weight_out_in.data()));
  impl_->weights = memory(impl_->weights_md, engine);
  dnnl::stream stream(engine);
  dnnl::reorder(plain, impl_->weights).execute(stream, plain, impl_->weights);

  impl_->bias = memory(memory::desc({1, out}, dt::f32, tag::ab), engine);
  float* b = static_cast<float*>(impl_->bias.get_data_handle());
  for (int j = 0; j < out; ++j) b[j] = bias.empty() ? 0.f : bias[j];
  stream.wait();
}

Linear::~Linear() = default;
Linear::Linear(Linear&&) noexcept = default;
Linear& Linear::operator=(Linear&&) noexcept = default;

void Linear::operator()(const float* x, std::size_t ld_x, float* y, std::size_t ld_y, int rows,
                        Scratch& scratch) const {
  if (rows <= 0) return;
  const int padded = padded_rows(rows);
  // bf16 GEMMs read their own dense copy of x, so the row stride is in_.
  const std::size_t src_ld = precision_ == WeightPrecision::bf16 ? static_cast<std::size_t>(in_) : ld_x;
  const auto& cached = impl_->get(padded, src_ld, ld_y, in_, out_);
  auto& s = scratch.impl();
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
  auto [it, fresh] = s.bound.try_emplace(&cached);
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

#include "execute/llama_decoder.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "skim/error.hpp"

namespace skim::execute {

namespace {

using kernels::Epilogue;
using kernels::Linear;
using kernels::OneRowPath;
using Shape = std::vector<std::int64_t>;


struct Names {
  DecoderNaming naming;
  std::string layer(int l, const char* gguf, const char* hf) const {
    return naming == DecoderNaming::gguf ? "blk." + std::to_string(l) + "." + gguf
                                         : "model.layers." + std::to_string(l) + "." + hf;
  }
  std::string global(const char* gguf, const char* hf) const { return naming == DecoderNaming::gguf ? gguf : hf; }
};

}  // namespace

struct LlamaDecoder::Layer {
  std::vector<float> attention_norm;
  Linear qkv;               // [dim + 2·kv_width, dim]: query, key, value in one GEMM
  Linear attention_output;  // += into the residual
  std::vector<float> ffn_norm;
  Linear gate_up;  // [2·hidden, dim]: gate and up in one GEMM
  Linear down;     // += into the residual
};

LlamaDecoder::LlamaDecoder(const DecoderConfig& c, const format::TensorSource& weights, DecoderNaming naming,
                           const kernels::Backend& backend, WeightPacking packing)
    : config_(c), backend_(backend) {
  if (c.dim <= 0 || c.heads <= 0 || c.kv_heads <= 0 || c.dim % c.heads != 0 || c.heads % c.kv_heads != 0 ||
      c.head_dim() % 2 != 0)
    throw Error(ErrorCode::model, weights.source() + ": inconsistent decoder shape (dim " + std::to_string(c.dim) +
                                      ", heads " + std::to_string(c.heads) + ", kv heads " +
                                      std::to_string(c.kv_heads) + ")");
  const Names n{naming};
  const std::int64_t D = c.dim, F = c.hidden_dim, KV = c.kv_width(), V = c.vocab;
  auto load = [&](const std::string& name, const Shape& shape) { return format::to_f32(weights.require(name, shape)); };
  // One GEMM for matrices stacked along `out` (query|key|value, gate|up).
  // Q8_0 data stays Q8_0 when the packing allows it: GGUF blocks run along
  // `in`, so stacking rows is stacking their bytes.
  auto linear = [&](std::initializer_list<std::pair<std::string, Shape>> parts, Epilogue epilogue) {
    const int in = static_cast<int>(parts.begin()->second[1]);
    int out = 0;
    bool all_q8_0 = packing.q8_0_as_stored;
    for (const auto& [name, shape] : parts) {
      all_q8_0 = all_q8_0 && weights.require(name, shape).dtype == format::DType::q8_0;
      out += static_cast<int>(shape[0]);
    }
    // Decoding runs one row per step: the streaming kernel serves it.
    if (!all_q8_0) {
      std::vector<float> values;
      for (const auto& [name, shape] : parts) {
        const auto part = load(name, shape);
        values.insert(values.end(), part.begin(), part.end());
      }
      return Linear(backend, values, {}, in, out, epilogue, packing.floats, OneRowPath::streaming);
    }
    std::vector<std::byte> blocks;
    for (const auto& [name, shape] : parts) {
      const auto bytes = weights.require(name, shape).bytes;
      blocks.insert(blocks.end(), bytes.begin(), bytes.end());
    }
    return Linear(backend, blocks, {}, in, out, epilogue);
  };

  const std::string embeddings = n.global("token_embd.weight", "model.embed_tokens.weight");
  token_embeddings_ = load(embeddings, {V, D});
  for (int l = 0; l < c.layers; ++l) {
    auto name = [&](const char* gguf, const char* hf) { return n.layer(l, gguf, hf); };
    layers_.push_back(std::make_unique<Layer>(Layer{
        load(name("attn_norm.weight", "input_layernorm.weight"), {D}),
        linear({{name("attn_q.weight", "self_attn.q_proj.weight"), {D, D}},
                {name("attn_k.weight", "self_attn.k_proj.weight"), {KV, D}},
                {name("attn_v.weight", "self_attn.v_proj.weight"), {KV, D}}},
               Epilogue::none),
        linear({{name("attn_output.weight", "self_attn.o_proj.weight"), {D, D}}}, Epilogue::add_to_output),
        load(name("ffn_norm.weight", "post_attention_layernorm.weight"), {D}),
        linear({{name("ffn_gate.weight", "mlp.gate_proj.weight"), {F, D}},
                {name("ffn_up.weight", "mlp.up_proj.weight"), {F, D}}},
               Epilogue::none),
        linear({{name("ffn_down.weight", "mlp.down_proj.weight"), {D, F}}}, Epilogue::add_to_output)}));
  }
  output_norm_ = load(n.global("output_norm.weight", "model.norm.weight"), {D});
  const std::string head = n.global("output.weight", "lm_head.weight");
  // No separate head: the output projection is the token embedding (tied).
  output_ = std::make_unique<Linear>(linear({{weights.find(head) ? head : embeddings, {V, D}}}, Epilogue::none));
  rope_table_ = kernels::Rope::make_table(c.context, c.head_dim(), c.rope_theta);
}

LlamaDecoder::~LlamaDecoder() = default;

acm::FfnWeights LlamaDecoder::ffn_weights(const format::TensorSource& weights, const DecoderConfig& c,
                                          DecoderNaming naming, int l) {
  const Names n{naming};
  const std::int64_t D = c.dim, F = c.hidden_dim;
  auto load = [&](const std::string& name, const Shape& shape) { return format::to_f32(weights.require(name, shape)); };
  acm::FfnWeights w;
  w.up = load(n.layer(l, "ffn_gate.weight", "mlp.gate_proj.weight"), {F, D});
  const auto up = load(n.layer(l, "ffn_up.weight", "mlp.up_proj.weight"), {F, D});
  w.up.insert(w.up.end(), up.begin(), up.end());
  w.down = load(n.layer(l, "ffn_down.weight", "mlp.down_proj.weight"), {D, F});
  return w;
}

DecoderWorkspace::DecoderWorkspace(const LlamaDecoder& decoder, int max_rows, const acm::WidthGating* width)
    : max_rows_(max_rows), threads_(kernels::hardware_threads()), scratch_(decoder.backend()) {
  const auto& c = decoder.config();
  const std::size_t rows = Linear::padded_rows(max_rows);
  x_.resize(rows * c.dim);
  normed_.resize((rows + 15) * c.dim);  // logits() reads a padded row bucket from any offset
  qkv_.resize(rows * (c.dim + 2 * c.kv_width()));
  context_.resize(rows * c.dim);
  gate_up_.resize(rows * 2 * c.hidden_dim);
  ffn_.resize(rows * c.hidden_dim);
  attention_scratch_.resize(kernels::Attention::scratch_floats(max_rows, c.context, threads_));
  logits_.resize(static_cast<std::size_t>(Linear::padded_rows(LlamaDecoder::logits_rows())) * c.vocab);
  routed_x_.resize(rows * c.dim);
  routed_query_.resize(rows * c.dim);
  positions_.reserve(max_rows);
  ids_.reserve(max_rows);
  routed_positions_.reserve(max_rows);
  routed_rows_.resize(c.layers);
  for (auto& rows_of_layer : routed_rows_) rows_of_layer.reserve(max_rows);
  segments_.reserve(max_rows);  // the row-subset path has one per selected row
  routing_ = mod::RoutingScratch(max_rows);
  routing_.before.resize(rows * c.dim);
  if (width) width_ = width->scratch(max_rows);
}

void LlamaDecoder::embed(std::span<const std::int32_t> tokens, const KvCache& cache, DecoderWorkspace& ws) const {
  const auto& c = config_;
  const int rows = static_cast<int>(tokens.size()), start = cache.length();
  if (rows > ws.max_rows_)
    throw Error(ErrorCode::internal, "decoder chunk of " + std::to_string(rows) + " tokens exceeds the workspace");
  if (start + rows > c.context)
    throw Error(ErrorCode::invalid_argument, "the conversation would reach " + std::to_string(start + rows) +
                                                 " tokens, past the model's context of " + std::to_string(c.context));
  for (int r = 0; r < rows; ++r) {
    const int id = tokens[r];
    if (id < 0 || id >= c.vocab)
      throw Error(ErrorCode::invalid_argument, "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                                   std::to_string(c.vocab));
    std::memcpy(ws.x_.data() + static_cast<std::size_t>(r) * c.dim,
                token_embeddings_.data() + static_cast<std::size_t>(id) * c.dim, sizeof(float) * c.dim);
  }
  ws.positions_.resize(rows);
  for (int r = 0; r < rows; ++r) ws.positions_[r] = start + r;
  ws.ids_.assign(tokens.begin(), tokens.end());
}

void LlamaDecoder::finish(int rows, KvCache& cache, DecoderWorkspace& ws) const {
  cache.set_length(cache.length() + rows);
  kernels::RmsNorm{output_norm_.data(), config_.dim, config_.norm_eps}(ws.x_.data(), config_.dim, ws.normed_.data(),
                                                                     config_.dim, rows);
}

FlopCount LlamaDecoder::forward(std::span<const std::int32_t> tokens, KvCache& cache, DecoderWorkspace& ws) const {
  return forward(tokens, cache, ws, Skipping{});
}

FlopCount LlamaDecoder::forward(std::span<const std::int32_t> tokens, KvCache& cache, DecoderWorkspace& ws,
                                std::span<const RowSelection> selections) const {
  const auto& c = config_;
  const int rows = static_cast<int>(tokens.size());
  if (rows == 0) return {};
  if (!selections.empty() && static_cast<int>(selections.size()) != c.layers)
    throw Error(ErrorCode::internal, "one row selection per decoder layer expected");
  embed(tokens, cache, ws);
  FlopCount flops;
  for (int l = 0; l < c.layers; ++l)
    flops += layer_forward(l, rows, cache, ws, selections.empty() ? RowSelection::every_row() : selections[l]);
  finish(rows, cache, ws);
  return flops;
}

FlopCount LlamaDecoder::forward(std::span<const std::int32_t> tokens, KvCache& cache, DecoderWorkspace& ws,
                                const mod::TokenRouting& routing) const {
  return forward(tokens, cache, ws, Skipping{&routing, nullptr});
}

FlopCount LlamaDecoder::forward(std::span<const std::int32_t> tokens, KvCache& cache, DecoderWorkspace& ws,
                                const Skipping& skip, const FfnProbe& ffn_probe) const {
  const auto& c = config_;
  const int rows = static_cast<int>(tokens.size()), D = c.dim;
  if (rows == 0) return {};
  const mod::TokenRouting* routing = skip.tokens;
  const bool native = routing && routing->semantics() == mod::Semantics::native;
  if (native && routing->scorer() != mod::Scorer::learned)
    throw Error(ErrorCode::internal, "native Mixture-of-Depths blocks route with their learned routers only");
  embed(tokens, cache, ws);
  for (auto& rows_of_layer : ws.routed_rows_) rows_of_layer.clear();
  auto& scratch = ws.routing_;
  FlopCount flops;
  for (int l = 0; l < c.layers; ++l) {
    if (!routing || !routing->routes(l)) {
      flops += layer_forward(l, rows, cache, ws, RowSelection::every_row(), skip.width, ffn_probe);
      continue;
    }
    if (native) {
      const RowSelection sel =
          routing->select_causal(l, ws.x_.data(), rows, D, ws.positions_.data(), ws.ids_.data(), scratch);
      FlopCount f = native_layer_forward(l, rows, cache, ws, sel.rows, scratch.scores.data(), skip.width);
      f.executed += routing->router_flops(l, rows, D);
      flops += f;
      continue;
    }
    if (routing->needs_contribution(l))  // keys and values come out the same when the layer runs again
      mod::measure_contributions(ws.x_.data(), rows, D, scratch,
                                 [&] { layer_forward(l, rows, cache, ws, RowSelection::every_row(), skip.width); });
    const RowSelection sel =
        routing->select_causal(l, ws.x_.data(), rows, D, ws.positions_.data(), ws.ids_.data(), scratch);
    FlopCount f = layer_forward(l, rows, cache, ws, sel, skip.width, ffn_probe);
    f.executed += routing->router_flops(l, rows, D);
    flops += f;
  }
  finish(rows, cache, ws);
  return flops;
}

FlopCount LlamaDecoder::layer_forward(int l, int rows, KvCache& cache, DecoderWorkspace& ws, const RowSelection& sel,
                                      const acm::WidthRouting* width, const FfnProbe& ffn_probe) const {
  const auto& c = config_;
  const int start = cache.length();
  const int D = c.dim, F = c.hidden_dim, KV = c.kv_width(), QKV = D + 2 * KV, hd = c.head_dim();
  const Layer& layer = *layers_[l];
  const kernels::Attention attention{c.heads, hd, 1.f / std::sqrt(static_cast<float>(hd)), c.kv_heads, true};

  if (cache.entries(l) < start)
    throw Error(ErrorCode::internal, "decoder layer " + std::to_string(l) +
                                         " holds a native Mixture-of-Depths block's keys; run the model with its routing");
  cache.set_entries(l, start + rows);
  // Keys and values for every row: the cache stays complete whatever runs.
  project_and_cache(layer, l, ws.x_.data(), rows, ws.positions_.data(), cache, start, ws);
  const float* keys = cache.keys(l);
  const float* values = cache.values(l);

  // Queries: all rows as one causal segment, or each selected row as its own
  // (its position is its own, not its index in the selection).
  const float* query = ws.qkv_.data();
  std::size_t ld_query = QKV;
  float* x = ws.x_.data();
  int active = rows;
  double attended = 0;
  const double dense_attended = double(rows) * start + double(rows) * (rows + 1) / 2;
  ws.segments_.clear();
  if (sel.all) {
    ws.segments_.push_back(kernels::AttentionSegment{0, rows, 0, start + rows, start});
    attended = dense_attended;
  } else {
    active = static_cast<int>(sel.rows.size());
    kernels::gather_rows(ws.qkv_.data(), QKV, sel.rows, ws.routed_query_.data(), D, D);
    kernels::gather_rows(ws.x_.data(), D, sel.rows, ws.routed_x_.data(), D, D);
    query = ws.routed_query_.data();
    ld_query = D;
    x = ws.routed_x_.data();
    for (int i = 0; i < active; ++i) {
      const int position = start + sel.rows[i];
      ws.segments_.push_back(kernels::AttentionSegment{i, 1, 0, position + 1, position});
      attended += position + 1;
    }
  }
  attention(query, ld_query, keys, values, KV, ws.context_.data(), D, ws.segments_, ws.attention_scratch_.data(),
            ws.threads_);
  const FlopCount ffn = output_and_ffn(layer, l, x, active, ws, width, ffn_probe);
  if (!sel.all) kernels::scatter_rows(x, D, sel.rows, ws.x_.data(), D, D);

  const double qkv = Linear::flops(rows, D, QKV);
  FlopCount f;
  f.ffn_executed = ffn.executed;
  f.ffn_dense = Linear::flops(rows, D, 2 * F) + Linear::flops(rows, F, D);
  f.executed = qkv + Linear::flops(active, D, D) + f.ffn_executed + 4.0 * attended * hd * c.heads;
  f.dense = qkv + Linear::flops(rows, D, D) + f.ffn_dense + 4.0 * dense_attended * hd * c.heads;
  return f;
}

FlopCount LlamaDecoder::native_layer_forward(int l, int rows, KvCache& cache, DecoderWorkspace& ws,
                                             std::span<const std::int32_t> routed, const float* scores,
                                             const acm::WidthRouting* width) const {
  const auto& c = config_;
  const int start = cache.length(), first = cache.entries(l), active = static_cast<int>(routed.size());
  const int D = c.dim, F = c.hidden_dim, KV = c.kv_width(), QKV = D + 2 * KV, hd = c.head_dim();
  const Layer& layer = *layers_[l];
  auto attention_part = [&](int n) { return Linear::flops(n, D, QKV) + Linear::flops(n, D, D); };
  auto ffn_part = [&](int n) { return Linear::flops(n, D, 2 * F) + Linear::flops(n, F, D); };
  const double dense_attended = double(rows) * start + double(rows) * (rows + 1) / 2;
  FlopCount f;
  f.dense = attention_part(rows) + ffn_part(rows) + 4.0 * dense_attended * hd * c.heads;
  f.ffn_dense = ffn_part(rows);
  ws.routed_rows_[l].assign(routed.begin(), routed.end());
  if (active == 0) return f;
  if (first + active > c.context) throw Error(ErrorCode::internal, "native MoD cache layer overflow");

  // The routed rows alone, as a sequence of their own at their own positions.
  float* x = ws.routed_x_.data();
  kernels::gather_rows(ws.x_.data(), D, routed, x, D, D);
  ws.routed_positions_.resize(active);
  for (int i = 0; i < active; ++i) ws.routed_positions_[i] = ws.positions_[routed[i]];
  // Keys and values of the routed tokens only, appended compactly.
  project_and_cache(layer, l, x, active, ws.routed_positions_.data(), cache, first, ws);
  const float* keys = cache.keys(l);
  const float* values = cache.values(l);
  cache.set_entries(l, first + active);
  // Routed token i sees the routed tokens before it and itself: a causal
  // segment over the layer's compact entries.
  ws.segments_.clear();
  ws.segments_.push_back(kernels::AttentionSegment{0, active, 0, first + active, first});
  const kernels::Attention attention{c.heads, hd, 1.f / std::sqrt(static_cast<float>(hd)), c.kv_heads, true};
  attention(ws.qkv_.data(), QKV, keys, values, KV, ws.context_.data(), D, ws.segments_, ws.attention_scratch_.data(),
            ws.threads_);
  f.ffn_executed = output_and_ffn(layer, l, x, active, ws, width, {}).executed;
  // x + r·(block(x) − x), written back into the residual stream.
  for (int i = 0; i < active; ++i) {
    float* out = ws.x_.data() + static_cast<std::size_t>(routed[i]) * D;
    const float* block = x + static_cast<std::size_t>(i) * D;
    const float r = scores[routed[i]];
    for (int j = 0; j < D; ++j) out[j] += r * (block[j] - out[j]);
  }
  const double attended = double(active) * first + double(active) * (active + 1) / 2;
  f.executed = attention_part(active) + f.ffn_executed + 4.0 * attended * hd * c.heads;
  return f;
}

void LlamaDecoder::project_and_cache(const Layer& layer, int l, const float* x, int rows, const std::int32_t* positions,
                                     KvCache& cache, int first, DecoderWorkspace& ws) const {
  const auto& c = config_;
  const int D = c.dim, KV = c.kv_width(), QKV = D + 2 * KV;
  kernels::RmsNorm{layer.attention_norm.data(), D, c.norm_eps}(x, D, ws.normed_.data(), D, rows);
  layer.qkv(ws.normed_.data(), D, ws.qkv_.data(), QKV, rows, ws.scratch_);
  const kernels::Rope rope{rope_table_.data(), c.head_dim(), c.rope_style};
  rope(ws.qkv_.data(), QKV, rows, c.heads, positions);
  rope(ws.qkv_.data() + D, QKV, rows, c.kv_heads, positions);
  float* keys = cache.keys(l);
  float* values = cache.values(l);
  for (int r = 0; r < rows; ++r) {
    const float* row = ws.qkv_.data() + static_cast<std::size_t>(r) * QKV;
    std::memcpy(keys + static_cast<std::size_t>(first + r) * KV, row + D, sizeof(float) * KV);
    std::memcpy(values + static_cast<std::size_t>(first + r) * KV, row + D + KV, sizeof(float) * KV);
  }
}

FlopCount LlamaDecoder::output_and_ffn(const Layer& layer, int l, float* x, int rows, DecoderWorkspace& ws,
                                       const acm::WidthRouting* width, const FfnProbe& ffn_probe) const {
  const auto& c = config_;
  const int D = c.dim, F = c.hidden_dim;
  layer.attention_output(ws.context_.data(), x, rows, ws.scratch_);
  kernels::RmsNorm{layer.ffn_norm.data(), D, c.norm_eps}(x, D, ws.normed_.data(), D, rows);
  if (const auto [adaptive, rule] = width ? width->find(l) : std::pair<const acm::AdaptiveFfn*, const acm::GateRule*>{};
      adaptive)
    return (*adaptive)(ws.normed_.data(), x, rows, *rule, ws.width_, ws.scratch_);
  layer.gate_up(ws.normed_.data(), ws.gate_up_.data(), rows, ws.scratch_);
  kernels::swiglu(ws.gate_up_.data(), 2 * F, ws.ffn_.data(), F, rows, F);
  if (ffn_probe) ffn_probe(l, ws.normed_.data(), ws.ffn_.data(), rows);
  layer.down(ws.ffn_.data(), x, rows, ws.scratch_);
  return {Linear::flops(rows, D, 2 * F) + Linear::flops(rows, F, D), 0};
}

FlopCount LlamaDecoder::logits(DecoderWorkspace& ws, int first, int count) const {
  if (count > logits_rows()) throw Error(ErrorCode::internal, "too many logits rows at once");
  (*output_)(ws.normed_.data() + static_cast<std::size_t>(first) * config_.dim, ws.logits_.data(), count, ws.scratch_);
  const double f = output_->flops(count);
  return {f, f};
}

}  // namespace skim::execute

#include "execute/bert_encoder.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "skim/error.hpp"

namespace skim::execute {

namespace {

using kernels::Epilogue;
using kernels::Linear;
using Shape = std::vector<std::int64_t>;


std::vector<float> load(const format::TensorSource& store, const std::string& name, const Shape& shape) {
  return format::to_f32(store.require(name, shape));
}

// Hugging Face saves BERT with or without the "bert." prefix (with it when
// a task head sits beside the encoder).
std::string weight_prefix(const format::TensorSource& store) {
  return store.find("bert.embeddings.word_embeddings.weight") ? "bert." : "";
}

std::string layer_prefix(const format::TensorSource& store, int layer) {
  return weight_prefix(store) + "encoder.layer." + std::to_string(layer) + ".";
}

std::vector<float> concat(std::initializer_list<std::vector<float>> parts) {
  std::vector<float> all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

}  // namespace

struct BertEncoder::Layer {
  Linear qkv;        // [3H, H]: query, key, value fused into one GEMM
  Linear attention_output;  // += into the residual
  std::vector<float> norm1_gamma, norm1_beta;
  Linear intermediate;  // GELU fused
  Linear output;        // += into the residual
  std::vector<float> norm2_gamma, norm2_beta;
  // Views into qkv's packed weights (no copy) for routed blocks, where keys
  // and values are needed for every row but the query only for routed rows.
  // Absent where the layout does not allow a view: qkv then runs on every row.
  std::optional<Linear> query, key_value;
};

BertEncoder::BertEncoder(const format::EncoderConfig& config, const format::TensorStore& store,
                         const kernels::Backend& backend, kernels::WeightPrecision precision)
    : config_(config), backend_(backend) {
  const std::int64_t H = config.hidden_size, I = config.intermediate_size;
  const std::string prefix = weight_prefix(store);
  const std::string emb = prefix + "embeddings.";
  word_embeddings_ = load(store, emb + "word_embeddings.weight", {config.vocab_size, H});
  position_embeddings_ = load(store, emb + "position_embeddings.weight", {config.max_position_embeddings, H});
  token_type_embeddings_ = load(store, emb + "token_type_embeddings.weight", {config.type_vocab_size, H});
  embedding_norm_gamma_ = load(store, emb + "LayerNorm.weight", {H});
  embedding_norm_beta_ = load(store, emb + "LayerNorm.bias", {H});

  for (int l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(store, l);
    auto w = [&](const std::string& n, const Shape& s) { return load(store, p + n, s); };
    auto qkv_w = concat({w("attention.self.query.weight", {H, H}), w("attention.self.key.weight", {H, H}),
                         w("attention.self.value.weight", {H, H})});
    auto qkv_b = concat({w("attention.self.query.bias", {H}), w("attention.self.key.bias", {H}),
                         w("attention.self.value.bias", {H})});
    const int h = static_cast<int>(H), i = static_cast<int>(I);
    layers_.push_back(std::make_unique<Layer>(Layer{
        Linear(backend, qkv_w, qkv_b, h, 3 * h, Epilogue::none, precision),
        Linear(backend, w("attention.output.dense.weight", {H, H}), w("attention.output.dense.bias", {H}), h, h,
               Epilogue::add_to_output, precision),
        w("attention.output.LayerNorm.weight", {H}), w("attention.output.LayerNorm.bias", {H}),
        Linear(backend, w("intermediate.dense.weight", {I, H}), w("intermediate.dense.bias", {I}), h, i,
               Epilogue::gelu_erf, precision),
        Linear(backend, w("output.dense.weight", {H, I}), w("output.dense.bias", {H}), i, h, Epilogue::add_to_output,
               precision),
        w("output.LayerNorm.weight", {H}), w("output.LayerNorm.bias", {H})}));
    Layer& layer = *layers_.back();
    layer.query = layer.qkv.column_slice(0, h);
    layer.key_value = layer.qkv.column_slice(h, 2 * h);
    if (!layer.query || !layer.key_value) layer.query.reset(), layer.key_value.reset();
  }

  if (!config.id2label.empty()) {
    num_labels_ = static_cast<int>(config.id2label.size());
    const int h = static_cast<int>(H);
    pooler_ = std::make_unique<Linear>(backend, load(store, prefix + "pooler.dense.weight", {H, H}),
                                       load(store, prefix + "pooler.dense.bias", {H}), h, h, Epilogue::tanh);
    classifier_ = std::make_unique<Linear>(backend, load(store, "classifier.weight", {num_labels_, H}),
                                           load(store, "classifier.bias", {num_labels_}), h, num_labels_,
                                           Epilogue::none);
  }
}

BertEncoder::~BertEncoder() = default;

acm::FfnWeights BertEncoder::ffn_weights(const format::TensorSource& store, const format::EncoderConfig& config,
                                     int layer) {
  const std::int64_t H = config.hidden_size, I = config.intermediate_size;
  const std::string p = layer_prefix(store, layer);
  return {load(store, p + "intermediate.dense.weight", {I, H}), load(store, p + "intermediate.dense.bias", {I}),
          load(store, p + "output.dense.weight", {H, I}), load(store, p + "output.dense.bias", {H})};
}

EncoderWorkspace::EncoderWorkspace(const BertEncoder& encoder, int max_rows, int max_sequence,
                                   const acm::WidthGating* width)
    : max_rows_(max_rows),
      max_sequence_(max_sequence),
      threads_(kernels::hardware_threads()),
      scratch_(encoder.backend()),
      routing_(max_rows) {
  const auto& c = encoder.config();
  const std::size_t rows = Linear::padded_rows(max_rows);
  const std::size_t H = c.hidden_size;
  hidden_.resize(rows * H);
  qkv_.resize(rows * 3 * H);
  context_.resize(rows * H);
  intermediate_.resize(rows * c.intermediate_size);
  routed_hidden_.resize(rows * H);
  routed_query_.resize(rows * H);
  attention_scratch_.resize(kernels::Attention::scratch_floats(max_sequence, max_sequence, threads_));
  const std::size_t max_seqs = Linear::padded_rows(max_rows);  // at most one sequence per row
  pooled_.resize(max_seqs * H);
  logits_.resize(max_seqs * std::max(1, encoder.num_labels()));
  segments_.reserve(max_rows);
  first_rows_.reserve(max_rows);
  routing_.before.resize(rows * H);
  if (width) width_ = width->scratch(max_rows);
}

void BertEncoder::embed(const TokenBatch& batch, EncoderWorkspace& ws) const {
  const int rows = batch.rows(), H = config_.hidden_size;
  if (rows > ws.max_rows_)
    throw Error(ErrorCode::internal, "encoder batch of " + std::to_string(rows) + " rows exceeds the workspace");
  for (int s = 0; s < batch.sequences(); ++s)
    if (batch.length(s) > ws.max_sequence_ || batch.length(s) > config_.max_position_embeddings)
      throw Error(ErrorCode::internal, "sequence longer than the workspace or the model's positions");

  // Embeddings: word + position + token type 0, then LayerNorm.
  for (int s = 0; s < batch.sequences(); ++s) {
    for (int r = batch.offsets[s], pos = 0; r < batch.offsets[s + 1]; ++r, ++pos) {
      const int id = batch.ids[r];
      if (id < 0 || id >= config_.vocab_size)
        throw Error(ErrorCode::internal, "token id " + std::to_string(id) + " outside the vocabulary");
      float* out = ws.hidden_.data() + static_cast<std::size_t>(r) * H;
      const float* w = word_embeddings_.data() + static_cast<std::size_t>(id) * H;
      const float* p = position_embeddings_.data() + static_cast<std::size_t>(pos) * H;
      const float* t = token_type_embeddings_.data();
      for (int j = 0; j < H; ++j) out[j] = w[j] + p[j] + t[j];
    }
  }
  kernels::LayerNorm{embedding_norm_gamma_.data(), embedding_norm_beta_.data(), H, config_.layer_norm_eps}(
      ws.hidden_.data(), H, rows);
}

FlopCount BertEncoder::encode(const TokenBatch& batch, EncoderWorkspace& ws) const {
  embed(batch, ws);
  FlopCount flops;
  for (int l = 0; l < config_.num_hidden_layers; ++l) flops += layer_forward(l, batch, ws, RowSelection::every_row());
  return flops;
}

FlopCount BertEncoder::encode(const TokenBatch& batch, EncoderWorkspace& ws,
                              std::span<const RowSelection> selections) const {
  if (static_cast<int>(selections.size()) != config_.num_hidden_layers)
    throw Error(ErrorCode::internal, "one row selection per layer expected");
  embed(batch, ws);
  FlopCount flops;
  for (int l = 0; l < config_.num_hidden_layers; ++l) flops += layer_forward(l, batch, ws, selections[l]);
  return flops;
}

FlopCount BertEncoder::encode(const TokenBatch& batch, EncoderWorkspace& ws, const mod::TokenRouting& routing) const {
  return encode(batch, ws, Skipping{&routing, nullptr});
}

FlopCount BertEncoder::encode(const TokenBatch& batch, EncoderWorkspace& ws, const Skipping& skip) const {
  embed(batch, ws);
  const int rows = batch.rows(), H = config_.hidden_size;
  auto& scratch = ws.routing_;
  FlopCount flops;
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    RowSelection selection = RowSelection::every_row();
    double router_flops = 0;
    if (const auto* routing = skip.tokens) {
      if (routing->needs_contribution(l))
        mod::measure_contributions(ws.hidden_.data(), rows, H, scratch,
                                   [&] { layer_forward(l, batch, ws, RowSelection::every_row()); });
      selection = routing->select(l, ws.hidden_.data(), H, batch, scratch);
      router_flops = routing->router_flops(l, rows, H);
    }
    FlopCount f = layer_forward(l, batch, ws, selection, skip.width);
    f.executed += router_flops;
    flops += f;
  }
  return flops;
}

FlopCount BertEncoder::layer_forward(int l, const TokenBatch& batch, EncoderWorkspace& ws, const RowSelection& sel,
                                     const acm::WidthRouting* width, const FfnProbe& ffn_probe) const {
  const Layer& layer = *layers_[l];
  const int rows = batch.rows(), H = config_.hidden_size, I = config_.intermediate_size;
  const int heads = config_.num_attention_heads, head_dim = H / heads;
  auto& scratch = ws.scratch_;

  // Keys and values are computed for every row (the KV side stays complete);
  // query, attention output and FFN only for the selected rows.
  // With the query split off, keys|values are written densely (ld 2H): a
  // strided output would send oneDNN 2.6 to its reference GEMM.
  const bool split_query = !sel.all && layer.query;
  const float* keys = ws.qkv_.data() + H;
  std::size_t ld_kv = 3 * H;
  if (split_query) {
    (*layer.key_value)(ws.hidden_.data(), ws.qkv_.data(), rows, scratch);
    keys = ws.qkv_.data();
    ld_kv = 2 * H;
  } else {
    layer.qkv(ws.hidden_.data(), H, ws.qkv_.data(), 3 * H, rows, scratch);
  }

  ws.segments_.clear();
  const float* query = ws.qkv_.data();
  std::size_t ld_query = 3 * H;
  float* x = ws.hidden_.data();  // the rows the rest of the block updates
  int active = rows;
  double attention_pairs = 0, dense_attention_pairs = 0;
  if (sel.all) {
    for (int s = 0; s < batch.sequences(); ++s) {
      const int n = batch.length(s);
      ws.segments_.push_back({batch.offsets[s], n, batch.offsets[s], n});
      attention_pairs += double(n) * n;
    }
    dense_attention_pairs = attention_pairs;
  } else {
    active = static_cast<int>(sel.rows.size());
    kernels::gather_rows(ws.hidden_.data(), H, sel.rows, ws.routed_hidden_.data(), H, H);
    if (split_query)
      (*layer.query)(ws.routed_hidden_.data(), H, ws.routed_query_.data(), H, active, scratch);
    else
      kernels::gather_rows(ws.qkv_.data(), 3 * H, sel.rows, ws.routed_query_.data(), H, H);
    query = ws.routed_query_.data();
    ld_query = H;
    x = ws.routed_hidden_.data();
    std::size_t i = 0;
    for (int s = 0; s < batch.sequences(); ++s) {
      const int begin = static_cast<int>(i), n = batch.length(s);
      while (i < sel.rows.size() && sel.rows[i] < batch.offsets[s + 1]) ++i;
      const int q = static_cast<int>(i) - begin;
      ws.segments_.push_back({begin, q, batch.offsets[s], n});
      attention_pairs += double(q) * n;
      dense_attention_pairs += double(n) * n;
    }
  }

  kernels::Attention{heads, head_dim, 1.f / std::sqrt(static_cast<float>(head_dim))}(
      query, ld_query, keys, keys + H, ld_kv, ws.context_.data(), H, ws.segments_,
      ws.attention_scratch_.data(), ws.threads_);
  layer.attention_output(ws.context_.data(), x, active, scratch);
  kernels::LayerNorm{layer.norm1_gamma.data(), layer.norm1_beta.data(), H, config_.layer_norm_eps}(x, H, active);
  const auto [adaptive, rule] = width ? width->find(l) : std::pair<const acm::AdaptiveFfn*, const acm::GateRule*>{};
  FlopCount ffn;
  if (adaptive) {
    ffn = (*adaptive)(x, x, active, *rule, ws.width_, scratch);
  } else {
    layer.intermediate(x, ws.intermediate_.data(), active, scratch);
    if (ffn_probe) ffn_probe(l, x, ws.intermediate_.data(), active);
    layer.output(ws.intermediate_.data(), x, active, scratch);
    ffn.executed = Linear::flops(active, H, I) + Linear::flops(active, I, H);
  }
  kernels::LayerNorm{layer.norm2_gamma.data(), layer.norm2_beta.data(), H, config_.layer_norm_eps}(x, H, active);
  if (!sel.all) kernels::scatter_rows(x, H, sel.rows, ws.hidden_.data(), H, H);

  const double qkv = Linear::flops(rows, H, 3 * H);
  const double projections = split_query ? Linear::flops(rows, H, 2 * H) + Linear::flops(active, H, H) : qkv;
  FlopCount f;
  f.ffn_executed = ffn.executed;
  f.ffn_dense = Linear::flops(rows, H, I) + Linear::flops(rows, I, H);
  f.executed = projections + Linear::flops(active, H, H) + f.ffn_executed + 4.0 * attention_pairs * H;
  f.dense = qkv + Linear::flops(rows, H, H) + f.ffn_dense + 4.0 * dense_attention_pairs * H;
  return f;
}

FlopCount BertEncoder::classify_head(const TokenBatch& batch, EncoderWorkspace& ws) const {
  if (!has_classifier()) throw Error(ErrorCode::model, "this model has no classification head");
  const int H = config_.hidden_size, n = batch.sequences();
  ws.first_rows_.assign(batch.offsets.begin(), batch.offsets.end() - 1);
  kernels::gather_rows(ws.hidden_.data(), H, ws.first_rows_, ws.pooled_.data() , H, H);
  // The pooler reads pooled_ and writes in place would alias; use context_ as output.
  (*pooler_)(ws.pooled_.data(), ws.context_.data(), n, ws.scratch_);
  (*classifier_)(ws.context_.data(), ws.logits_.data(), n, ws.scratch_);
  const double f = pooler_->flops(n) + classifier_->flops(n);
  return {f, f};
}

}  // namespace skim::execute

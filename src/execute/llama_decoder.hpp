#pragma once
// LLaMA-family decoder: RMSNorm pre-norm blocks, rotary positions, grouped-
// query attention over a KV cache, SwiGLU FFN, tied or separate output head.
// Weights are packed once; activations live in a DecoderWorkspace and the
// conversation's keys and values in a KvCache, both owned by the session.
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "execute/acm/adaptive_ffn.hpp"
#include "execute/flop_count.hpp"
#include "execute/kv_cache.hpp"
#include "execute/mod/token_routing.hpp"
#include "execute/skipping.hpp"
#include "execute/token_batch.hpp"
#include "format/tensor_source.hpp"
#include "kernels/aligned_buffer.hpp"
#include "kernels/backend.hpp"
#include "kernels/matmul.hpp"
#include "kernels/ops.hpp"

namespace skim::execute {

struct DecoderConfig {
  int dim = 0, hidden_dim = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, context = 0;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.f;
  kernels::RopeStyle rope_style = kernels::RopeStyle::adjacent_pairs;
  int head_dim() const noexcept { return dim / heads; }
  int kv_width() const noexcept { return kv_heads * head_dim(); }
};

// Where the weights are found. GGUF names (token_embd.weight,
// blk.N.attn_q.weight, ...) are the canonical ones; llama2.c files are
// exposed under them; Hugging Face checkpoints use model.layers.N.* names.
enum class DecoderNaming { gguf, hugging_face };

class LlamaDecoder;

// How the GEMM weights are packed: float matrices as `floats`; Q8_0 matrices
// as stored (int8 compute) if q8_0_as_stored, else widened and packed as
// `floats` too.
struct WeightPacking {
  kernels::WeightPrecision floats = kernels::WeightPrecision::f32;
  bool q8_0_as_stored = true;
};

class DecoderWorkspace {
 public:
  // Given `width`, also sized for its adaptive FFNs.
  DecoderWorkspace(const LlamaDecoder& decoder, int max_rows, const acm::WidthGating* width = nullptr);
  int max_rows() const noexcept { return max_rows_; }
  // Logits of the rows asked for in the last call to LlamaDecoder::logits.
  const float* logits() const noexcept { return logits_.data(); }
  // The residual stream (rows × dim): after a forward, before the final norm.
  float* hidden() noexcept { return x_.data(); }
  const float* hidden() const noexcept { return x_.data(); }
  // The rows (ascending, indices into the last forward's tokens) that a
  // native Mixture-of-Depths layer ran in the last forward; empty for other
  // layers.
  std::span<const std::int32_t> routed_rows(int layer) const noexcept { return routed_rows_[layer]; }
  // Learners each row ran in the last adaptive FFN.
  const acm::WidthScratch& width_scratch() const noexcept { return width_; }

 private:
  friend class LlamaDecoder;
  int max_rows_, threads_;
  kernels::Scratch scratch_;
  kernels::AlignedBuffer<float> x_, normed_, qkv_, context_, gate_up_, ffn_, attention_scratch_, logits_;
  kernels::AlignedBuffer<float> routed_x_, routed_query_;  // row-subset path
  std::vector<std::int32_t> positions_, ids_;
  std::vector<std::int32_t> routed_positions_;  // native MoD: positions of the routed rows
  std::vector<std::vector<std::int32_t>> routed_rows_;  // native MoD: per layer, see routed_rows()
  std::vector<kernels::AttentionSegment> segments_;
  mod::RoutingScratch routing_;
  acm::WidthScratch width_;
};

class LlamaDecoder {
 public:
  LlamaDecoder(const DecoderConfig& config, const format::TensorSource& weights, DecoderNaming naming,
               const kernels::Backend& backend, WeightPacking packing = {});
  ~LlamaDecoder();

  // Runs `tokens` at positions cache.length() onwards (one prefill chunk, or
  // one decoding step), appending their keys and values to the cache. The
  // final-normed hidden states stay in the workspace for logits().
  FlopCount forward(std::span<const std::int32_t> tokens, KvCache& cache, DecoderWorkspace& ws) const;
  // The same with one RowSelection per layer (Mixture-of-Depths, post-hoc):
  // in each layer keys and values are computed for every row, so the cache
  // stays complete; query, attention output and FFN only for the selected
  // rows; the others keep their state.
  FlopCount forward(std::span<const std::int32_t> tokens, KvCache& cache, DecoderWorkspace& ws,
                    std::span<const RowSelection> selections) const;
  // The same with Mixture-of-Depths routing decided per layer, causally
  // (TokenRouting::select_causal), so prefill and decoding agree, with the
  // routing's semantics: post-hoc as above, or native (a model trained with
  // MoD, learned scorer only): in a routed layer only the routed tokens run
  // the block, they alone are its queries, keys and values (the cache's
  // entries for that layer are theirs only), and each leaves with
  // x + r·(block(x) − x); skipped tokens keep x and leave no trace.
  FlopCount forward(std::span<const std::int32_t> tokens, KvCache& cache, DecoderWorkspace& ws,
                    const mod::TokenRouting& routing) const;
  // Either or both: token routing as above, and adaptive FFNs (ACM) where
  // `skip.width` has them (the workspace must have been sized for them).
  // `ffn_probe` sees every dense FFN of a post-hoc or unrouted layer.
  FlopCount forward(std::span<const std::int32_t> tokens, KvCache& cache, DecoderWorkspace& ws,
                    const Skipping& skip, const FfnProbe& ffn_probe = {}) const;

  // One step at a time, for calibration: embed() puts `tokens` at positions
  // cache.length() onwards into the residual stream; layer_forward() runs a
  // block on it; finish() advances the cache and applies the final norm.
  void embed(std::span<const std::int32_t> tokens, const KvCache& cache, DecoderWorkspace& ws) const;
  // `width`: the layer's FFN runs adaptively if it has this layer; `ffn_probe`
  // sees a dense FFN.
  FlopCount layer_forward(int layer, int rows, KvCache& cache, DecoderWorkspace& ws, const RowSelection& selection,
                          const acm::WidthRouting* width = nullptr, const FfnProbe& ffn_probe = {}) const;
  void finish(int rows, KvCache& cache, DecoderWorkspace& ws) const;
  // Output-head logits for rows [first, first + count) of the last forward;
  // written to ws.logits(), vocab per row. count ≤ logits_rows().
  FlopCount logits(DecoderWorkspace& ws, int first, int count) const;

  const DecoderConfig& config() const noexcept { return config_; }
  const kernels::Backend& backend() const noexcept { return backend_; }
  KvCache make_cache() const { return KvCache(config_.layers, config_.context, config_.kv_width()); }
  // A layer's SwiGLU weights as stored (for adaptive FFNs): gate then up
  // [2·hidden_dim, dim], down [dim, hidden_dim], no biases.
  static acm::FfnWeights ffn_weights(const format::TensorSource& weights, const DecoderConfig& config,
                                     DecoderNaming naming, int layer);
  static constexpr int logits_rows() { return 64; }

 private:
  struct Layer;
  // A native Mixture-of-Depths block on the rows `routed` (ascending) of the
  // `rows` in the workspace, scaled by scores[row].
  FlopCount native_layer_forward(int layer, int rows, KvCache& cache, DecoderWorkspace& ws,
                                 std::span<const std::int32_t> routed, const float* scores,
                                 const acm::WidthRouting* width) const;
  // RmsNorm, QKV and RoPE of `rows` rows of x at `positions`: queries stay
  // in the workspace, keys and values go to layer l's cache from entry `first`.
  void project_and_cache(const Layer& layer, int l, const float* x, int rows, const std::int32_t* positions,
                         KvCache& cache, int first, DecoderWorkspace& ws) const;
  // Attention output projection and SwiGLU FFN (adaptive where `width` has
  // layer l), both added into x (rows × dim), from the attention context in
  // the workspace. Returns the FFN's FLOPs.
  FlopCount output_and_ffn(const Layer& layer, int l, float* x, int rows, DecoderWorkspace& ws,
                           const acm::WidthRouting* width, const FfnProbe& ffn_probe) const;
  DecoderConfig config_;
  const kernels::Backend& backend_;
  std::vector<float> token_embeddings_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<float> output_norm_;
  std::unique_ptr<kernels::Linear> output_;
  std::vector<float> rope_table_;
};

}  // namespace skim::execute

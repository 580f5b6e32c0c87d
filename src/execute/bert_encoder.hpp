#pragma once
// The BERT-family encoder (post-LayerNorm, erf GELU, learned positions,
// token types): weights packed once at construction, immutable afterwards;
// all activations live in a caller-owned EncoderWorkspace.
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "execute/acm/adaptive_ffn.hpp"
#include "execute/flop_count.hpp"
#include "execute/mod/token_routing.hpp"
#include "execute/skipping.hpp"
#include "execute/token_batch.hpp"
#include "format/hf_config.hpp"
#include "format/safetensors.hpp"
#include "kernels/aligned_buffer.hpp"
#include "kernels/backend.hpp"
#include "kernels/matmul.hpp"
#include "kernels/ops.hpp"

namespace skim::execute {

class BertEncoder;

// Per-session activations, allocated once for at most `max_rows` packed tokens
// and `max_sequence` tokens per sequence (and, given `width`, for its
// adaptive FFNs).
class EncoderWorkspace {
 public:
  EncoderWorkspace(const BertEncoder& encoder, int max_rows, int max_sequence,
                   const acm::WidthGating* width = nullptr);
  float* hidden() noexcept { return hidden_.data(); }
  const float* hidden() const noexcept { return hidden_.data(); }
  const float* logits() const noexcept { return logits_.data(); }
  int max_rows() const noexcept { return max_rows_; }
  int max_sequence() const noexcept { return max_sequence_; }
  mod::RoutingScratch& routing_scratch() noexcept { return routing_; }
  // Learners each row ran in the last adaptive FFN (per row of that layer's input).
  const acm::WidthScratch& width_scratch() const noexcept { return width_; }
  // FFN activations (rows × intermediate) of the last layer run, for calibration.
  const float* ffn_activations() const noexcept { return intermediate_.data(); }

 private:
  friend class BertEncoder;
  int max_rows_, max_sequence_, threads_;
  kernels::Scratch scratch_;
  kernels::AlignedBuffer<float> hidden_, qkv_, context_, intermediate_;
  kernels::AlignedBuffer<float> routed_hidden_, routed_query_;  // row-subset path
  kernels::AlignedBuffer<float> attention_scratch_;
  kernels::AlignedBuffer<float> pooled_, logits_;
  std::vector<kernels::AttentionSegment> segments_;
  std::vector<std::int32_t> first_rows_;
  mod::RoutingScratch routing_;
  acm::WidthScratch width_;
};

class BertEncoder {
 public:
  // Reads and packs the weights; throws skim::Error(model) naming a missing
  // or misshapen tensor. `store` may be released afterwards.
  BertEncoder(const format::EncoderConfig& config, const format::TensorStore& store,
              const kernels::Backend& backend, kernels::WeightPrecision precision = kernels::WeightPrecision::f32);
  ~BertEncoder();

  // Embeddings + every layer; leaves the last hidden states in ws.hidden().
  FlopCount encode(const TokenBatch& batch, EncoderWorkspace& ws) const;
  // The same with one fixed RowSelection per layer.
  FlopCount encode(const TokenBatch& batch, EncoderWorkspace& ws, std::span<const RowSelection> selections) const;
  // The same with Mixture-of-Depths routing decided layer by layer.
  FlopCount encode(const TokenBatch& batch, EncoderWorkspace& ws, const mod::TokenRouting& routing) const;
  // The same with whatever `skip` asks for.
  FlopCount encode(const TokenBatch& batch, EncoderWorkspace& ws, const Skipping& skip) const;
  // Embeddings and their LayerNorm alone: ws.hidden() then holds layer 0's
  // input (for calibration, which steps through layer_forward itself).
  void embed(const TokenBatch& batch, EncoderWorkspace& ws) const;
  // Pooler + classifier on each sequence's first ([CLS]) row; logits land in
  // ws.logits(), num_labels per sequence. Requires has_classifier().
  FlopCount classify_head(const TokenBatch& batch, EncoderWorkspace& ws) const;

  const format::EncoderConfig& config() const noexcept { return config_; }
  bool has_classifier() const noexcept { return classifier_ != nullptr; }
  int num_labels() const noexcept { return num_labels_; }
  int hidden_size() const noexcept { return config_.hidden_size; }
  int layers() const noexcept { return config_.num_hidden_layers; }
  const kernels::Backend& backend() const noexcept { return backend_; }

  // One layer on the given rows (exposed for tests, benchmarks and
  // calibration), its FFN adaptive if `width` has this layer; `ffn_probe`
  // sees a dense FFN.
  FlopCount layer_forward(int layer, const TokenBatch& batch, EncoderWorkspace& ws, const RowSelection& rows,
                          const acm::WidthRouting* width = nullptr, const FfnProbe& ffn_probe = {}) const;

  // A layer's FFN weights as stored in the model (for fitting adaptive FFNs):
  // up [I, H], up bias [I], down [H, I], down bias [H].
  static acm::FfnWeights ffn_weights(const format::TensorSource& store, const format::EncoderConfig& config, int layer);

 private:
  struct Layer;
  format::EncoderConfig config_;
  const kernels::Backend& backend_;
  std::vector<float> word_embeddings_, position_embeddings_, token_type_embeddings_;
  std::vector<float> embedding_norm_gamma_, embedding_norm_beta_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<kernels::Linear> pooler_, classifier_;
  int num_labels_ = 0;
};

}  // namespace skim::execute

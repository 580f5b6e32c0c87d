#pragma once
#include <cstddef>
#include <string>

namespace skim {

// Storage of the packed GEMM weights.
//  automatic: f32, except that Q8_0 matrices of a GGUF file stay Q8_0.
//  f32:  exact (Q8_0 data is widened exactly).
//  bf16: half the memory each token streams (decoding is bound by it), on
//        AVX-512 BF16 units, at bf16 rounding of weights and of activations
//        entering a GEMM.
//  q8_0: GGUF's Q8_0 (an fp16 scale per 32 int8 weights, about a quarter of
//        f32's bytes); float matrices are quantized at load. Activations are
//        quantized per 32 values too and the products run in int8 (AVX-512
//        VNNI), as llama.cpp computes Q8_0. Without VNNI the values run as f32.
enum class WeightPrecision { automatic, f32, bf16, q8_0 };

// How Mixture-of-Depths blocks score tokens: the fitted routers; the oracle
// (each block's true contribution ‖f(x)‖/‖x‖, measured by running the block
// on every token first: the upper bound on quality, for evaluation only, it
// saves nothing); random (the floor).
enum class ModRouter { learned, oracle, random };

// How Adaptive Computation Modules choose how many FFN learners a token runs:
// the fitted gates; the oracle (each prefix's true error, measured by running
// every learner first: the upper bound on quality, for evaluation only);
// uniform (every token the same share of learners: static width pruning, the
// baseline the gates must beat).
enum class AcmGate { learned, oracle, uniform };

// How an Engine runs. Fluent: Options().threads(2).max_sequence_length(128).
class Options {
 public:
  // Worker threads for oneDNN and Eigen alike; 0 means one per hardware core.
  Options& threads(int n);
  int threads() const noexcept { return threads_; }

  // Longest token sequence (special tokens included) a request may use; longer
  // input is truncated and the Answer says so. 0 means the model's own limit.
  Options& max_sequence_length(std::size_t n);
  std::size_t max_sequence_length() const noexcept { return max_sequence_length_; }

  // Most tokens one forward pass packs together (texts are packed back to back,
  // without padding); a batched call over more is run in chunks. It sizes the
  // scratch arena each Session allocates once. 0 means 2048 (raised to the
  // sequence limit if that is longer).
  Options& max_batch_tokens(std::size_t n);
  std::size_t max_batch_tokens() const noexcept { return max_batch_tokens_; }

  Options& weight_precision(WeightPrecision p) { weight_precision_ = p; return *this; }
  WeightPrecision weight_precision() const noexcept { return weight_precision_; }

  // The meaning-first router (cache, rules, n-gram proposer, certified gate),
  // used when the model directory holds skim.json from skim-calibrate. Off:
  // every request runs the transformer. On by default.
  Options& router(bool on) { router_ = on; return *this; }
  bool router() const noexcept { return router_; }

  // Share of accepted proposals that also run the transformer, so the gate's
  // certificate is checked live (chosen by a hash of the request id). [0, 1].
  Options& shadow_rate(double rate);
  double shadow_rate() const noexcept { return shadow_rate_; }

  // False-alarm level α of the live monitor: under the certified risk it
  // alarms with probability at most α over the engine's whole life. (0, 1).
  Options& alarm_level(double alpha);
  double alarm_level() const noexcept { return alarm_level_; }

  // Mixture-of-Depths token routing (skim-calibrate --mod-capacity writes the
  // routers into skim.json): in a routed block only the best-scored share of
  // each text's tokens runs the block. On by default when the package has
  // routers; off runs every block on every token.
  Options& mod(bool on) { mod_ = on; return *this; }
  bool mod() const noexcept { return mod_; }
  // One capacity in (0, 1] for every routed block instead of the package's
  // own; 0 (the default) keeps the package's.
  Options& mod_capacity(double capacity);
  double mod_capacity() const noexcept { return mod_capacity_; }
  Options& mod_router(ModRouter r) { mod_router_ = r; return *this; }
  ModRouter mod_router() const noexcept { return mod_router_; }

  // Adaptive Computation Modules (skim-calibrate --acm-budget writes the gates
  // into skim.json): an FFN runs only the learners each token's gate asks
  // for. On by default when the package has gates; off runs every FFN whole.
  Options& acm(bool on) { acm_ = on; return *this; }
  bool acm() const noexcept { return acm_; }
  // Mean share of FFN width in (0, 1] instead of the package's own; 0 (the
  // default) keeps the package's.
  Options& acm_budget(double budget);
  double acm_budget() const noexcept { return acm_budget_; }
  Options& acm_gate(AcmGate g) { acm_gate_ = g; return *this; }
  AcmGate acm_gate() const noexcept { return acm_gate_; }

  // Byte budget of the answer cache (LRU); 0 turns the cache off.
  Options& cache_bytes(std::size_t bytes) { cache_bytes_ = bytes; return *this; }
  std::size_t cache_bytes() const noexcept { return cache_bytes_; }

  // Tokenizer file for a llama2.c checkpoint (tok512.bin style); other
  // formats carry their own tokenizer.
  Options& tokenizer(std::string path);
  const std::string& tokenizer() const noexcept { return tokenizer_; }

 private:
  std::string tokenizer_;
  bool router_ = true;
  bool mod_ = true;
  double mod_capacity_ = 0;
  ModRouter mod_router_ = ModRouter::learned;
  bool acm_ = true;
  double acm_budget_ = 0;
  AcmGate acm_gate_ = AcmGate::learned;
  double shadow_rate_ = 0.05;
  double alarm_level_ = 0.01;
  std::size_t cache_bytes_ = 16u << 20;
  WeightPrecision weight_precision_ = WeightPrecision::automatic;
  int threads_ = 0;
  std::size_t max_sequence_length_ = 0;
  std::size_t max_batch_tokens_ = 0;
};

}  // namespace skim

#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace skim {

// Which stage produced an answer: an exact cache hit (a transformer answer
// from before), a user rule, the n-gram proposer accepted by the certified
// gate, or the transformer.
enum class Route { cache, rule, proposer, transformer };
std::string_view to_string(Route route) noexcept;

// What an answer cost, next to what the dense transformer would have cost.
struct Cost {
  double flops = 0;        // floating-point operations executed
  double dense_flops = 0;  // what the dense model spends on the same input
  double seconds = 0;      // wall time of the call, per input for batched calls
  double ffn_flops = 0;        // the FFNs' part of `flops`
  double dense_ffn_flops = 0;  // the FFNs' part of `dense_flops`
};

struct Answer {
  std::string label;  // id2label of the winning class
  int label_id = -1;
  float score = 0;  // softmax probability of `label`
  Route route = Route::transformer;
  bool shadowed = false;  // an accepted proposal also run through the transformer to monitor the gate
  Cost cost;              // on every route; a shadow's transformer work included
  std::size_t tokens = 0;  // tokens the transformer saw (special tokens included)
  bool truncated = false;  // the input was longer than max_sequence_length
  std::vector<float> logits;  // raw classifier outputs, one per label
};

// The result of Engine/Session::generate.
struct Generation {
  enum class Stop { eos, max_tokens, callback, context };
  std::string text;                  // the generated text (not the prompt)
  std::vector<std::int32_t> tokens;  // the generated token ids (not BOS, not the prompt)
  std::size_t prompt_tokens = 0;     // tokens fed before generating (BOS included)
  Stop stop = Stop::max_tokens;
  Cost cost;                         // prefill and decoding together
  double prefill_seconds = 0;
  double decode_seconds = 0;
};
std::string_view to_string(Generation::Stop stop) noexcept;

// Scores of a text under a decoder, from BOS (see Session::score).
struct Score {
  std::size_t tokens = 0;          // tokens predicted (the text's tokens, BOS excluded)
  double negative_log_likelihood = 0;  // summed over those tokens, natural log
  bool truncated = false;          // the text was cut at the model's context
  Cost cost;
};

// Scores of several documents (see Session::perplexity).
struct Perplexity {
  std::size_t documents = 0;
  std::size_t truncated_documents = 0;  // cut at the model's context
  std::size_t tokens = 0;               // tokens predicted, over all documents
  double negative_log_likelihood = 0;   // summed, natural log
  double perplexity = 0;                // exp(negative_log_likelihood / tokens)
  Cost cost;                            // summed (seconds included)
};

struct Embedding {
  std::vector<float> values;  // hidden-size vector (CLS or mean pooled)
  Cost cost;
  std::size_t tokens = 0;
  bool truncated = false;
};

}  // namespace skim

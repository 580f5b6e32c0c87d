#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "skim/answer.hpp"
#include "skim/options.hpp"
#include "skim/router.hpp"

namespace skim {

class Session;

// How generate() picks tokens. Fluent: GenerateOptions().max_tokens(64).seed(7).
class GenerateOptions {
 public:
  GenerateOptions& max_tokens(std::size_t n) { max_tokens_ = n; return *this; }
  GenerateOptions& temperature(float t) { temperature_ = t; return *this; }  // 0: greedy
  GenerateOptions& top_k(int k) { top_k_ = k; return *this; }                // 0: off
  GenerateOptions& top_p(float p) { top_p_ = p; return *this; }              // 1: off
  GenerateOptions& seed(std::uint64_t s) { seed_ = s; return *this; }
  std::size_t max_tokens() const noexcept { return max_tokens_; }
  float temperature() const noexcept { return temperature_; }
  int top_k() const noexcept { return top_k_; }
  float top_p() const noexcept { return top_p_; }
  std::uint64_t seed() const noexcept { return seed_; }

 private:
  std::size_t max_tokens_ = 256;
  float temperature_ = 0.f;
  int top_k_ = 0;
  float top_p_ = 1.f;
  std::uint64_t seed_ = 0;
};

// Called with each generated token's text (complete UTF-8 only; may be empty
// while a multi-byte character is still arriving) and id. Return false to stop.
using TokenCallback = std::function<bool(std::string_view text, std::int32_t id)>;

// What a loaded model is, as read from its config.
struct ModelInfo {
  std::string model_type;     // "bert" or "llama"
  bool is_decoder = false;    // generates text (generate/score) rather than classifies
  std::string directory;      // where it was opened from
  std::size_t vocab_size = 0;
  std::size_t hidden_size = 0;
  std::size_t layers = 0;
  std::size_t heads = 0;
  std::size_t intermediate_size = 0;
  std::size_t max_sequence_length = 0;  // effective limit (Options or model)
  std::vector<std::string> labels;      // id2label; empty for a bare encoder
  std::string pooling;                  // "cls" or "mean"
  // Mixture-of-Depths blocks in force (empty: every block runs every token),
  // with the capacity each runs at (Options::mod_capacity applied).
  struct RoutedBlock {
    int layer = 0;
    double capacity = 1;
  };
  std::vector<RoutedBlock> mod_blocks;
  // Adaptive FFNs in force (empty: every FFN runs whole), each split into
  // `acm_learners` learners, at the mean width share `acm_budget`
  // (Options::acm_budget applied).
  std::vector<int> acm_layers;
  int acm_learners = 0;
  double acm_budget = 1;
};

// An opened model: weights mapped and packed once, immutable afterwards, so a
// single Engine is shared by any number of threads. Work happens in Sessions;
// the Engine's own classify/embed borrow a session per calling thread.
class Engine : public std::enable_shared_from_this<Engine> {
 public:
  // Opens a model: a Hugging Face–layout directory (config.json,
  // model.safetensors or an index of shards, vocab.txt or tokenizer.json;
  // model_type bert or llama), a GGUF file, or a llama2.c .bin checkpoint
  // (its tokenizer given by Options::tokenizer). Throws skim::Error.
  static std::shared_ptr<const Engine> open(const std::filesystem::path& model_dir,
                                            const Options& options = Options());
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelInfo& info() const noexcept;
  const Options& options() const noexcept;

  // A new per-thread state (scratch arena); cheap compared to open().
  Session session() const;

  // Through the router when the model is calibrated (see Options::router):
  // cache → rules → n-gram proposer → certified gate → transformer.
  Answer classify(std::string_view text, const Request& request = Request()) const;
  std::vector<Answer> classify(std::span<const std::string> texts, const Request& request = Request()) const;
  Embedding embed(std::string_view text) const;
  // The router's counters and the certificate in force (state off without one).
  RouterStats stats() const;
  // Decoders: a fresh conversation from BOS + prompt (an empty prompt starts
  // from BOS alone).
  Generation generate(std::string_view prompt, const GenerateOptions& options = GenerateOptions(),
                      const TokenCallback& on_token = {}) const;

  struct Impl;
  const Impl& impl() const noexcept { return *impl_; }

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Per-thread state: scratch buffers sized once for the engine's limits, so
// nothing is allocated inside a forward pass. Not thread-safe; make one per thread.
class Session {
 public:
  explicit Session(std::shared_ptr<const Engine> engine);
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  Answer classify(std::string_view text, const Request& request = Request());
  std::vector<Answer> classify(std::span<const std::string> texts, const Request& request = Request());
  Embedding embed(std::string_view text);

  // Decoders: continues this session's conversation (its KV cache persists
  // across calls; the first call starts from BOS). The prompt must fit in
  // what is left of the context, else skim::Error(invalid_argument).
  Generation generate(std::string_view prompt, const GenerateOptions& options = GenerateOptions(),
                      const TokenCallback& on_token = {});
  // Forgets the conversation.
  void reset();
  // Negative log-likelihood of `text` from BOS, cut at the model's context;
  // leaves the conversation reset.
  Score score(std::string_view text);
  // score() of each document, summed; an error names the document (1-based).
  Perplexity perplexity(std::span<const std::string> documents);

  const Engine& engine() const noexcept { return *engine_; }

 private:
  struct State;
  std::shared_ptr<const Engine> engine_;
  std::unique_ptr<State> state_;
};

}  // namespace skim

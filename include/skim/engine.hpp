#pragma once
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "skim/answer.hpp"
#include "skim/options.hpp"

namespace skim {

class Session;

// What a loaded model is, as read from its config.
struct ModelInfo {
  std::string model_type;     // "bert"
  std::string directory;      // where it was opened from
  std::size_t vocab_size = 0;
  std::size_t hidden_size = 0;
  std::size_t layers = 0;
  std::size_t heads = 0;
  std::size_t intermediate_size = 0;
  std::size_t max_sequence_length = 0;  // effective limit (Options or model)
  std::vector<std::string> labels;      // id2label; empty for a bare encoder
  std::string pooling;                  // "cls" or "mean"
};

// An opened model: weights mapped and packed once, immutable afterwards, so a
// single Engine is shared by any number of threads. Work happens in Sessions;
// the Engine's own classify/embed borrow a session per calling thread.
class Engine : public std::enable_shared_from_this<Engine> {
 public:
  // Opens a Hugging Face–layout directory: config.json, model.safetensors (or
  // an index of shards), vocab.txt or tokenizer.json. Throws skim::Error.
  static std::shared_ptr<const Engine> open(const std::filesystem::path& model_dir,
                                            const Options& options = Options());
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelInfo& info() const noexcept;
  const Options& options() const noexcept;

  // A new per-thread state (scratch arena); cheap compared to open().
  Session session() const;

  Answer classify(std::string_view text) const;
  std::vector<Answer> classify(std::span<const std::string> texts) const;
  Embedding embed(std::string_view text) const;

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

  Answer classify(std::string_view text);
  std::vector<Answer> classify(std::span<const std::string> texts);
  Embedding embed(std::string_view text);

  const Engine& engine() const noexcept { return *engine_; }

 private:
  struct State;
  std::shared_ptr<const Engine> engine_;
  std::unique_ptr<State> state_;
};

}  // namespace skim

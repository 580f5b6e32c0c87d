#include "skim/engine.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/engine_impl.hpp"
#include "format/safetensors.hpp"
#include "kernels/ops.hpp"
#include "skim/error.hpp"

namespace skim {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<text::WordPieceTokenizer> open_tokenizer(const fs::path& dir) {
  if (fs::exists(dir / "tokenizer.json"))
    return std::make_unique<text::WordPieceTokenizer>(text::WordPieceTokenizer::from_tokenizer_json(dir / "tokenizer.json"));
  if (!fs::exists(dir / "vocab.txt"))
    throw Error(ErrorCode::model, dir.string() + ": no vocabulary (neither tokenizer.json nor vocab.txt)");
  // vocab.txt carries no normalizer settings; transformers keeps them in
  // tokenizer_config.json (do_lower_case defaults to true).
  text::BertNormalizerOptions options;
  const fs::path tc = dir / "tokenizer_config.json";
  if (fs::exists(tc)) {
    std::ifstream in(tc);
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error(ErrorCode::format, tc.string() + ": not a JSON object");
    if (j.contains("do_lower_case") && j["do_lower_case"].is_boolean()) options.lowercase = j["do_lower_case"];
    if (j.contains("strip_accents") && j["strip_accents"].is_boolean()) options.strip_accents = j["strip_accents"] ? 1 : 0;
    if (j.contains("tokenize_chinese_chars") && j["tokenize_chinese_chars"].is_boolean())
      options.handle_chinese_chars = j["tokenize_chinese_chars"];
  }
  return std::make_unique<text::WordPieceTokenizer>(text::WordPieceTokenizer::from_vocab_txt(dir / "vocab.txt", options));
}

// Splits a packed batch's FLOPs over its sequences in proportion to the dense
// cost of each (exact for dense runs; attention makes long texts costlier).
double dense_flops_for_length(const format::EncoderConfig& c, int n, bool head) {
  const double H = c.hidden_size, I = c.intermediate_size;
  double per_layer = 2.0 * n * H * 3 * H + 4.0 * n * n * H + 2.0 * n * H * H + 4.0 * n * H * I;
  double total = per_layer * c.num_hidden_layers;
  if (head) total += 2.0 * H * H + 2.0 * H * static_cast<double>(c.id2label.size());
  return total;
}

void check_text(std::string_view text, std::size_t index) {
  if (text.empty())
    throw Error(ErrorCode::invalid_argument, "input " + std::to_string(index) + " is empty");
}

struct Work {
  const Engine::Impl& engine;
  SessionState& state;

  // Tokenizes `texts`, runs them in chunks of at most max_batch_rows tokens,
  // and calls `emit(i, seconds_share)` with the workspace holding input i's
  // results (hidden states and, when `head`, logits).
  template <typename Emit>
  void run(std::span<const std::string_view> texts, bool head, Emit&& emit) {
    kernels::set_thread_count(engine.options.threads());
    auto& encodings = state.encodings;
    encodings.resize(texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) {
      check_text(texts[i], i);
      try {
        encodings[i] = engine.tokenizer->encode(texts[i], static_cast<std::size_t>(engine.max_sequence));
      } catch (const Error& e) {
        throw Error(e.code(), "input " + std::to_string(i) + ": " + e.what());
      }
      if (encodings[i].ids.size() <= 2)
        throw Error(ErrorCode::invalid_argument,
                    "input " + std::to_string(i) + " has no tokens after normalization (only spaces or control characters)");
    }
    std::size_t next = 0;
    while (next < texts.size()) {
      const auto start = Clock::now();
      auto& batch = state.batch;
      batch.clear();
      std::size_t first = next;
      while (next < texts.size() &&
             (batch.rows() + static_cast<int>(encodings[next].ids.size()) <= engine.max_batch_rows))
        batch.add(encodings[next++].ids);
      execute::FlopCount flops = engine.encoder->encode(batch, state.workspace);
      if (head) flops += engine.encoder->classify_head(batch, state.workspace);
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      double dense_total = 0;
      for (int s = 0; s < batch.sequences(); ++s) dense_total += dense_flops_for_length(engine.config, batch.length(s), head);
      for (int s = 0; s < batch.sequences(); ++s) {
        const double share = dense_flops_for_length(engine.config, batch.length(s), head) / dense_total;
        Cost cost{flops.executed * share, flops.dense * share, seconds / batch.sequences()};
        emit(first + s, s, cost);
      }
    }
  }
};

Answer make_answer(const Engine::Impl& engine, const SessionState& state, std::size_t i, int s, const Cost& cost) {
  const int labels = engine.encoder->num_labels();
  Answer a;
  a.logits.assign(state.workspace.logits() + s * labels, state.workspace.logits() + (s + 1) * labels);
  std::vector<float> probs = a.logits;
  kernels::softmax(probs);
  a.label_id = static_cast<int>(std::max_element(probs.begin(), probs.end()) - probs.begin());
  a.label = engine.config.id2label[a.label_id];
  a.score = probs[a.label_id];
  a.route = Route::transformer;
  a.cost = cost;
  a.tokens = state.encodings[i].ids.size();
  a.truncated = state.encodings[i].truncated;
  return a;
}

std::vector<Answer> classify_with(const Engine::Impl& engine, SessionState& state,
                                  std::span<const std::string_view> texts) {
  if (!engine.encoder->has_classifier())
    throw Error(ErrorCode::model, engine.info.directory + ": the model has no classification head (config has no id2label)");
  std::vector<Answer> answers(texts.size());
  Work{engine, state}.run(texts, true, [&](std::size_t i, int s, const Cost& cost) {
    answers[i] = make_answer(engine, state, i, s, cost);
  });
  return answers;
}

Embedding embed_with(const Engine::Impl& engine, SessionState& state, std::string_view text) {
  Embedding e;
  const int H = engine.encoder->hidden_size();
  Work{engine, state}.run(std::span(&text, 1), false, [&](std::size_t i, int, const Cost& cost) {
    const float* h = state.workspace.hidden();
    const int n = state.batch.length(0);
    e.values.assign(H, 0.f);
    if (engine.config.pooling == "mean") {
      for (int r = 0; r < n; ++r)
        for (int j = 0; j < H; ++j) e.values[j] += h[static_cast<std::size_t>(r) * H + j] / n;
    } else {
      std::copy(h, h + H, e.values.begin());
    }
    e.cost = cost;
    e.tokens = state.encodings[i].ids.size();
    e.truncated = state.encodings[i].truncated;
  });
  return e;
}

std::vector<std::string_view> views(std::span<const std::string> texts) {
  return {texts.begin(), texts.end()};
}

// Borrows a SessionState from the engine's pool for one call.
class PooledState {
 public:
  explicit PooledState(const Engine::Impl& e) : engine_(e) {
    std::lock_guard lock(e.pool_mutex);
    if (!e.pool.empty()) {
      state_ = std::move(e.pool.back());
      e.pool.pop_back();
    }
    if (!state_) state_ = e.make_state();
  }
  ~PooledState() {
    std::lock_guard lock(engine_.pool_mutex);
    engine_.pool.push_back(std::move(state_));
  }
  SessionState& operator*() { return *state_; }

 private:
  const Engine::Impl& engine_;
  std::unique_ptr<SessionState> state_;
};

}  // namespace

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

std::shared_ptr<const Engine> Engine::open(const fs::path& dir, const Options& options) {
  const auto start = Clock::now();
  if (!fs::is_directory(dir)) throw Error(ErrorCode::io, dir.string() + ": not a directory");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->config = format::read_encoder_config(dir / "config.json");
  const auto& c = impl->config;
  impl->tokenizer = open_tokenizer(dir);
  if (impl->tokenizer->vocab_size() > static_cast<std::size_t>(c.vocab_size))
    throw Error(ErrorCode::model, dir.string() + ": the vocabulary has " + std::to_string(impl->tokenizer->vocab_size()) +
                                      " tokens but config.json vocab_size is " + std::to_string(c.vocab_size));
  {
    auto store = format::TensorStore::open_directory(dir);
    impl->encoder = std::make_unique<execute::BertEncoder>(c, store, impl->backend);
  }  // weights are packed; the mapped files can go

  const std::size_t model_limit = static_cast<std::size_t>(c.max_position_embeddings);
  std::size_t limit = options.max_sequence_length() == 0 ? model_limit : options.max_sequence_length();
  if (limit > model_limit) {
    spdlog::warn("max_sequence_length {} exceeds the model's {} positions; using {}", limit, model_limit, model_limit);
    limit = model_limit;
  }
  impl->max_sequence = static_cast<int>(limit);
  const std::size_t batch_tokens = options.max_batch_tokens() == 0 ? 2048 : options.max_batch_tokens();
  impl->max_batch_rows = static_cast<int>(std::max(batch_tokens, limit));

  auto& info = impl->info;
  info.model_type = c.model_type;
  info.directory = dir.string();
  info.vocab_size = c.vocab_size;
  info.hidden_size = c.hidden_size;
  info.layers = c.num_hidden_layers;
  info.heads = c.num_attention_heads;
  info.intermediate_size = c.intermediate_size;
  info.max_sequence_length = limit;
  info.labels = c.id2label;
  info.pooling = c.pooling;
  spdlog::debug("skim: opened {} ({} layers, hidden {}, {} labels) in {:.3f} s", info.directory, info.layers,
                info.hidden_size, info.labels.size(), std::chrono::duration<double>(Clock::now() - start).count());
  return std::shared_ptr<const Engine>(new Engine(std::move(impl)));
}

const ModelInfo& Engine::info() const noexcept { return impl_->info; }
const Options& Engine::options() const noexcept { return impl_->options; }
Session Engine::session() const { return Session(shared_from_this()); }

Answer Engine::classify(std::string_view text) const {
  PooledState state(*impl_);
  return classify_with(*impl_, *state, std::span(&text, 1)).front();
}

std::vector<Answer> Engine::classify(std::span<const std::string> texts) const {
  PooledState state(*impl_);
  auto v = views(texts);
  return classify_with(*impl_, *state, v);
}

Embedding Engine::embed(std::string_view text) const {
  PooledState state(*impl_);
  return embed_with(*impl_, *state, text);
}

struct Session::State : SessionState {
  using SessionState::SessionState;
};

Session::Session(std::shared_ptr<const Engine> engine) : engine_(std::move(engine)) {
  if (!engine_) throw Error(ErrorCode::invalid_argument, "Session: null engine");
  const auto& e = engine_->impl();
  state_ = std::make_unique<State>(*e.encoder, e.max_batch_rows, e.max_sequence);
}
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

Answer Session::classify(std::string_view text) {
  return classify_with(engine_->impl(), *state_, std::span(&text, 1)).front();
}

std::vector<Answer> Session::classify(std::span<const std::string> texts) {
  auto v = views(texts);
  return classify_with(engine_->impl(), *state_, v);
}

Embedding Session::embed(std::string_view text) { return embed_with(engine_->impl(), *state_, text); }

}  // namespace skim

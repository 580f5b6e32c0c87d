#include "skim/engine.hpp"

#include <spdlog/spdlog.h>

#include <cmath>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/engine_impl.hpp"
#include "engine/router.hpp"
#include "skim/error.hpp"

namespace skim {

namespace fs = std::filesystem;

namespace {

// model_type from a directory's config.json, or "" if it cannot be read (the
// encoder loader then reports what is wrong with the file).
std::string peek_model_type(const fs::path& dir) {
  std::ifstream in(dir / "config.json");
  if (!in) return "";
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("model_type") || !j["model_type"].is_string()) return "";
  return j["model_type"].get<std::string>();
}

std::vector<std::string_view> views(std::span<const std::string> texts) { return {texts.begin(), texts.end()}; }

// Borrows a SessionState from the engine's pool for one call.
class PooledState {
 public:
  explicit PooledState(const Engine::Impl& e) : engine_(e) {
    {
      std::lock_guard lock(e.pool_mutex);
      if (!e.pool.empty()) {
        state_ = std::move(e.pool.back());
        e.pool.pop_back();
      }
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

std::unique_ptr<SessionState> Engine::Impl::make_state() const {
  auto s = std::make_unique<SessionState>();
  if (encoder)
    s->encoder_workspace =
        std::make_unique<execute::EncoderWorkspace>(*encoder, max_batch_rows, max_sequence, acm ? &*acm : nullptr);
  if (decoder) {
    s->decoder_workspace = std::make_unique<execute::DecoderWorkspace>(*decoder, max_batch_rows, acm ? &*acm : nullptr);
    s->cache.emplace(decoder->make_cache());
    s->logits.resize(llama_config.vocab);
  }
  return s;
}

Engine::Impl::~Impl() = default;

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

std::shared_ptr<const Engine> Engine::open(const fs::path& path, const Options& options) {
  const auto start = std::chrono::steady_clock::now();
  if (!fs::exists(path)) throw Error(ErrorCode::io, path.string() + ": no such file or directory");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->info.directory = path.string();
  if (fs::is_directory(path) && peek_model_type(path) != "llama")
    open_bert(*impl, path);
  else
    open_llama(*impl, path);
  if (impl->acm) {
    const auto gate = options.acm_gate() == AcmGate::oracle    ? execute::acm::Gate::oracle
                      : options.acm_gate() == AcmGate::uniform ? execute::acm::Gate::uniform
                                                               : execute::acm::Gate::learned;
    impl->acm_routing.emplace(*impl->acm, gate, options.acm_budget());
  }
  spdlog::debug("skim: opened {} ({}, {} layers, hidden {}) in {:.3f} s", impl->info.directory, impl->info.model_type,
                impl->info.layers, impl->info.hidden_size,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return std::shared_ptr<const Engine>(new Engine(std::move(impl)));
}

const ModelInfo& Engine::info() const noexcept { return impl_->info; }
const Options& Engine::options() const noexcept { return impl_->options; }
Session Engine::session() const { return Session(shared_from_this()); }

Answer Engine::classify(std::string_view text, const Request& request) const {
  PooledState state(*impl_);
  return classify_with(*impl_, *state, std::span(&text, 1), request).front();
}

std::vector<Answer> Engine::classify(std::span<const std::string> texts, const Request& request) const {
  PooledState state(*impl_);
  auto v = views(texts);
  return classify_with(*impl_, *state, v, request);
}

RouterStats Engine::stats() const { return router_stats(*impl_); }

Embedding Engine::embed(std::string_view text) const {
  PooledState state(*impl_);
  return embed_with(*impl_, *state, text);
}

Generation Engine::generate(std::string_view prompt, const GenerateOptions& options,
                            const TokenCallback& on_token) const {
  PooledState state(*impl_);
  reset_conversation(*state);
  return generate_with(*impl_, *state, prompt, options, on_token);
}

struct Session::State : SessionState {};

Session::Session(std::shared_ptr<const Engine> engine) : engine_(std::move(engine)) {
  if (!engine_) throw Error(ErrorCode::invalid_argument, "Session: null engine");
  auto made = engine_->impl().make_state();
  state_ = std::make_unique<State>();
  static_cast<SessionState&>(*state_) = std::move(*made);
}
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

Answer Session::classify(std::string_view text, const Request& request) {
  return classify_with(engine_->impl(), *state_, std::span(&text, 1), request).front();
}

std::vector<Answer> Session::classify(std::span<const std::string> texts, const Request& request) {
  auto v = views(texts);
  return classify_with(engine_->impl(), *state_, v, request);
}

Embedding Session::embed(std::string_view text) { return embed_with(engine_->impl(), *state_, text); }

Generation Session::generate(std::string_view prompt, const GenerateOptions& options, const TokenCallback& on_token) {
  return generate_with(engine_->impl(), *state_, prompt, options, on_token);
}

void Session::reset() { reset_conversation(*state_); }

Score Session::score(std::string_view text) { return score_with(engine_->impl(), *state_, text); }

Perplexity Session::perplexity(std::span<const std::string> documents) {
  if (documents.empty()) throw Error(ErrorCode::invalid_argument, "perplexity of no documents");
  Perplexity p;
  for (std::size_t d = 0; d < documents.size(); ++d) {
    Score s;
    try {
      s = score(documents[d]);
    } catch (const Error& e) {
      throw Error(e.code(), "document " + std::to_string(d + 1) + ": " + e.what());
    }
    ++p.documents;
    p.truncated_documents += s.truncated;
    p.tokens += s.tokens;
    p.negative_log_likelihood += s.negative_log_likelihood;
    p.cost.flops += s.cost.flops;
    p.cost.dense_flops += s.cost.dense_flops;
    p.cost.ffn_flops += s.cost.ffn_flops;
    p.cost.dense_ffn_flops += s.cost.dense_ffn_flops;
    p.cost.seconds += s.cost.seconds;
  }
  p.perplexity = p.tokens ? std::exp(p.negative_log_likelihood / static_cast<double>(p.tokens)) : 0.0;
  return p;
}

std::string_view to_string(Generation::Stop stop) noexcept {
  switch (stop) {
    case Generation::Stop::eos: return "eos";
    case Generation::Stop::max_tokens: return "max_tokens";
    case Generation::Stop::callback: return "callback";
    case Generation::Stop::context: return "context";
  }
  return "unknown";
}

}  // namespace skim

// The decoder path: prefill, token-by-token decoding with sampling, scoring.
#include <chrono>
#include <cmath>

#include "engine/engine_impl.hpp"
#include "execute/sampler.hpp"
#include "skim/error.hpp"

namespace skim {

namespace {

using Clock = std::chrono::steady_clock;

void require_decoder(const Engine::Impl& engine, const char* what) {
  if (!engine.decoder)
    throw Error(ErrorCode::invalid_argument, engine.info.directory + ": " + what + " needs a decoder model; this is a " +
                                                 engine.info.model_type + " encoder (use classify or embed)");
}

// One forward pass of the decoder, with its token routing (a native
// checkpoint's own, or the package's post-hoc routers) and adaptive FFNs.
execute::FlopCount forward(const Engine::Impl& engine, std::span<const std::int32_t> tokens, execute::KvCache& cache,
                           execute::DecoderWorkspace& ws) {
  std::optional<execute::mod::TokenRouting> routing;
  if (engine.decoder_routing) {
    // A native checkpoint routes with its learned routers only (open_llama refuses other scorers).
    const bool native = engine.decoder_routing->semantics == execute::mod::Semantics::native;
    routing.emplace(*engine.decoder_routing, native ? execute::mod::Scorer::learned : mod_scorer(engine.options), 0,
                    false);
  }
  return engine.decoder->forward(tokens, cache, ws,
                                 execute::Skipping{routing ? &*routing : nullptr,
                                                   engine.acm_routing ? &*engine.acm_routing : nullptr});
}

// Feeds `tokens` through the decoder in workspace-sized chunks, appending to
// the cache; afterwards state.logits holds the last token's logits.
execute::FlopCount feed(const Engine::Impl& engine, SessionState& state, std::span<const std::int32_t> tokens) {
  execute::FlopCount flops;
  auto& ws = *state.decoder_workspace;
  for (std::size_t at = 0; at < tokens.size();) {
    const std::size_t n = std::min<std::size_t>(tokens.size() - at, static_cast<std::size_t>(ws.max_rows()));
    flops += forward(engine, tokens.subspan(at, n), *state.cache, ws);
    at += n;
    if (at == tokens.size()) {
      flops += engine.decoder->logits(ws, static_cast<int>(n) - 1, 1);
      std::copy(ws.logits(), ws.logits() + engine.llama_config.vocab, state.logits.begin());
    }
  }
  return flops;
}

}  // namespace

void reset_conversation(SessionState& state) {
  if (state.cache) state.cache->clear();
  state.pending_token = -1;
}

Generation generate_with(const Engine::Impl& engine, SessionState& state, std::string_view prompt,
                         const GenerateOptions& options, const TokenCallback& on_token) {
  require_decoder(engine, "generate");
  kernels::set_thread_count(engine.options.threads());
  const auto& tok = *engine.sentencepiece;
  auto& cache = *state.cache;
  execute::Sampler sampler({options.temperature(), options.top_k(), options.top_p(), options.seed()},
                           engine.llama_config.vocab);

  // What to feed: a token emitted last time but not yet run, BOS if the
  // conversation starts here, then the prompt.
  auto& ids = state.ids;
  ids.clear();
  if (state.pending_token >= 0) ids.push_back(state.pending_token);
  const bool starts = cache.length() == 0 && state.pending_token < 0;
  tok.encode(prompt, starts, false, ids);
  const std::size_t room = static_cast<std::size_t>(cache.context() - cache.length());
  if (ids.size() > room)
    throw Error(ErrorCode::invalid_argument, "the prompt needs " + std::to_string(ids.size()) + " tokens but only " +
                                                 std::to_string(room) + " of the model's context of " +
                                                 std::to_string(cache.context()) + " are left (Session::reset starts over)");
  if (ids.empty())
    throw Error(ErrorCode::invalid_argument, "nothing to continue from: the prompt is empty and the last generation ended");

  Generation g;
  g.prompt_tokens = ids.size();
  const auto start = Clock::now();
  execute::FlopCount flops = feed(engine, state, ids);
  state.pending_token = -1;
  g.prefill_seconds = std::chrono::duration<double>(Clock::now() - start).count();

  text::Utf8Stream utf8;
  std::string piece_text;
  std::int32_t prev = ids.back();
  g.stop = Generation::Stop::max_tokens;
  for (std::size_t t = 0; t < options.max_tokens(); ++t) {
    const std::int32_t next = sampler.sample(state.logits);
    // End of text. Tiny llama2.c models also delimit stories with BOS.
    if (next == tok.eos_id() || next == tok.bos_id()) {
      g.stop = Generation::Stop::eos;
      break;
    }
    g.tokens.push_back(next);
    piece_text.clear();
    utf8.push(tok.decode_piece(prev, next), piece_text);
    g.text += piece_text;
    prev = next;
    if (on_token && !on_token(piece_text, next)) {
      g.stop = Generation::Stop::callback;
      state.pending_token = next;
      break;
    }
    if (t + 1 == options.max_tokens()) {
      state.pending_token = next;  // fed by the next call, if any
      break;
    }
    if (cache.length() >= cache.context()) {
      g.stop = Generation::Stop::context;
      break;
    }
    flops += feed(engine, state, std::span(&next, 1));
  }
  piece_text.clear();
  utf8.finish(piece_text);
  g.text += piece_text;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  g.decode_seconds = seconds - g.prefill_seconds;
  g.cost = {flops.executed, flops.dense, seconds, flops.ffn_executed, flops.ffn_dense};
  return g;
}

Score score_with(const Engine::Impl& engine, SessionState& state, std::string_view text) {
  require_decoder(engine, "score");
  kernels::set_thread_count(engine.options.threads());
  const auto& tok = *engine.sentencepiece;
  reset_conversation(state);
  auto& ids = state.ids;
  ids.clear();
  tok.encode(text, true, false, ids);
  Score s;
  const std::size_t context = static_cast<std::size_t>(engine.llama_config.context);
  if (ids.size() > context) {
    ids.resize(context);
    s.truncated = true;
  }
  const auto start = Clock::now();
  auto& ws = *state.decoder_workspace;
  const int vocab = engine.llama_config.vocab;
  execute::FlopCount flops;
  // Position p predicts token p + 1: run a chunk, then its logits in groups.
  for (std::size_t at = 0; at + 1 < ids.size();) {
    const std::size_t n = std::min<std::size_t>(ids.size() - 1 - at, static_cast<std::size_t>(ws.max_rows()));
    flops += forward(engine, std::span(ids).subspan(at, n), *state.cache, ws);
    for (std::size_t r = 0; r < n; r += execute::LlamaDecoder::logits_rows()) {
      const int count = static_cast<int>(std::min<std::size_t>(n - r, execute::LlamaDecoder::logits_rows()));
      flops += engine.decoder->logits(ws, static_cast<int>(r), count);
      for (int k = 0; k < count; ++k) {
        const float* l = ws.logits() + static_cast<std::size_t>(k) * vocab;
        const float top = *std::max_element(l, l + vocab);
        double sum = 0;
        for (int j = 0; j < vocab; ++j) sum += std::exp(double(l[j]) - top);
        const std::int32_t target = ids[at + r + k + 1];
        s.negative_log_likelihood += std::log(sum) - (double(l[target]) - top);
      }
    }
    at += n;
  }
  s.tokens = ids.empty() ? 0 : ids.size() - 1;
  s.cost = {flops.executed, flops.dense, std::chrono::duration<double>(Clock::now() - start).count(),
            flops.ffn_executed, flops.ffn_dense};
  reset_conversation(state);
  return s;
}

}  // namespace skim

// The encoder path: tokenize, pack into batches, encode, classify or pool.
#include <algorithm>
#include <chrono>

#include "engine/engine_impl.hpp"
#include "engine/router.hpp"
#include "kernels/ops.hpp"
#include "propose/normalize.hpp"
#include "skim/error.hpp"

namespace skim {

namespace {

using Clock = std::chrono::steady_clock;

// Dense FLOPs of one sequence of n tokens, used to split a packed batch's
// FLOPs over its sequences (exact for dense runs; attention makes long texts
// costlier than their share of tokens).
double dense_ffn_flops_for_length(const format::EncoderConfig& c, int n) {
  return 4.0 * n * c.hidden_size * static_cast<double>(c.intermediate_size) * c.num_hidden_layers;
}

double dense_flops_for_length(const format::EncoderConfig& c, int n, bool head) {
  const double H = c.hidden_size;
  double per_layer = 2.0 * n * H * 3 * H + 4.0 * n * n * H + 2.0 * n * H * H;
  double total = per_layer * c.num_hidden_layers + dense_ffn_flops_for_length(c, n);
  if (head) total += 2.0 * H * H + 2.0 * H * static_cast<double>(c.id2label.size());
  return total;
}

// The engine's MoD routing as its options ask (scorer, capacity override).
// The first token always runs when a classifier reads it.
execute::mod::TokenRouting token_routing(const Engine::Impl& engine) {
  return execute::mod::TokenRouting(*engine.mod_routing, mod_scorer(engine.options), engine.options.mod_capacity(),
                                    engine.encoder->has_classifier());
}

// Tokenizes `texts`, runs them in chunks of at most max_batch_rows tokens,
// and calls emit(input index, sequence in batch, cost) while the workspace
// holds that chunk's results (hidden states and, when `head`, logits).
template <typename Emit>
void run_encoder(const Engine::Impl& engine, SessionState& state, std::span<const std::string_view> texts, bool head,
                 Emit&& emit) {
  kernels::set_thread_count(engine.options.threads());
  auto& encodings = state.encodings;
  encodings.resize(texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    if (texts[i].empty()) throw Error(ErrorCode::invalid_argument, "input " + std::to_string(i) + " is empty");
    try {
      encodings[i] = engine.wordpiece->encode(texts[i], static_cast<std::size_t>(engine.max_sequence));
    } catch (const Error& e) {
      throw Error(e.code(), "input " + std::to_string(i) + ": " + e.what());
    }
    if (encodings[i].ids.size() <= 2)
      throw Error(ErrorCode::invalid_argument,
                  "input " + std::to_string(i) + " has no tokens after normalization (only spaces or control characters)");
  }
  std::optional<execute::mod::TokenRouting> tokens;
  if (engine.mod_routing) tokens.emplace(token_routing(engine));
  const execute::Skipping skip{tokens ? &*tokens : nullptr, engine.acm_routing ? &*engine.acm_routing : nullptr};
  std::size_t next = 0;
  while (next < texts.size()) {
    const auto start = Clock::now();
    auto& batch = state.batch;
    batch.clear();
    const std::size_t first = next;
    while (next < texts.size() && batch.rows() + static_cast<int>(encodings[next].ids.size()) <= engine.max_batch_rows)
      batch.add(encodings[next++].ids);
    execute::FlopCount flops = engine.encoder->encode(batch, *state.encoder_workspace, skip);
    if (head) flops += engine.encoder->classify_head(batch, *state.encoder_workspace);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    double dense_total = 0;
    for (int s = 0; s < batch.sequences(); ++s) dense_total += dense_flops_for_length(engine.bert_config, batch.length(s), head);
    for (int s = 0; s < batch.sequences(); ++s) {
      const double share = dense_flops_for_length(engine.bert_config, batch.length(s), head) / dense_total;
      emit(first + s, s,
           Cost{flops.executed * share, flops.dense * share, seconds / batch.sequences(), flops.ffn_executed * share,
                flops.ffn_dense * share});
    }
  }
}

void require_encoder(const Engine::Impl& engine, const char* what) {
  if (!engine.encoder)
    throw Error(ErrorCode::invalid_argument, engine.info.directory + ": " + what + " needs an encoder model; this is a " +
                                                 engine.info.model_type + " decoder (use generate)");
}

}  // namespace

std::vector<Answer> transformer_classify(const Engine::Impl& engine, SessionState& state,
                                         std::span<const std::string_view> texts) {
  require_encoder(engine, "classify");
  if (!engine.encoder->has_classifier())
    throw Error(ErrorCode::model, engine.info.directory + ": the model has no classification head (config has no id2label)");
  std::vector<Answer> answers(texts.size());
  const int labels = engine.encoder->num_labels();
  run_encoder(engine, state, texts, true, [&](std::size_t i, int s, const Cost& cost) {
    Answer& a = answers[i];
    const float* logits = state.encoder_workspace->logits() + static_cast<std::size_t>(s) * labels;
    a.logits.assign(logits, logits + labels);
    std::vector<float> probs = a.logits;
    kernels::softmax(probs);
    a.label_id = static_cast<int>(std::max_element(probs.begin(), probs.end()) - probs.begin());
    a.label = engine.bert_config.id2label[a.label_id];
    a.score = probs[a.label_id];
    a.route = Route::transformer;
    a.cost = cost;
    a.tokens = state.encodings[i].ids.size();
    a.truncated = state.encodings[i].truncated;
  });
  return answers;
}

Embedding embed_with(const Engine::Impl& engine, SessionState& state, std::string_view text) {
  require_encoder(engine, "embed");
  Embedding e;
  const int H = engine.encoder->hidden_size();
  run_encoder(engine, state, std::span(&text, 1), false, [&](std::size_t i, int, const Cost& cost) {
    const float* h = state.encoder_workspace->hidden();
    const int n = state.batch.length(0);
    e.values.assign(H, 0.f);
    if (engine.bert_config.pooling == "mean") {
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

// ---- the router: cache → rules → n-gram proposer → gate → transformer -------

namespace {

// An answer that did not come from this call's transformer run: the label,
// what the dense transformer would have spent on the text, and what we spent.
Answer routed_answer(const Engine::Impl& engine, std::string_view text, int label_id, float score, Route route,
                     double flops) {
  Answer a;
  a.label_id = label_id;
  a.label = engine.bert_config.id2label[label_id];
  a.score = score;
  a.route = route;
  const text::Encoding encoding = engine.wordpiece->encode(text, static_cast<std::size_t>(engine.max_sequence));
  a.tokens = encoding.ids.size();
  a.truncated = encoding.truncated;
  a.cost.flops = flops;
  a.cost.dense_flops = dense_flops_for_length(engine.bert_config, static_cast<int>(a.tokens), true);
  a.cost.dense_ffn_flops = dense_ffn_flops_for_length(engine.bert_config, static_cast<int>(a.tokens));
  return a;
}

// Mean of the feature rows, then the linear layer.
double proposer_flops(const propose::NgramClassifier& proposer, std::size_t features) {
  const double dim = static_cast<double>(proposer.options().dim);
  return dim * static_cast<double>(features) + 2.0 * dim * static_cast<double>(proposer.labels());
}

// Per input, what the router decided before the transformer ran.
struct Routing {
  std::string normalized;
  bool run_transformer = false;
  gate::Decision decision;
  gate::CalibrationSample sample;  // the proposal's score and label
  Clock::time_point start;
};

}  // namespace

std::vector<Answer> classify_with(const Engine::Impl& engine, SessionState& state,
                                  std::span<const std::string_view> texts, const Request& request) {
  if (!engine.router) return transformer_classify(engine, state, texts);
  require_encoder(engine, "classify");
  const Router& router = *engine.router;
  static constexpr std::string_view head = "classify";
  std::vector<Answer> answers(texts.size());
  std::vector<Routing> routing(texts.size());
  std::vector<std::string_view> to_run;
  std::vector<std::size_t> run_index;

  for (std::size_t i = 0; i < texts.size(); ++i) {
    Routing& r = routing[i];
    r.start = Clock::now();
    router.calls.fetch_add(1, std::memory_order_relaxed);
    try {
      r.normalized = propose::normalize_for_match(texts[i]);
    } catch (const Error& e) {
      throw Error(e.code(), "input " + std::to_string(i) + ": " + e.what());
    }
    if (r.normalized.empty()) {
      r.run_transformer = true;  // it reports what is wrong with the input
    } else if (auto hit = router.cache().get(request.tenant(), head, r.normalized)) {
      answers[i] = routed_answer(engine, texts[i], hit->label_id, hit->score, Route::cache, 0);
      router.cache_hits.fetch_add(1, std::memory_order_relaxed);
    } else if (auto label = router.rules().match(r.normalized)) {
      answers[i] = routed_answer(engine, texts[i], *label, 1.f, Route::rule, 0);
      router.rule_hits.fetch_add(1, std::memory_order_relaxed);
    } else {
      r.run_transformer = true;
      try {
        const auto prediction = router.proposer().predict_normalized(r.normalized);
        r.sample = {router.proposer().score(prediction), false, prediction.label};
        r.decision = router.monitor().decide(r.sample.score, prediction.label, router.request_id(request, i, texts.size()));
        if (r.decision.accept) {
          const double flops = proposer_flops(router.proposer(), prediction.features);
          answers[i] = routed_answer(engine, texts[i], prediction.label, prediction.probability, Route::proposer, flops);
          r.run_transformer = r.decision.shadow;
        }
      } catch (const std::exception&) {
        r.decision = gate::Decision{};  // fail closed: the transformer answers
      }
    }
    if (r.run_transformer) {
      to_run.push_back(texts[i]);
      run_index.push_back(i);
    } else {
      answers[i].cost.seconds = std::chrono::duration<double>(Clock::now() - r.start).count();
      if (answers[i].route == Route::proposer) router.monitor().record_accepted_unshadowed(r.decision);
    }
  }
  if (to_run.empty()) return answers;

  std::vector<Answer> ran = transformer_classify(engine, state, to_run);
  router.transformer_calls.fetch_add(ran.size(), std::memory_order_relaxed);
  for (std::size_t k = 0; k < ran.size(); ++k) {
    const std::size_t i = run_index[k];
    Routing& r = routing[i];
    Answer& t = ran[k];
    if (!r.normalized.empty()) router.cache().put(request.tenant(), head, r.normalized, router.version(), t);
    const bool disagree = t.label_id != r.sample.label;
    const double seconds = std::chrono::duration<double>(Clock::now() - r.start).count();
    if (r.decision.accept) {  // a shadow: the proposal stands, its check is recorded
      router.monitor().record_shadow(r.decision, disagree);
      router.shadowed.fetch_add(1, std::memory_order_relaxed);
      router.shadow_disagreements.fetch_add(disagree ? 1 : 0, std::memory_order_relaxed);
      answers[i].shadowed = true;
      answers[i].cost.flops += t.cost.flops;
      answers[i].cost.ffn_flops += t.cost.ffn_flops;
      answers[i].cost.seconds = seconds;
      continue;
    }
    if (r.decision.collect) router.monitor().record_collected(r.decision, {r.sample.score, disagree, r.sample.label});
    t.cost.seconds = seconds;
    answers[i] = std::move(t);
  }
  return answers;
}

RouterStats router_stats(const Engine::Impl& engine) {
  if (!engine.router) return RouterStats{};
  return engine.router->stats();
}

}  // namespace skim

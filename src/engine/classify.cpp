// The encoder path: tokenize, pack into batches, encode, classify or pool.
#include <algorithm>
#include <chrono>

#include "engine/engine_impl.hpp"
#include "kernels/ops.hpp"
#include "skim/error.hpp"

namespace skim {

namespace {

using Clock = std::chrono::steady_clock;

// Dense FLOPs of one sequence of n tokens, used to split a packed batch's
// FLOPs over its sequences (exact for dense runs; attention makes long texts
// costlier than their share of tokens).
double dense_flops_for_length(const format::EncoderConfig& c, int n, bool head) {
  const double H = c.hidden_size, I = c.intermediate_size;
  double per_layer = 2.0 * n * H * 3 * H + 4.0 * n * n * H + 2.0 * n * H * H + 4.0 * n * H * I;
  double total = per_layer * c.num_hidden_layers;
  if (head) total += 2.0 * H * H + 2.0 * H * static_cast<double>(c.id2label.size());
  return total;
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
  std::size_t next = 0;
  while (next < texts.size()) {
    const auto start = Clock::now();
    auto& batch = state.batch;
    batch.clear();
    const std::size_t first = next;
    while (next < texts.size() && batch.rows() + static_cast<int>(encodings[next].ids.size()) <= engine.max_batch_rows)
      batch.add(encodings[next++].ids);
    execute::FlopCount flops = engine.encoder->encode(batch, *state.encoder_workspace);
    if (head) flops += engine.encoder->classify_head(batch, *state.encoder_workspace);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    double dense_total = 0;
    for (int s = 0; s < batch.sequences(); ++s) dense_total += dense_flops_for_length(engine.bert_config, batch.length(s), head);
    for (int s = 0; s < batch.sequences(); ++s) {
      const double share = dense_flops_for_length(engine.bert_config, batch.length(s), head) / dense_total;
      emit(first + s, s, Cost{flops.executed * share, flops.dense * share, seconds / batch.sequences()});
    }
  }
}

void require_encoder(const Engine::Impl& engine, const char* what) {
  if (!engine.encoder)
    throw Error(ErrorCode::invalid_argument, engine.info.directory + ": " + what + " needs an encoder model; this is a " +
                                                 engine.info.model_type + " decoder (use generate)");
}

}  // namespace

std::vector<Answer> classify_with(const Engine::Impl& engine, SessionState& state,
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

}  // namespace skim

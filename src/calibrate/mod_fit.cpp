#include "calibrate/mod_fit.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kernels/backend.hpp"
#include "kernels/ops.hpp"
#include "skim/error.hpp"

namespace skim::calibration {

namespace {

using Clock = std::chrono::steady_clock;
using execute::TokenBatch;
using execute::mod::BlockRouter;
using execute::mod::Routing;
using execute::mod::TokenRouting;

// Capacities tried per block, from dense down.
constexpr double kLevels[] = {1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125};
constexpr int kLevelCount = static_cast<int>(std::size(kLevels));

// Texts tokenized and packed back to back into batches the workspace holds.
struct Packed {
  std::vector<TokenBatch> batches;
  std::size_t tokens = 0;
};

Packed pack(const Engine::Impl& engine, std::span<const std::string> texts) {
  Packed p;
  TokenBatch batch;
  batch.clear();
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto encoding = engine.wordpiece->encode(texts[i], static_cast<std::size_t>(engine.max_sequence));
    if (encoding.ids.size() <= 2)
      throw Error(ErrorCode::invalid_argument, "calibration text " + std::to_string(i + 1) + " has no tokens");
    if (batch.rows() + static_cast<int>(encoding.ids.size()) > engine.max_batch_rows) {
      p.batches.push_back(batch);
      batch.clear();
    }
    batch.add(encoding.ids);
    p.tokens += encoding.ids.size();
  }
  if (batch.sequences() > 0) p.batches.push_back(batch);
  return p;
}

execute::EncoderWorkspace workspace(const Engine::Impl& engine) {
  return execute::EncoderWorkspace(*engine.encoder, engine.max_batch_rows, engine.max_sequence);
}

// Blocks a caller may route, ascending, each once; by default never the
// first two or the last (the post-hoc literature finds them the most sensitive).
std::vector<int> eligible_layers(int L, const std::vector<int>& asked) {
  std::vector<int> layers;
  if (asked.empty()) {
    for (int l = 2; l < L - 1; ++l) layers.push_back(l);
    if (layers.empty())
      throw Error(ErrorCode::invalid_argument,
                  "the model's " + std::to_string(L) +
                      " layers leave none to route by default (never the first two or the last); name them (--mod-layers)");
    return layers;
  }
  for (int l : asked)
    if (l < 0 || l >= L)
      throw Error(ErrorCode::invalid_argument,
                  "MoD layer " + std::to_string(l) + " is outside the model's layers 0–" + std::to_string(L - 1));
  layers = asked;
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  return layers;
}

// Normal equations of one block's ridge regression, for fitting and held-out rows.
struct Normal {
  Eigen::MatrixXd gram;
  Eigen::VectorXd moment;
  double yy = 0, y_sum = 0;
  std::size_t n = 0;
  explicit Normal(int features) : gram(Eigen::MatrixXd::Zero(features, features)), moment(Eigen::VectorXd::Zero(features)) {}
  void add(const Eigen::MatrixXf& x, const Eigen::VectorXf& y) {
    gram += (x.transpose() * x).cast<double>();
    moment += (x.transpose() * y).cast<double>();
    yy += y.cast<double>().squaredNorm();
    y_sum += y.cast<double>().sum();
    n += static_cast<std::size_t>(x.rows());
  }
};

Eigen::VectorXd ridge(const Eigen::MatrixXd& gram, const Eigen::VectorXd& moment, double lambda) {
  Eigen::MatrixXd a = gram;
  for (int i = 0; i + 1 < a.rows(); ++i) a(i, i) += lambda;  // the bias (last) is not shrunk
  return a.ldlt().solve(moment);
}

// Mean KL(dense ‖ routed) of the classifier's softmax; without a classifier,
// the mean squared relative change of the output rows.
double output_change(const EncoderOutputs& dense, const EncoderOutputs& routed, bool classifier) {
  const std::size_t texts = dense.values.size() / dense.width;
  double total = 0;
  std::vector<float> p(dense.width), q(dense.width);
  for (std::size_t t = 0; t < texts; ++t) {
    const float* a = dense.values.data() + t * dense.width;
    const float* b = routed.values.data() + t * dense.width;
    if (classifier) {
      p.assign(a, a + dense.width);
      q.assign(b, b + dense.width);
      kernels::softmax(p);
      kernels::softmax(q);
      for (int j = 0; j < dense.width; ++j)
        if (p[j] > 0) total += p[j] * (std::log(p[j]) - std::log(std::max(q[j], 1e-30f)));
    } else {
      double change = 0, size = 0;
      for (int j = 0; j < dense.width; ++j) change += (b[j] - a[j]) * (b[j] - a[j]), size += a[j] * a[j];
      total += change / std::max(size, 1e-30);
    }
  }
  return total / std::max<std::size_t>(texts, 1);
}

// Per eligible block, the ridge regression of log contribution on norm(x),
// its strength chosen on the held-out rows, then refitted on all rows.
std::vector<BlockRouter> solve_routers(const std::vector<Normal>& fitting, const std::vector<Normal>& held_out,
                                       const std::vector<int>& eligible, int H, nlohmann::json& report) {
  std::vector<BlockRouter> routers;
  for (int l : eligible) {
    const Normal& f = fitting[l];
    const Normal& h = held_out[l];
    double best_r2 = -1e300, best_alpha = 0;
    for (double alpha : {1e-4, 1e-3, 1e-2, 1e-1, 1.0}) {
      const Eigen::VectorXd w = ridge(f.gram, f.moment, alpha * f.n);
      const double sse = h.yy - 2 * w.dot(h.moment) + w.dot(h.gram * w);
      const double sst = h.yy - h.y_sum * h.y_sum / std::max<std::size_t>(h.n, 1);
      const double r2 = h.n > 1 && sst > 0 ? 1 - sse / sst : 0;
      if (r2 > best_r2) best_r2 = r2, best_alpha = alpha;
    }
    const Eigen::VectorXd w = ridge(f.gram + h.gram, f.moment + h.moment, best_alpha * (f.n + h.n));
    BlockRouter router;
    router.layer = l;
    router.weight.resize(H);
    for (int j = 0; j < H; ++j) router.weight[j] = static_cast<float>(w(j));
    router.bias = static_cast<float>(w(H));
    routers.push_back(std::move(router));
    report.push_back({{"layer", l}, {"ridge_alpha", best_alpha}, {"held_out_r2", best_r2},
                      {"held_out_tokens", h.n}, {"fitting_tokens", f.n}});
  }
  return routers;
}

// Rows [first, first + count) of `before` (the block's input) as features,
// with their log contributions as targets, into `normal`.
void accumulate(Normal& normal, const float* before, const float* change, int first, int count, int H) {
  Eigen::MatrixXf x(count, H + 1);
  Eigen::VectorXf y(count);
  std::vector<float> normed(H);
  for (int i = 0; i < count; ++i) {
    execute::mod::normalize_row(before + static_cast<std::size_t>(first + i) * H, H, normed.data());
    for (int j = 0; j < H; ++j) x(i, j) = normed[j];
    x(i, H) = 1.f;
    y(i) = std::log(std::max(change[first + i], 1e-6f));
  }
  normal.add(x, y);
}

// The value below which `share` of `values` lie.
float quantile(std::vector<float> values, double share) {
  if (values.empty()) return 0;
  const std::size_t k = std::min(values.size() - 1, static_cast<std::size_t>(share * values.size()));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(k), values.end());
  return values[k];
}

}  // namespace

int EncoderOutputs::argmax(std::size_t text) const {
  const float* row = values.data() + text * width;
  return static_cast<int>(std::max_element(row, row + width) - row);
}

namespace {

// The encoder's outputs for batches packed once, in a workspace made once:
// the sensitivity measurement runs the same texts many times.
EncoderOutputs run_packed(const Engine::Impl& engine, const Packed& packed, const TokenRouting* routing,
                          execute::EncoderWorkspace& ws) {
  const bool classifier = engine.encoder->has_classifier();
  EncoderOutputs out;
  out.width = classifier ? engine.encoder->num_labels() : engine.encoder->hidden_size();
  out.tokens = packed.tokens;
  for (const auto& batch : packed.batches) {
    execute::FlopCount f = routing ? engine.encoder->encode(batch, ws, *routing) : engine.encoder->encode(batch, ws);
    if (classifier) {
      f += engine.encoder->classify_head(batch, ws);
      out.values.insert(out.values.end(), ws.logits(), ws.logits() + static_cast<std::size_t>(batch.sequences()) * out.width);
    } else {
      for (int s = 0; s < batch.sequences(); ++s) {
        const float* row = ws.hidden() + static_cast<std::size_t>(batch.offsets[s]) * out.width;
        out.values.insert(out.values.end(), row, row + out.width);
      }
    }
    out.executed_flops += f.executed;
    out.dense_flops += f.dense;
  }
  return out;
}

}  // namespace

EncoderOutputs run_encoder_on(const Engine::Impl& engine, std::span<const std::string> texts,
                              const TokenRouting* routing) {
  kernels::set_thread_count(engine.options.threads());
  auto ws = workspace(engine);
  return run_packed(engine, pack(engine, texts), routing, ws);
}

ModFit fit_mod_routers(const Engine::Impl& engine, std::span<const std::string> texts, const ModFitOptions& options) {
  const auto start = Clock::now();
  if (!engine.encoder) throw Error(ErrorCode::invalid_argument, "MoD routers are fitted on encoders here (this model is a decoder)");
  const bool by_capacity = options.capacity > 0;
  const double target = by_capacity ? options.capacity : options.flops_share;
  if (!(target > 0 && target <= 1) || (options.capacity > 0 && options.flops_share > 0))
    throw Error(ErrorCode::invalid_argument, "MoD: give one target, a capacity or a FLOPs share, in (0, 1]; got " +
                                                 std::to_string(by_capacity ? options.capacity : options.flops_share));
  ModFit fit;
  fit.eligible = eligible_layers(engine.encoder->layers(), options.layers);
  const int H = engine.encoder->hidden_size(), L = engine.encoder->layers(), features = H + 1;
  const auto& progress = options.progress;
  kernels::set_thread_count(engine.options.threads());

  // 1. Dense passes, recording per eligible block and token the input and
  // the log of its relative contribution. Every fifth text is held out to
  // choose the ridge strength.
  const Packed packed = pack(engine, texts);
  fit.tokens = packed.tokens;
  const std::size_t needed = static_cast<std::size_t>(5) * features;
  if (packed.tokens < needed)
    throw Error(ErrorCode::invalid_argument,
                "MoD: the calibration texts hold " + std::to_string(packed.tokens) + " tokens; fitting routers on a hidden size of " +
                    std::to_string(H) + " needs at least " + std::to_string(needed));
  std::vector<Normal> fitting(L, Normal(features)), held_out(L, Normal(features));
  auto ws = workspace(engine);
  auto& scratch = ws.routing_scratch();
  std::vector<float> change(engine.max_batch_rows);
  std::size_t text = 0;
  for (std::size_t b = 0; b < packed.batches.size(); ++b) {
    if (progress) progress("recording block contributions", b, packed.batches.size());
    const TokenBatch& batch = packed.batches[b];
    const int rows = batch.rows();
    engine.encoder->embed(batch, ws);
    for (int l = 0; l < L; ++l) {
      const bool eligible = std::binary_search(fit.eligible.begin(), fit.eligible.end(), l);
      if (eligible) std::copy(ws.hidden(), ws.hidden() + static_cast<std::size_t>(rows) * H, scratch.before.data());
      engine.encoder->layer_forward(l, batch, ws, execute::RowSelection::every_row());
      if (!eligible) continue;
      execute::mod::relative_change(scratch.before.data(), ws.hidden(), rows, H, change.data());
      for (int s = 0; s < batch.sequences(); ++s)  // every fifth text is held out
        accumulate(((text + s) % 5 == 4 ? held_out : fitting)[l], scratch.before.data(), change.data(),
                   batch.offsets[s], batch.length(s), H);
    }
    text += batch.sequences();
  }

  // 2. Ridge per block, its strength chosen on the held-out texts.
  nlohmann::json blocks = nlohmann::json::array();
  Routing fitted;
  fitted.blocks = solve_routers(fitting, held_out, fit.eligible, H, blocks);

  // 3. Sensitivity: each block alone at each capacity, measured on a spread
  // of the texts (every k-th, up to the token budget).
  std::vector<std::string> sample;
  const std::size_t stride = std::max<std::size_t>(1, (packed.tokens + options.max_sensitivity_tokens - 1) /
                                                          std::max<std::size_t>(options.max_sensitivity_tokens, 1));
  for (std::size_t i = 0; i < texts.size(); i += stride) sample.push_back(texts[i]);
  const Packed sample_batches = pack(engine, sample);
  const bool classifier = engine.encoder->has_classifier();
  const EncoderOutputs dense = run_packed(engine, sample_batches, nullptr, ws);
  const std::size_t E = fit.eligible.size();
  std::vector<std::vector<double>> cost(E, std::vector<double>(kLevelCount, 0.0)),
      saved(E, std::vector<double>(kLevelCount, 0.0));
  for (std::size_t e = 0; e < E; ++e)
    for (int v = 1; v < kLevelCount; ++v) {
      if (progress) progress("measuring block sensitivity", e * (kLevelCount - 1) + v - 1, E * (kLevelCount - 1));
      Routing alone;
      alone.blocks.push_back(fitted.blocks[e]);
      alone.blocks.back().capacity = kLevels[v];
      const TokenRouting routing(alone, execute::mod::Scorer::learned, 0, classifier);
      const EncoderOutputs routed = run_packed(engine, sample_batches, &routing, ws);
      cost[e][v] = output_change(dense, routed, classifier);
      saved[e][v] = dense.executed_flops - routed.executed_flops;
    }

  // 4. Greedy allocation: lower, one step at a time, the block whose next
  // step costs least output change per FLOP saved, until the target holds.
  std::vector<int> level(E, 0);
  auto mean_capacity = [&] {
    double sum = 0;
    for (std::size_t e = 0; e < E; ++e) sum += kLevels[level[e]];
    return sum / E;
  };
  auto predicted_share = [&] {
    double s = dense.executed_flops;
    for (std::size_t e = 0; e < E; ++e) s -= saved[e][level[e]];
    return s / dense.dense_flops;
  };
  while (by_capacity ? mean_capacity() > target + 1e-9 : predicted_share() > target) {
    std::size_t best = E;
    double best_ratio = 0;
    for (std::size_t e = 0; e < E; ++e) {
      if (level[e] + 1 >= kLevelCount) continue;
      const double d_saved = saved[e][level[e] + 1] - saved[e][level[e]];
      const double ratio = (cost[e][level[e] + 1] - cost[e][level[e]]) / std::max(d_saved, 1.0);
      if (best == E || ratio < best_ratio) best = e, best_ratio = ratio;
    }
    if (best == E) break;  // every block at the lowest capacity
    ++level[best];
  }
  for (std::size_t e = 0; e < E; ++e) {
    if (level[e] == 0) continue;  // left dense: not routed
    BlockRouter b = fitted.blocks[e];
    b.capacity = kLevels[level[e]];
    fit.routing.blocks.push_back(std::move(b));
  }

  // 5. What the allocation does, jointly, on the same texts.
  const TokenRouting routing(fit.routing, execute::mod::Scorer::learned, 0, classifier);
  const EncoderOutputs routed = run_packed(engine, sample_batches, &routing, ws);
  std::size_t agree = 0;
  for (std::size_t t = 0; t < sample.size(); ++t) agree += !classifier || dense.argmax(t) == routed.argmax(t);
  fit.flops_share = routed.executed_flops / dense.dense_flops;
  fit.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  nlohmann::json allocation = nlohmann::json::array();
  for (std::size_t e = 0; e < E; ++e) {
    nlohmann::json levels = nlohmann::json::array();
    for (int v = 0; v < kLevelCount; ++v)
      levels.push_back({{"capacity", kLevels[v]}, {"output_change", cost[e][v]},
                        {"flops_saved_share", saved[e][v] / dense.dense_flops}});
    allocation.push_back({{"layer", fit.eligible[e]}, {"capacity", kLevels[level[e]]}, {"sensitivity", levels}});
  }
  fit.report = {{"target", by_capacity ? "capacity" : "flops_share"},
                {"target_value", target},
                {"eligible_layers", fit.eligible},
                {"texts", texts.size()},
                {"tokens", packed.tokens},
                {"blocks", blocks},
                {"allocation", allocation},
                {"sensitivity_texts", sample.size()},
                {"output_change", output_change(dense, routed, classifier)},
                {"output_change_measure", classifier ? "mean KL(dense || routed) of the classifier" : "mean squared relative change"},
                {"argmax_agreement", static_cast<double>(agree) / std::max<std::size_t>(sample.size(), 1)},
                {"flops_share", fit.flops_share},
                {"mean_capacity", mean_capacity()},
                {"seconds", fit.seconds}};
  if (progress) progress("measuring block sensitivity", E * (kLevelCount - 1), E * (kLevelCount - 1));
  return fit;
}

}  // namespace skim::calibration

namespace skim::calibration {

execute::mod::Routing fit_decoder_routers(const execute::LlamaDecoder& decoder,
                                          std::span<const std::vector<std::int32_t>> sequences,
                                          const std::vector<int>& layers, double capacity, nlohmann::json& report) {
  if (!(capacity > 0 && capacity <= 1))
    throw Error(ErrorCode::invalid_argument, "MoD capacity " + std::to_string(capacity) + " is outside (0, 1]");
  const int H = decoder.config().dim, L = decoder.config().layers;
  const std::vector<int> eligible = eligible_layers(L, layers);
  constexpr int chunk = 128;
  execute::DecoderWorkspace ws(decoder, chunk);
  auto cache = decoder.make_cache();
  std::vector<Normal> fitting(L, Normal(H + 1)), held_out(L, Normal(H + 1));
  std::vector<std::vector<float>> contributions(L);
  std::vector<float> before(static_cast<std::size_t>(chunk) * H), change(chunk), score_row(chunk);
  std::size_t tokens = 0;
  // One pass records contributions; `score` set: a second pass records the
  // fitted routers' scores on the same tokens.
  auto pass = [&](const execute::mod::Routing* score, std::vector<std::vector<float>>& scores) {
    for (std::size_t s = 0; s < sequences.size(); ++s) {
      cache.clear();
      const auto& ids = sequences[s];
      for (std::size_t at = 0; at < ids.size(); at += chunk) {
        const int rows = static_cast<int>(std::min<std::size_t>(chunk, ids.size() - at));
        decoder.embed(std::span(ids).subspan(at, rows), cache, ws);
        float* x = ws.hidden();
        for (int l = 0; l < L; ++l) {
          const bool routed = std::binary_search(eligible.begin(), eligible.end(), l);
          if (routed) {
            std::copy(x, x + static_cast<std::size_t>(rows) * H, before.data());
            if (score) {
              execute::mod::router_scores(x, rows, H, *score->find(l), score_row.data());
              scores[l].insert(scores[l].end(), score_row.begin(), score_row.begin() + rows);
            }
          }
          decoder.layer_forward(l, rows, cache, ws, execute::RowSelection::every_row());
          if (!routed || score) continue;
          execute::mod::relative_change(before.data(), x, rows, H, change.data());
          contributions[l].insert(contributions[l].end(), change.begin(), change.begin() + rows);
          accumulate((s % 5 == 4 ? held_out : fitting)[l], before.data(), change.data(), 0, rows, H);
        }
        decoder.finish(rows, cache, ws);
        if (!score) tokens += rows;
      }
    }
  };
  std::vector<std::vector<float>> unused;
  pass(nullptr, unused);
  if (tokens < static_cast<std::size_t>(5) * (H + 1))
    throw Error(ErrorCode::invalid_argument, "MoD: the calibration text holds " + std::to_string(tokens) +
                                                 " tokens; a hidden size of " + std::to_string(H) + " needs at least " +
                                                 std::to_string(5 * (H + 1)));
  nlohmann::json blocks = nlohmann::json::array();
  execute::mod::Routing routing;
  routing.blocks = solve_routers(fitting, held_out, eligible, H, blocks);
  std::vector<std::vector<float>> scores(L);
  pass(&routing, scores);
  for (auto& b : routing.blocks) {
    b.capacity = capacity;
    b.threshold = quantile(scores[b.layer], 1 - capacity);
    b.oracle_threshold = quantile(contributions[b.layer], 1 - capacity);
  }
  report = {{"tokens", tokens}, {"blocks", blocks}, {"capacity", capacity}};
  return routing;
}

}  // namespace skim::calibration

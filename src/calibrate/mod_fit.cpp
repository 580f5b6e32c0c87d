#include "calibrate/mod_fit.hpp"

#include "calibrate/fitting.hpp"

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
constexpr auto& kLevels = kAllocationLevels;
constexpr int kLevelCount = kAllocationLevelCount;

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

// Per eligible block, the ridge regression of log contribution on norm(x),
// its strength chosen on the held-out rows, then refitted on all rows.
std::vector<BlockRouter> solve_routers(const std::vector<Normal>& fitting, const std::vector<Normal>& held_out,
                                       const std::vector<int>& eligible, int H, nlohmann::json& report) {
  std::vector<BlockRouter> routers;
  for (int l : eligible) {
    const RidgeFit fit = ridge_with_held_out(fitting[l], held_out[l]);
    const Eigen::VectorXd& w = fit.weights;
    BlockRouter router;
    router.layer = l;
    router.weight.resize(H);
    for (int j = 0; j < H; ++j) router.weight[j] = static_cast<float>(w(j));
    router.bias = static_cast<float>(w(H));
    routers.push_back(std::move(router));
    report.push_back({{"layer", l}, {"ridge_alpha", fit.alpha}, {"held_out_r2", fit.held_out_r2},
                      {"held_out_tokens", held_out[l].n}, {"fitting_tokens", fitting[l].n}});
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

// Mean capacity of the eligible blocks at these levels (level 0: whole).
double mean_capacity(const std::vector<int>& levels) {
  double sum = 0;
  for (int v : levels) sum += kLevels[v];
  return levels.empty() ? 1 : sum / static_cast<double>(levels.size());
}

// Per eligible block: its chosen capacity and what each level cost alone.
nlohmann::json allocation_report(const std::vector<int>& eligible, const std::vector<int>& levels,
                                 const std::vector<std::vector<double>>& cost,
                                 const std::vector<std::vector<double>>& saved, double dense_flops) {
  nlohmann::json allocation = nlohmann::json::array();
  for (std::size_t e = 0; e < eligible.size(); ++e) {
    nlohmann::json sensitivity = nlohmann::json::array();
    for (int v = 0; v < kLevelCount; ++v)
      sensitivity.push_back({{"capacity", kLevels[v]}, {"output_change", cost[e][v]},
                             {"flops_saved_share", saved[e][v] / dense_flops}});
    allocation.push_back({{"layer", eligible[e]}, {"capacity", kLevels[levels[e]]}, {"sensitivity", sensitivity}});
  }
  return allocation;
}

}  // namespace

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
  auto ws = encoder_workspace(engine);
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
  const std::vector<std::string> sample = spread_sample(texts, packed, options.max_sensitivity_tokens);
  const Packed sample_batches = pack(engine, sample);
  const bool classifier = engine.encoder->has_classifier();
  const ModelOutputs dense = run_packed(engine, sample_batches, {}, ws);
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
      const ModelOutputs routed = run_packed(engine, sample_batches, {&routing, nullptr}, ws);
      cost[e][v] = output_change(dense, routed, classifier);
      saved[e][v] = dense.flops.executed - routed.flops.executed;
    }

  // 4. Greedy allocation: lower, one step at a time, the block whose next
  // step costs least output change per FLOP saved, until the target holds.
  std::vector<int> level(E, 0);
  auto predicted_share = [&] {
    double s = dense.flops.executed;
    for (std::size_t e = 0; e < E; ++e) s -= saved[e][level[e]];
    return s / dense.flops.dense;
  };
  while (by_capacity ? mean_capacity(level) > target + 1e-9 : predicted_share() > target)
    if (lower_cheapest(cost, saved, level) == E) break;  // every block at the lowest capacity
  for (std::size_t e = 0; e < E; ++e) {
    if (level[e] == 0) continue;  // left dense: not routed
    BlockRouter b = fitted.blocks[e];
    b.capacity = kLevels[level[e]];
    fit.routing.blocks.push_back(std::move(b));
  }

  // 5. What the allocation does, jointly, on the same texts.
  const TokenRouting routing(fit.routing, execute::mod::Scorer::learned, 0, classifier);
  const ModelOutputs routed = run_packed(engine, sample_batches, {&routing, nullptr}, ws);
  fit.flops_share = routed.flops.executed / dense.flops.dense;
  fit.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  fit.report = {{"target", by_capacity ? "capacity" : "flops_share"},
                {"target_value", target},
                {"eligible_layers", fit.eligible},
                {"texts", texts.size()},
                {"tokens", packed.tokens},
                {"blocks", blocks},
                {"allocation", allocation_report(fit.eligible, level, cost, saved, dense.flops.dense)},
                {"sensitivity_texts", sample.size()},
                {"output_change", output_change(dense, routed, classifier)},
                {"output_change_measure", classifier ? "mean KL(dense || routed) of the classifier" : "mean squared relative change"},
                {"argmax_agreement", classifier ? argmax_agreement(dense, routed) : 1.0},
                {"flops_share", fit.flops_share},
                {"mean_capacity", mean_capacity(level)},
                {"seconds", fit.seconds}};
  if (progress) progress("measuring block sensitivity", E * (kLevelCount - 1), E * (kLevelCount - 1));
  return fit;
}

}  // namespace skim::calibration

namespace skim::calibration {

execute::mod::Routing fit_decoder_routers(const execute::LlamaDecoder& decoder,
                                          std::span<const std::vector<std::int32_t>> sequences,
                                          const std::vector<int>& layers, double capacity, nlohmann::json& report,
                                          const RoutedRun& measure) {
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
  // The causal thresholds: the (1 − c) quantiles of the calibration tokens'
  // learned scores and true contributions.
  auto at_capacity = [&](BlockRouter b, double c) {
    b.capacity = c;
    b.threshold = quantile(scores[b.layer], 1 - c);
    b.oracle_threshold = quantile(contributions[b.layer], 1 - c);
    return b;
  };
  report = {{"tokens", tokens}, {"blocks", blocks}, {"capacity", capacity}};
  if (!measure) {
    for (auto& b : routing.blocks) b = at_capacity(b, capacity);
    return routing;
  }

  // Greedy allocation, as for encoders: each block alone at each level, its
  // output change (KL of the next-token distributions) per FLOP saved.
  const ModelOutputs dense = measure(nullptr);
  const std::size_t E = eligible.size();
  std::vector<std::vector<double>> cost(E, std::vector<double>(kLevelCount, 0.0)),
      saved(E, std::vector<double>(kLevelCount, 0.0));
  for (std::size_t e = 0; e < E; ++e)
    for (int v = 1; v < kLevelCount; ++v) {
      execute::mod::Routing alone;
      alone.blocks.push_back(at_capacity(routing.blocks[e], kLevels[v]));
      const ModelOutputs routed = measure(&alone);
      cost[e][v] = output_change(dense, routed, true);
      saved[e][v] = dense.flops.executed - routed.flops.executed;
    }
  std::vector<int> level(E, 0);
  while (mean_capacity(level) > capacity + 1e-9)
    if (lower_cheapest(cost, saved, level) == E) break;
  execute::mod::Routing allocated;
  for (std::size_t e = 0; e < E; ++e)
    if (level[e] > 0) allocated.blocks.push_back(at_capacity(routing.blocks[e], kLevels[level[e]]));

  const ModelOutputs routed = measure(&allocated);
  report["allocation"] = allocation_report(eligible, level, cost, saved, dense.flops.dense);
  report["mean_capacity"] = mean_capacity(level);
  report["flops_share"] = routed.flops.executed / std::max(dense.flops.dense, 1.0);
  report["output_change"] = output_change(dense, routed, true);
  report["argmax_agreement"] = argmax_agreement(dense, routed);
  return allocated;
}

}  // namespace skim::calibration

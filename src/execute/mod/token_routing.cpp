#include "execute/mod/token_routing.hpp"

#include <algorithm>
#include <cmath>

namespace skim::execute::mod {

namespace {

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

const BlockRouter* Routing::find(int layer) const noexcept {
  for (const auto& b : blocks)
    if (b.layer == layer) return &b;
  return nullptr;
}

RoutingScratch::RoutingScratch(int max_rows) {
  scores.reserve(max_rows);
  rows.reserve(max_rows);
  order.reserve(max_rows);
}

int tokens_to_keep(int length, double capacity) {
  const int k = static_cast<int>(std::ceil(capacity * length - 1e-9));
  return std::clamp(k, 1, std::max(length, 1));
}

TokenRouting::TokenRouting(const Routing& routing, Scorer scorer, double capacity_override, bool keep_first,
                           std::uint64_t seed)
    : routing_(routing), scorer_(scorer), capacity_override_(capacity_override), keep_first_(keep_first), seed_(seed) {}

double TokenRouting::capacity(int layer) const noexcept {
  const BlockRouter* b = routing_.find(layer);
  if (!b) return 1;
  return capacity_override_ > 0 ? capacity_override_ : b->capacity;
}

double TokenRouting::router_flops(int layer, int rows, int width) const noexcept {
  // Normalisation and the dot product: about 5 operations per element.
  return scorer_ == Scorer::learned && routes(layer) ? 5.0 * rows * width : 0.0;
}

RowSelection TokenRouting::select(int layer, const float* hidden, int width, const TokenBatch& batch,
                                  RoutingScratch& scratch) const {
  const BlockRouter* block = routing_.find(layer);
  if (!block) return RowSelection::every_row();
  const int rows = batch.rows();
  scratch.scores.resize(rows);
  switch (scorer_) {
    case Scorer::learned: router_scores(hidden, rows, width, *block, scratch.scores.data()); break;
    case Scorer::oracle: break;  // the caller filled in the contributions
    case Scorer::random:
      // The same text gets the same draw whatever it is batched with.
      for (int s = 0; s < batch.sequences(); ++s)
        for (int r = batch.offsets[s]; r < batch.offsets[s + 1]; ++r)
          scratch.scores[r] = random_score(seed_, layer, r - batch.offsets[s], batch.ids[r]);
      break;
  }
  const double c = capacity(layer);
  scratch.rows.clear();
  for (int s = 0; s < batch.sequences(); ++s) {
    const int begin = batch.offsets[s], n = batch.length(s), keep = tokens_to_keep(n, c);
    if (keep >= n) {
      for (int r = begin; r < begin + n; ++r) scratch.rows.push_back(r);
      continue;
    }
    auto& order = scratch.order;
    order.clear();
    for (int r = begin + (keep_first_ ? 1 : 0); r < begin + n; ++r) order.push_back(r);
    const int pick = keep - (keep_first_ ? 1 : 0);
    // Best first; ties go to the earlier row, so the choice is deterministic.
    std::partial_sort(order.begin(), order.begin() + pick, order.end(), [&](std::int32_t a, std::int32_t b) {
      return scratch.scores[a] != scratch.scores[b] ? scratch.scores[a] > scratch.scores[b] : a < b;
    });
    order.resize(pick);
    if (keep_first_) order.push_back(begin);
    std::sort(order.begin(), order.end());
    scratch.rows.insert(scratch.rows.end(), order.begin(), order.end());
  }
  return RowSelection::only(scratch.rows);
}

RowSelection TokenRouting::select_causal(int layer, const float* hidden, int rows, int width,
                                         const std::int32_t* positions, const std::int32_t* ids,
                                         RoutingScratch& scratch) const {
  const BlockRouter* block = routing_.find(layer);
  if (!block) return RowSelection::every_row();
  scratch.scores.resize(rows);
  float threshold = block->threshold;
  switch (scorer_) {
    case Scorer::learned: router_scores(hidden, rows, width, *block, scratch.scores.data()); break;
    case Scorer::oracle: threshold = block->oracle_threshold; break;  // the caller filled in the contributions
    case Scorer::random:
      for (int r = 0; r < rows; ++r) scratch.scores[r] = random_score(seed_, layer, positions[r], ids[r]);
      threshold = static_cast<float>(1 - capacity(layer));
      break;
  }
  scratch.rows.clear();
  for (int r = 0; r < rows; ++r)
    if (scratch.scores[r] > threshold) scratch.rows.push_back(r);
  return RowSelection::only(scratch.rows);
}

float random_score(std::uint64_t seed, int layer, std::int64_t position, std::int32_t token) {
  const std::uint64_t h = mix(mix(mix(seed ^ static_cast<std::uint64_t>(layer)) ^ static_cast<std::uint64_t>(position)) ^
                              static_cast<std::uint64_t>(static_cast<std::uint32_t>(token)));
  return static_cast<float>(h >> 40) * (1.f / 16777216.f);
}

void normalize_row(const float* x, int width, float* out) {
  double mean = 0, square = 0;
  for (int j = 0; j < width; ++j) mean += x[j];
  mean /= width;
  for (int j = 0; j < width; ++j) square += (x[j] - mean) * (x[j] - mean);
  const double inverse_std = 1.0 / std::sqrt(square / width + 1e-6);
  for (int j = 0; j < width; ++j) out[j] = static_cast<float>((x[j] - mean) * inverse_std);
}

void router_scores(const float* hidden, int rows, int width, const BlockRouter& router, float* scores) {
  for (int r = 0; r < rows; ++r) {
    const float* x = hidden + static_cast<std::size_t>(r) * width;
    double mean = 0, square = 0, dot = 0;
    for (int j = 0; j < width; ++j) mean += x[j];
    mean /= width;
    for (int j = 0; j < width; ++j) {
      const double centred = x[j] - mean;
      square += centred * centred;
      dot += centred * router.weight[j];
    }
    scores[r] = static_cast<float>(dot / std::sqrt(square / width + 1e-6) + router.bias);
  }
}

void relative_change(const float* before, const float* after, int rows, int width, float* out) {
  for (int r = 0; r < rows; ++r) {
    double change = 0, size = 0;
    for (int j = 0; j < width; ++j) {
      const double b = before[static_cast<std::size_t>(r) * width + j];
      const double d = after[static_cast<std::size_t>(r) * width + j] - b;
      change += d * d;
      size += b * b;
    }
    out[r] = static_cast<float>(std::sqrt(change / std::max(size, 1e-30)));
  }
}

}  // namespace skim::execute::mod

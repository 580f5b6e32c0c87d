#pragma once
// Mixture-of-Depths token routing (Raposo et al. 2024, arXiv 2404.02258),
// post-hoc semantics: in a routed block only the tokens the router picks run
// the query, attention output, output projection and FFN; keys and values
// are computed for every token, and the others keep their state (they ride
// the residual). Routing decides index lists; the encoder gathers those rows,
// runs the same dense GEMMs on them and scatters back, so no kernel knows.
#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "execute/token_batch.hpp"
#include "kernels/aligned_buffer.hpp"

namespace skim::execute::mod {

// One routed block's router: r = w·norm(x) + b, norm(x) = (x − mean(x)) /
// std(x), i.e. a LayerNorm without its affine part (the block's own norms
// differ by architecture; the affine part folds into w and b). Fitted so
// that r predicts log(‖f(x)‖/‖x‖), the block's relative contribution.
struct BlockRouter {
  int layer = 0;
  double capacity = 1;        // share of each sequence's tokens that run the block
  std::vector<float> weight;  // hidden size
  float bias = 0;
  // Decoders route causally: a token runs the block when its score passes a
  // threshold set on calibration text so that `capacity` of tokens pass
  // (a top-k over a sequence would look at tokens not yet generated, and
  // prefill and decoding would disagree). One threshold per scorer.
  float threshold = 0;         // learned scores
  float oracle_threshold = 0;  // true contributions
};

// What a routed block does with the tokens it picks and the ones it skips.
//  post_hoc: routers fitted to a pre-trained model (above): keys and values
//    for every token, the picked tokens run the rest of the block at scale 1,
//    the others keep x.
//  native: a model trained with Mixture-of-Depths (Raposo et al.): the
//    skipped tokens are absent from the block, not even keys and values (a
//    decoder's KV cache holds only the routed tokens of such a layer), and a
//    routed token leaves with x + r·(block(x) − x), r its router score.
//    The model package chooses (a decoder's config.json mixture_of_depths).
enum class Semantics { post_hoc, native };

// The routed blocks of a model, ascending by layer. Immutable once loaded.
struct Routing {
  std::vector<BlockRouter> blocks;
  Semantics semantics = Semantics::post_hoc;
  const BlockRouter* find(int layer) const noexcept;
};

// How tokens are scored: the fitted routers; the oracle (the block's true
// contribution, measured by running the block on every token first: the
// upper bound on quality, with no saving in reality); random (the floor).
enum class Scorer { learned, oracle, random };

// Buffers a forward pass routes with, sized once for a workspace.
struct RoutingScratch {
  explicit RoutingScratch(int max_rows = 0);
  std::vector<float> scores;          // one per row
  std::vector<std::int32_t> rows;     // the selection handed to the block
  std::vector<std::int32_t> order;    // per-sequence sort scratch
  kernels::AlignedBuffer<float> before;  // oracle: the layer's input
};

// Tokens of a sequence of `length` that run a block at `capacity`: ⌈c·S⌉,
// at least 1.
int tokens_to_keep(int length, double capacity);

// One forward pass's routing decisions.
class TokenRouting {
 public:
  // capacity_override in (0, 1] replaces every block's capacity; 0 keeps
  // them. keep_first: a sequence's first row ([CLS], which a classifier
  // reads) always runs the block and counts against the capacity.
  TokenRouting(const Routing& routing, Scorer scorer, double capacity_override = 0, bool keep_first = true,
               std::uint64_t seed = 0);

  bool routes(int layer) const noexcept { return routing_.find(layer) != nullptr; }
  Semantics semantics() const noexcept { return routing_.semantics; }
  Scorer scorer() const noexcept { return scorer_; }
  // True when select() for `layer` needs scratch.scores to hold the block's
  // true contributions (the caller runs the block densely first).
  bool needs_contribution(int layer) const noexcept { return scorer_ == Scorer::oracle && routes(layer); }
  double capacity(int layer) const noexcept;

  // Causal selection for decoders: rows whose score passes the block's
  // threshold. positions and ids (one per row) seed the random scorer, so a
  // token's draw is the same in prefill and in decoding. Afterwards
  // scratch.scores holds every row's score (a native block scales by it).
  RowSelection select_causal(int layer, const float* hidden, int rows, int width, const std::int32_t* positions,
                             const std::int32_t* ids, RoutingScratch& scratch) const;

  // The rows `layer` processes, given its input (`hidden`, rows × width):
  // per sequence, the ⌈c·S⌉ best-scored rows, ascending. every_row() for a
  // block that is not routed. The span points into scratch.rows.
  RowSelection select(int layer, const float* hidden, int width, const TokenBatch& batch,
                      RoutingScratch& scratch) const;
  // FLOPs of scoring `rows` rows for `layer` (the learned router's dot products).
  double router_flops(int layer, int rows, int width) const noexcept;

 private:
  const Routing& routing_;
  Scorer scorer_;
  double capacity_override_;
  bool keep_first_;
  std::uint64_t seed_;
};

// A uniform draw in [0, 1) from (seed, layer, position, token).
float random_score(std::uint64_t seed, int layer, std::int64_t position, std::int32_t token);
// ‖after − before‖ / ‖before‖ per row: what a block changed.
void relative_change(const float* before, const float* after, int rows, int width, float* out);

// The oracle's scores: runs the block on every row (run_block()), keeps
// what it changed per row in scratch.scores, and puts the block's input back
// so the layer can start again. Not counted as work: an upper bound on
// quality, not a way to save it.
template <typename RunBlock>
void measure_contributions(float* hidden, int rows, int width, RoutingScratch& scratch, RunBlock&& run_block) {
  const std::size_t n = static_cast<std::size_t>(rows) * width;
  std::copy(hidden, hidden + n, scratch.before.data());
  run_block();
  scratch.scores.resize(rows);
  relative_change(scratch.before.data(), hidden, rows, width, scratch.scores.data());
  std::copy(scratch.before.data(), scratch.before.data() + n, hidden);
}

// r = w·norm(x) + b for each of `rows` rows of `hidden`.
void router_scores(const float* hidden, int rows, int width, const BlockRouter& router, float* scores);
// norm(x) of one row, as the router sees it.
void normalize_row(const float* x, int width, float* out);

}  // namespace skim::execute::mod

#pragma once
// What the fitters of calibrate/ share: calibration texts tokenized and
// packed once into encoder batches, and ridge regression with its strength
// chosen on held-out rows.
#include <Eigen/Dense>

#include <span>
#include <string>
#include <vector>

#include "engine/engine_impl.hpp"
#include "execute/token_batch.hpp"

namespace skim::calibration {

// Texts tokenized and packed back to back into batches the workspace holds.
struct Packed {
  std::vector<execute::TokenBatch> batches;
  std::size_t tokens = 0;
};
// Throws skim::Error(invalid_argument) naming a text with no tokens.
Packed pack(const Engine::Impl& engine, std::span<const std::string> texts);
execute::EncoderWorkspace encoder_workspace(const Engine::Impl& engine, const execute::acm::WidthGating* width = nullptr);

// A model's outputs: an encoder's classifier logits (or, without a
// classifier, the first row's last hidden state), one row per text; a
// decoder's next-token logits, one row per token; with the FLOPs spent.
struct ModelOutputs {
  std::vector<float> values;
  int width = 0;
  execute::FlopCount flops;
  std::size_t tokens = 0;
  std::size_t texts() const noexcept { return width ? values.size() / width : 0; }
  int argmax(std::size_t text) const;
};
// Batches packed once, in a workspace made once (fitters run the same texts
// many times), skipping what `skip` says.
ModelOutputs run_packed(const Engine::Impl& engine, const Packed& packed, const execute::Skipping& skip,
                          execute::EncoderWorkspace& ws);
// The same from texts, in a workspace of its own sized for `skip`.
ModelOutputs run_encoder_on(const Engine::Impl& engine, std::span<const std::string> texts,
                              const execute::Skipping& skip);
// Mean KL(reference ‖ other) of the classifier's softmax; without a
// classifier, the mean squared relative change of the output rows.
double output_change(const ModelOutputs& reference, const ModelOutputs& other, bool classifier);
// Share of texts whose argmax (the predicted label) is the same in both.
double argmax_agreement(const ModelOutputs& reference, const ModelOutputs& other);

// Normal equations of a ridge regression (features with a trailing 1 for
// the bias), accumulated over fitting or held-out rows.
struct Normal {
  Eigen::MatrixXd gram;
  Eigen::VectorXd moment;
  double yy = 0, y_sum = 0;
  std::size_t n = 0;
  explicit Normal(int features)
      : gram(Eigen::MatrixXd::Zero(features, features)), moment(Eigen::VectorXd::Zero(features)) {}
  void add(const Eigen::MatrixXf& x, const Eigen::VectorXf& y);
};

struct RidgeFit {
  Eigen::VectorXd weights;  // features, the bias last
  double alpha = 0;         // chosen strength, per row
  double held_out_r2 = 0;
};
// The strength (λ = α·n over a grid of α) with the best R² on `held_out`,
// then refitted on both. The bias is not shrunk.
RidgeFit ridge_with_held_out(const Normal& fitting, const Normal& held_out);

// Every `stride`-th text, the stride chosen so that about `max_tokens` of the
// texts' `tokens` remain: a spread of the texts to measure on.
std::size_t spread_stride(std::size_t tokens, std::size_t max_tokens);
std::vector<std::string> spread_sample(std::span<const std::string> texts, const Packed& packed, std::size_t max_tokens);

// Greedy allocation of compute over blocks (MoD layers, ACM FFNs): each block
// has levels from whole (0) down to kAllocationLevels[last]; cost[e][v] is the
// output change and saved[e][v] the FLOPs saved with block e alone at level
// v. Lowers by one level the block whose next level costs least output
// change per FLOP saved; returns it, or levels.size() when every block is at
// the last level.
inline constexpr double kAllocationLevels[] = {1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125};
inline constexpr int kAllocationLevelCount = static_cast<int>(std::size(kAllocationLevels));
std::size_t lower_cheapest(const std::vector<std::vector<double>>& cost, const std::vector<std::vector<double>>& saved,
                           std::vector<int>& levels);

// The value below which `share` of `values` lie.
float quantile(std::vector<float> values, double share);

}  // namespace skim::calibration

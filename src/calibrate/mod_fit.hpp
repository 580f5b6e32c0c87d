#pragma once
// Fitting Mixture-of-Depths routers onto a pre-trained encoder from forward
// passes alone (DESIGN.md, "Token level"): record each block's relative
// contribution ‖f(x)‖/‖x‖ per token, fit r = w·norm(x) + b to its log by
// ridge regression, then give capacity to the blocks whose routing the
// model's output feels least, per FLOP saved.
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calibrate/fitting.hpp"
#include "engine/engine_impl.hpp"
#include "execute/mod/token_routing.hpp"
#include "skim/calibrate.hpp"

namespace skim::calibration {

struct ModFitOptions {
  double capacity = 0;      // target mean capacity over the eligible blocks, or
  double flops_share = 0;   // target executed share of the encoder's dense FLOPs
  std::vector<int> layers;  // eligible blocks; empty: all but the first two and the last
  std::size_t max_sensitivity_tokens = 4096;  // tokens of the texts the allocation is measured on
  ProgressCallback progress;
};

struct ModFit {
  execute::mod::Routing routing;
  nlohmann::json report;  // per block: ridge λ, held-out R²; the allocation; what it costs
  std::vector<int> eligible;
  std::size_t tokens = 0;
  double flops_share = 1;  // executed / dense on the texts, with the fitted routing
  double seconds = 0;
};

// A decoder's outputs on a fixed sample of its calibration tokens with this
// token routing (nullptr: dense).
using RoutedRun = std::function<ModelOutputs(const execute::mod::Routing*)>;

// Decoders: routers for `layers` (as ModFitOptions::layers: empty means the
// default rule) fitted the same way on token sequences (each starting from
// BOS), with causal thresholds at the (1 − c) quantile of the calibration
// tokens' learned scores and true contributions for a block at capacity c.
// Without `measure` every block gets `capacity`; with it, `capacity` is the
// mean over the eligible blocks and is allocated greedily by the output
// change `measure` shows per FLOP saved, as for encoders (blocks left whole
// are not routed; the report gains the allocation and what it does).
execute::mod::Routing fit_decoder_routers(const execute::LlamaDecoder& decoder,
                                          std::span<const std::vector<std::int32_t>> sequences,
                                          const std::vector<int>& layers, double capacity, nlohmann::json& report,
                                          const RoutedRun& measure = {});

// Throws skim::Error for a target outside (0, 1], a layer outside the model,
// no eligible layer, or too few tokens to fit (saying how many are needed).
ModFit fit_mod_routers(const Engine::Impl& engine, std::span<const std::string> texts, const ModFitOptions& options);

}  // namespace skim::calibration

#pragma once
// The model fit_acm measures, encoder or decoder: it records the FFNs'
// inputs and activations in a dense pass over the calibration texts, then
// reruns them with candidate gates. The fitter itself never asks which kind
// of model it fits.
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "calibrate/fitting.hpp"
#include "execute/acm/adaptive_ffn.hpp"

namespace skim::calibration {

class AcmTarget {
 public:
  virtual ~AcmTarget() = default;

  execute::acm::Activation activation = execute::acm::Activation::gelu;
  int layers = 0, hidden = 0, ffn = 0;
  std::size_t tokens = 0;        // in the calibration texts
  std::size_t sample_texts = 0;  // in the spread the gates are measured on
  bool classifier = true;        // outputs are logits (change measured as KL)
  std::string check_on;          // what run(width, false) covers, for the report

  virtual execute::acm::FfnWeights ffn_weights(int layer) const = 0;
  // One dense pass (MoD routing included) over every text: `probe` sees the
  // FFNs of `layers`; held_out[r] marks the rows of held-out texts (every fifth).
  using Probe = std::function<void(int layer, const float* input, const float* activations, int rows,
                                   const char* held_out)>;
  virtual void record(const std::vector<int>& layers, const Probe& probe) = 0;
  // The MoD token routing of the passes that follow (nullptr: none); it must
  // outlive them.
  virtual void route(const execute::mod::Routing* mod) = 0;
  // Sizes the workspaces for `gating`'s adaptive FFNs; before run() with a width.
  virtual void prepare(const execute::acm::WidthGating& gating) = 0;
  // Outputs with `width` (nullptr: every FFN whole): on the spread of texts
  // (sample), or on what `check_on` says.
  virtual ModelOutputs run(const execute::acm::WidthRouting* width, bool sample) = 0;
};

// An encoder on the texts, batched as classify() does; `mod`, if given,
// routes tokens. The spread keeps about `sample_tokens` tokens.
std::unique_ptr<AcmTarget> encoder_target(const Engine::Impl& engine, const format::TensorSource& weights,
                                          std::span<const std::string> texts, const execute::mod::Routing* mod,
                                          std::size_t sample_tokens);
// A decoder's calibration documents as token sequences: BOS first, cut at
// the context. Throws skim::Error naming a document with no tokens.
std::vector<std::vector<std::int32_t>> decoder_sequences(const Engine::Impl& engine, std::span<const std::string> texts);
// A decoder on `sequences` (decoder_sequences; they must outlive the
// target), routed causally by `mod` if given; outputs are next-token logits,
// so the check runs on the spread too.
std::unique_ptr<AcmTarget> decoder_target(const Engine::Impl& engine, const format::TensorSource& weights,
                                          execute::DecoderNaming naming,
                                          std::span<const std::vector<std::int32_t>> sequences,
                                          const execute::mod::Routing* mod, std::size_t sample_tokens);

}  // namespace skim::calibration

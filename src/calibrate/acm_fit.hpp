#pragma once
// Fitting Adaptive Computation Modules onto a pre-trained model's FFNs
// from forward passes alone (DESIGN.md, "Width level"): order each FFN's
// neurons by importance E|a_j|·‖W2[:, j]‖, cut them into learners, correct
// each prefix by its mean residual c_k = E[FFN(x) − h_k(x)] (optionally
// refit each prefix's down projection by least squares first), and fit a gate
// that predicts, per token, the log relative error log(‖h_k + c_k −
// FFN(x)‖/‖x‖) of every prefix by ridge regression on the FFN input; a token
// then runs the first prefix whose predicted error is within its layer's ε.
// Each layer's ε is bisected to leave it a given share of its width, and the
// shares are allocated greedily by each layer's measured sensitivity.
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calibrate/acm_target.hpp"
#include "calibrate/fitting.hpp"
#include "execute/acm/adaptive_ffn.hpp"
#include "format/safetensors.hpp"
#include "skim/calibrate.hpp"

namespace skim::calibration {

struct AcmFitOptions {
  double budget = 0;        // target mean share of FFN width used, (0, 1]
  int learners = 0;         // per FFN; 0: FFN width / 256, within [4, 16]
  bool refit = false;       // least-squares refit of each prefix's down projection
  std::vector<int> layers;  // FFNs to make adaptive; empty: all
  std::size_t max_tokens = 16384;  // token rows per layer kept to fit gates and corrections
  ProgressCallback progress;
};

struct AcmFit {
  execute::acm::WidthSpec spec;          // what the package stores
  execute::acm::WidthGating gating;      // the same, packed (f32) and ready to run
  nlohmann::json report;
  double ffn_flops_share = 1;  // on the calibration texts, at the budget
  double agreement = 1;        // argmax agreement with the model without ACM (per text, or per token of a decoder)
  double seconds = 0;
};

// Tokens of the calibration texts each layer's sensitivity is measured on
// (AcmTarget's spread).
inline constexpr std::size_t kAcmSensitivityTokens = 2048;

// On `target` (whose token routing, if any, the gates then learn the FFN
// inputs of). Throws skim::Error for a budget outside (0, 1], learners
// outside [1, FFN width], a layer outside the model, or too few tokens
// (saying how many).
AcmFit fit_acm(AcmTarget& target, const kernels::Backend& backend, const AcmFitOptions& options);

// The learner count used when none is asked for.
int default_learners(int ffn_width);

}  // namespace skim::calibration

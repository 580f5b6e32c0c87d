#pragma once
// Offline fitting, from forward passes and data alone: the meaning-first
// router (train the n-gram proposer, run the transformer on calibration
// data, certify the gate) and Mixture-of-Depths token routers, written as the
// model package (skim.json + skim.safetensors) the Engine then loads.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "skim/data.hpp"
#include "skim/router.hpp"

namespace skim {

// Called on long steps: stage name, items done, items in total.
using ProgressCallback = std::function<void(std::string_view stage, std::size_t done, std::size_t total)>;

// Fluent: CalibrateOptions().epsilon(0.01).delta(0.05).
class CalibrateOptions {
 public:
  // Target risk ε and confidence 1 − δ; both in (0, 1).
  CalibrateOptions& epsilon(double e);
  CalibrateOptions& delta(double d);
  CalibrateOptions& risk(Risk r) { risk_ = r; return *this; }
  // One certificate per proposed label, each at δ/G.
  CalibrateOptions& per_label(bool on) { per_label_ = on; return *this; }
  // JSON rules file ([{"label": ..., "regex": ...} or {"label": ..., "keywords": [...]}]).
  CalibrateOptions& rules(std::filesystem::path file) { rules_ = std::move(file); return *this; }
  // Labels whose answers the cache must never hold (e.g. time-sensitive ones).
  CalibrateOptions& never_cache(std::vector<std::string> labels) { never_cache_ = std::move(labels); return *this; }
  // Unlabeled utterances, one per line, that the transformer labels for the
  // proposer to train on beside TRAIN: it learns where the transformer's
  // answers go, which is what the gate measures it against.
  CalibrateOptions& distill(std::filesystem::path file) { distill_ = std::move(file); return *this; }
  // Mixture-of-Depths: fit token routers on the calibration texts so that
  // routed blocks process on average this share of each text's tokens, or
  // so that the encoder executes this share of its dense FLOPs. (0, 1].
  CalibrateOptions& mod_capacity(double c);
  CalibrateOptions& mod_flops(double share);
  // Blocks the routers may route (default: all but the first two and the last).
  CalibrateOptions& mod_layers(std::vector<int> layers) { mod_layers_ = std::move(layers); return *this; }
  // Adaptive Computation Modules: split each FFN into learners and fit
  // per-token gates so that FFNs use on average this share of their width,
  // (0, 1]. With MoD too, the gates are fitted on the routed model.
  CalibrateOptions& acm_budget(double b);
  // Learners per FFN (0: FFN width / 256, within [4, 16]); FFNs to adapt (default all).
  CalibrateOptions& acm_learners(int n);
  // Refit each prefix's down projection by least squares on the calibration
  // texts' activations (module-wise distillation in closed form), so a token
  // that stops early is closer to the FFN.
  CalibrateOptions& acm_refit(bool on) { acm_refit_ = on; return *this; }
  CalibrateOptions& acm_layers(std::vector<int> layers) { acm_layers_ = std::move(layers); return *this; }
  // Where to write skim.json and skim.safetensors (default: the model directory).
  CalibrateOptions& out(std::filesystem::path dir) { out_ = std::move(dir); return *this; }
  CalibrateOptions& threads(int n) { threads_ = n; return *this; }
  // n-gram proposer: hash buckets, embedding width, SGD epochs, seed (0: defaults).
  CalibrateOptions& ngram_buckets(std::size_t n) { ngram_buckets_ = n; return *this; }
  CalibrateOptions& ngram_dim(std::size_t n) { ngram_dim_ = n; return *this; }
  CalibrateOptions& ngram_epochs(int n) { ngram_epochs_ = n; return *this; }
  CalibrateOptions& seed(std::uint64_t s) { seed_ = s; return *this; }
  CalibrateOptions& progress(ProgressCallback p) { progress_ = std::move(p); return *this; }

  double epsilon() const noexcept { return epsilon_; }
  double delta() const noexcept { return delta_; }
  Risk risk() const noexcept { return risk_; }
  bool per_label() const noexcept { return per_label_; }
  const std::filesystem::path& rules() const noexcept { return rules_; }
  const std::vector<std::string>& never_cache() const noexcept { return never_cache_; }
  const std::filesystem::path& out() const noexcept { return out_; }
  const std::filesystem::path& distill() const noexcept { return distill_; }
  int threads() const noexcept { return threads_; }
  std::size_t ngram_buckets() const noexcept { return ngram_buckets_; }
  std::size_t ngram_dim() const noexcept { return ngram_dim_; }
  int ngram_epochs() const noexcept { return ngram_epochs_; }
  std::uint64_t seed() const noexcept { return seed_; }
  const ProgressCallback& progress() const noexcept { return progress_; }
  double mod_capacity() const noexcept { return mod_capacity_; }
  double mod_flops() const noexcept { return mod_flops_; }
  const std::vector<int>& mod_layers() const noexcept { return mod_layers_; }
  bool fits_mod() const noexcept { return mod_capacity_ > 0 || mod_flops_ > 0; }
  double acm_budget() const noexcept { return acm_budget_; }
  int acm_learners() const noexcept { return acm_learners_; }
  bool acm_refit() const noexcept { return acm_refit_; }
  const std::vector<int>& acm_layers() const noexcept { return acm_layers_; }
  bool fits_acm() const noexcept { return acm_budget_ > 0; }

 private:
  double epsilon_ = 0.01;
  double delta_ = 0.05;
  Risk risk_ = Risk::selective;
  bool per_label_ = false;
  std::filesystem::path rules_;
  std::vector<std::string> never_cache_;
  std::filesystem::path out_;
  std::filesystem::path distill_;
  int threads_ = 0;
  std::size_t ngram_buckets_ = 0;
  std::size_t ngram_dim_ = 0;
  int ngram_epochs_ = 0;
  std::uint64_t seed_ = 0;
  ProgressCallback progress_;
  double mod_capacity_ = 0;
  double mod_flops_ = 0;
  std::vector<int> mod_layers_;
  double acm_budget_ = 0;
  int acm_learners_ = 0;
  bool acm_refit_ = false;
  std::vector<int> acm_layers_;
};

struct CalibrationReport {
  Certificate certificate;
  std::filesystem::path skim_json;
  std::filesystem::path skim_safetensors;
  std::size_t train_rows = 0;
  std::size_t calibration_rows = 0;
  std::size_t rule_rows = 0;               // calibration rows the rules answered (not certified: the user vouches)
  std::size_t distill_rows = 0;            // unlabeled utterances the transformer labelled for the proposer
  double proposer_train_seconds = 0;
  double proposer_accuracy = 0;            // on the calibration labels
  double transformer_accuracy = 0;         // on the calibration labels
  double agreement = 0;                    // proposer vs transformer, all calibration rows
  double transformer_seconds = 0;
  // Mixture-of-Depths, when fitted: routed blocks and their capacities, the
  // executed share of the encoder's dense FLOPs and the argmax agreement with
  // the dense model on the calibration texts.
  bool has_proposer = false;
  std::vector<int> mod_layers;
  std::vector<double> mod_capacities;
  double mod_flops_share = 1;
  double mod_agreement = 1;
  double mod_seconds = 0;
  // Adaptive Computation Modules, when fitted: adapted FFNs, learners each,
  // the executed share of the FFNs' dense FLOPs and the argmax agreement
  // with the model without ACM (MoD included), on the calibration texts.
  std::vector<int> acm_layers;
  int acm_learners = 0;
  double acm_ffn_flops_share = 1;
  double acm_agreement = 1;
  double acm_seconds = 0;
};

// With MoD asked for, first fits the token routers on `calibration`'s texts;
// with ACM asked for, then the FFN gates. Then, unless `train` is empty
// (MoD/ACM alone), trains the proposer on `train`,
// runs the model (with its new routing) on `calibration`, and certifies the
// gate. Writes the package. Throws skim::Error for labels the model does not
// know (naming the row), an empty set, ε or δ outside (0, 1), a MoD target
// or ACM budget outside (0, 1], too few calibration tokens, or a bad rules file.
CalibrationReport calibrate(const std::filesystem::path& model_dir, std::span<const LabelledText> train,
                            std::span<const LabelledText> calibration, const CalibrateOptions& options = {});

// A decoder (GGUF, llama2.c or Hugging Face), fitted on plain documents (no
// labels): Mixture-of-Depths routers (mod_capacity: every block of
// mod_layers at that capacity, causal thresholds) and/or ACM gates
// (acm_budget), written as the model's package (beside a single-file model
// as <file>.skim.json and <file>.skim.safetensors). The report's agreements
// are next-token top-1 agreements with the dense model. Throws skim::Error for
// an encoder, a native Mixture-of-Depths checkpoint, neither MoD nor ACM
// asked for, mod_flops (not supported for decoders), no documents, or too
// few tokens.
CalibrationReport calibrate_text(const std::filesystem::path& model, std::span<const std::string> documents,
                                 const CalibrateOptions& options = {});

}  // namespace skim

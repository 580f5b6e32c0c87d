#pragma once
// The meaning-first router of a classification engine: its package on disk
// (skim.json + skim.safetensors, written by skim-calibrate) and its live
// state (answer cache, rules, n-gram proposer, gate monitor, counters).
#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "execute/acm/adaptive_ffn.hpp"
#include "execute/mod/token_routing.hpp"
#include "gate/monitor.hpp"
#include "propose/ngram.hpp"
#include "propose/response_cache.hpp"
#include "propose/rules.hpp"
#include "skim/options.hpp"
#include "skim/router.hpp"

namespace skim {

// What skim.json and skim.safetensors hold: the meaning-first router (when
// a proposer is present), Mixture-of-Depths routers and ACM gates (when
// fitted), in any combination.
struct RouterPackage {
  std::string model_hash;           // model_content_hash of the model it was calibrated for
  std::vector<std::string> labels;  // the model's id2label
  std::optional<execute::mod::Routing> mod;
  nlohmann::json mod_fit = nlohmann::json::object();  // how the MoD routers were fitted
  std::optional<execute::acm::WidthSpec> acm;          // adaptive FFNs (ACM)
  nlohmann::json acm_fit = nlohmann::json::object();  // how their gates were fitted
  std::optional<propose::NgramClassifier> proposer;
  propose::RuleSet rules;
  std::vector<std::string> never_cache;
  Certificate certificate;
  nlohmann::json calibration = nlohmann::json::object();  // how it was made (rows, seconds, accuracies)
};

inline constexpr const char* kPackageJson = "skim.json";
inline constexpr const char* kPackageTensors = "skim.safetensors";

// Where a model's package lives: skim.json and skim.safetensors inside a
// model directory; beside a single-file model (GGUF, llama2.c) as
// <file>.skim.json and <file>.skim.safetensors, so two files in one
// directory keep their own. `out`, when given, holds them instead.
struct PackageFiles {
  std::filesystem::path json, tensors;
};
PackageFiles package_files(const std::filesystem::path& model, const std::filesystem::path& out = {});

// A hash of the model files (config.json, vocabulary, weights; not skim.*),
// or of a single-file model's one file, so a package cannot be used with a
// model it was not calibrated for.
std::string model_content_hash(const std::filesystem::path& model);
// The proposer stack a certificate is tied to: n-gram weights and rules.
std::string proposer_stack_version(const propose::NgramClassifier& proposer, const propose::RuleSet& rules);

// Writes both files, each atomically.
void write_package(const PackageFiles& files, const RouterPackage& package);
// The model a package must fit.
struct PackageModel {
  std::vector<std::string> labels;  // id2label (none for a decoder)
  std::string hash;                 // model_content_hash
  int layers = 0, hidden_size = 0;  // for MoD routers and ACM gates
  int ffn_size = 0;                 // for ACM neuron orders
  // The FFNs' activation: distilled SwiGLU learners' up is gate rows then up
  // rows ([2·width, hidden]) and has no bias.
  execute::acm::Activation activation = execute::acm::Activation::gelu;
};

// Reads and validates the package in `dir` for `model`; skim::Error naming
// the file and field otherwise. A certificate made for another proposer
// version is voided (uncertified, with the reason), not an error.
RouterPackage read_package(const PackageFiles& files, const PackageModel& model);

class Router {
 public:
  Router(RouterPackage package, const Options& options);

  const propose::NgramClassifier& proposer() const { return *package_.proposer; }
  const propose::RuleSet& rules() const { return package_.rules; }
  propose::ResponseCache& cache() const { return cache_; }
  gate::Monitor& monitor() const { return monitor_; }
  // Model and proposer versions: what cache entries are written under.
  const std::string& version() const { return version_; }
  // The request id to shadow-sample on: the caller's, else a fresh one.
  std::string request_id(const Request& request, std::size_t index, std::size_t count) const;

  RouterStats stats() const;

  // Counters (relaxed: statistics, not synchronisation).
  mutable std::atomic<std::uint64_t> calls{0}, transformer_calls{0}, cache_hits{0}, rule_hits{0}, shadowed{0},
      shadow_disagreements{0};

 private:
  RouterPackage package_;
  std::string version_;
  mutable propose::ResponseCache cache_;
  mutable gate::Monitor monitor_;
  mutable std::atomic<std::uint64_t> next_request_{0};
};

}  // namespace skim

#pragma once
// The meaning-first router's public face: the certificate that lets the gate
// answer without the transformer, the per-request identity the cache and the
// monitor key on, and the live statistics.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace skim {

// What the certificate bounds. selective: P(the proposal disagrees with the
// transformer | the gate accepted it). joint: P(accepted and disagrees).
enum class Risk { selective, joint };
std::string_view to_string(Risk risk) noexcept;

// A Learn-then-Test certificate: with probability ≥ 1 − delta over the draw of
// the calibration set, the risk of accepting proposals scored ≥ threshold is
// ≤ epsilon (for inputs distributed like the calibration set). The reference
// is the transformer's own answer, so no labels are needed.
struct Certificate {
  bool certified = false;
  std::string reason;  // why not, when not certified
  Risk risk = Risk::selective;
  double epsilon = 0;
  double delta = 0;
  std::size_t n = 0;              // calibration samples
  std::size_t accepted = 0;       // of them, accepted at the threshold
  std::size_t disagreements = 0;  // of the accepted, disagreeing with the transformer
  double empirical_risk = 0;
  double upper_bound = 1;  // Clopper–Pearson (1 − delta) upper bound of the risk
  double coverage = 0;     // accepted / n: the expected share of transformer calls avoided
  double threshold = std::numeric_limits<double>::infinity();
  std::vector<double> label_thresholds;  // per-label certificates (δ/G each); empty otherwise
  std::string data_hash;         // of the calibration texts and transformer answers
  std::string proposer_version;  // a retrained proposer or new rules void the certificate
};

// Who is asking. The cache never serves one tenant's answers to another; the
// id decides (by hash, reproducibly) whether an accepted proposal is also
// shadow-executed to monitor the certificate.
class Request {
 public:
  Request& tenant(std::string t) { tenant_ = std::move(t); return *this; }
  Request& id(std::string i) { id_ = std::move(i); return *this; }
  const std::string& tenant() const noexcept { return tenant_; }
  const std::string& id() const noexcept { return id_; }

 private:
  std::string tenant_;
  std::string id_;
};

// normal: certified proposals are answered; collecting: after an alarm (or
// while uncertified) every request runs the transformer and feeds a fresh
// calibration set; off: no router (no skim.json, or Options::router(false)).
enum class GateState { off, normal, collecting };
std::string_view to_string(GateState state) noexcept;

// Counters run over the engine's life; the live estimate and the e-value
// are for the certificate in force (they restart when it is replaced).
struct RouterStats {
  GateState state = GateState::off;
  std::uint64_t calls = 0;
  std::uint64_t transformer_calls = 0;  // requests that ran the transformer (shadows included)
  std::uint64_t cache_hits = 0;
  std::uint64_t rule_hits = 0;
  std::uint64_t accepted = 0;  // proposer answers the gate accepted
  std::uint64_t shadowed = 0;  // of those, also run through the transformer
  std::uint64_t shadow_disagreements = 0;
  double live_disagreement = 0;  // among shadowed, under the certificate in force
  double live_upper_bound = 1;   // its Clopper–Pearson (1 − α) bound
  double e_value = 1;            // the monitor's e-process; alarm at 1/α
  std::uint64_t alarms = 0;
  std::uint64_t recalibrations = 0;
  Certificate certificate;  // the one in force
};

}  // namespace skim

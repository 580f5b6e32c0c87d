#pragma once
// Live monitoring of a certified gate. A certificate holds for the traffic it
// was calibrated on; when traffic shifts, the proposer's disagreement rate
// can rise above ε. A share π of the accepted proposals is also run through
// the transformer ("shadowed"); an e-process over what they show (a mixture
// over bets and start times) raises an alarm with probability at most α over
// the whole stream if the rate stays at most ε (Ville's inequality), and soon
// after it rises above, however long the stream was quiet before.
// On alarm the gate executes everything, which labels fresh calibration
// samples for free, and certifies again on them.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gate/certificate.hpp"

namespace skim::gate {

// Whether the request with this id is shadow-executed: a 64-bit hash of the
// id (FNV-1a, then the splitmix64 finaliser) mapped to [0, 1), compared with
// `rate`. Deterministic, so a replayed request makes the same choice and the
// choice is recorded by the id alone.
bool shadow_selected(std::string_view request_id, double rate) noexcept;

// Tests H0: E[X] <= ε on the stream X_i = shadowed_i · disagree_i / π over
// accepted proposals (unbiased for the disagreement rate, since shadowing is
// independent of the request's outcome). A bet w in [0, 1/ε) multiplies its
// wealth by e_i = 1 + w (X_i − ε) per observation (> 0, and E[e_i] <= 1
// under H0); K bets w_k = 2^-(k+1)/ε, k = 0..K−1 (0.5/ε down to ~5e-7/ε for
// K = 20: the best bet scales with π and the shift, so the grid spans
// decades).
//
// A wealth started at the first observation decays through any quiet time
// (rate below ε), so a shift after a long quiet time would first have to
// earn that loss back. So each bet also mixes over start times: a start is
// placed before observations 1, B + 1, 2B + 1, … (block m starts at mB + 1)
// with weight v_m, and S_t = Σ_{starts j <= t} v_j Π_{i=j..t} e_i, kept by
// S_t = e_t (S_{t−1} + v_t) (v_t = 0 between starts), in log space. The
// weights telescope, v_m = F(m) − F(m+1) with F(m) = ln 2 / ln(m + 2), so
// F(0) = 1 is their total and F(m) the weight of the starts not yet placed
// (v_m ~ 1/(m log² m): summable, yet a late start is cheap). M_t is the
// mean over bets of S_t plus that reserve F; it starts at 1.
//
// Validity: under H0, E[S_t | past] <= S_{t−1} + v_t and F drops by exactly
// v_t, so S_t + F is a nonnegative supermartingale from 1, for every bet and
// so for their mean. Ville's inequality: P(M_t ever >= 1/α | H0) <= α, over
// the whole stream. Alarm then (sticky until reset()).
//
// A shift to rate r after t quiet observations alarms roughly when the best
// bet's newest start has earned log(K / (α v_m)) nats, m = ⌈t/B⌉: a delay
// ≈ log(K / (α v_m)) / g, g = πr log(1 + w(1/π − ε)) + (1 − πr) log(1 − wε),
// the extra price of lateness log(1/v_m) ≈ log m + 2 log log m nats.
// Without restarts the price was the quiet time's whole loss. Simulated at
// ε = 1%, π = 10%, α = 1%, quiet at ε/2, then 3ε: median delays ≈ 5k after
// no quiet time either way; after 10^5 quiet observations 11k (50k without
// restarts), after 10^6 12.5k (320k). These weights beat v_m =
// 1/((m+1)(m+2)), F(m) = 1/(m+1): the same at no quiet time, 10–25%
// shorter after 10^4–10^6. B = 100 (the default) makes a shift wait at most
// B observations for its first start, little next to the delays (~400
// observations for a shift to 10ε, ~5000 to 3ε); a larger B lowers the
// price of lateness only through m (B = 1000: up to ~10% shorter after
// long quiet times, ~15% longer at a shift to 10ε without one). Placing a start
// costs O(K); an observation X = 0 only counts, and the bets catch up at the
// next start or X > 0. Not thread-safe (Monitor locks it).
class EProcess {
 public:
  static constexpr std::size_t default_bets = 20;
  static constexpr std::size_t default_block_size = 100;

  // Throws skim::Error(invalid_argument) for ε or α outside (0, 1), π
  // outside (0, 1], no bets or a block size of 0.
  EProcess(double epsilon, double shadow_rate, double alpha, std::size_t bets = default_bets,
           std::size_t block_size = default_block_size);

  // One accepted proposal; `disagree` counts only when it was shadowed.
  void observe(bool shadowed, bool disagree) noexcept;
  double log_value() const noexcept;                     // log M_t (0 at the start)
  bool alarmed() const noexcept { return alarmed_; }     // sticky until reset()
  std::size_t count() const noexcept { return count_; }  // observations
  std::size_t shadowed() const noexcept { return shadowed_; }
  std::size_t disagreements() const noexcept { return disagreements_; }  // among shadowed
  // Among the shadowed: the share that disagreed (0 before any), and its
  // one-sided Clopper–Pearson upper (1 − α) bound (1 before any). A
  // fixed-time bound, for reading, not the alarm.
  double disagreement_rate() const noexcept;
  double disagreement_upper_bound() const;
  void reset() noexcept;  // wealth, starts, counts and alarm back to the start

  const std::vector<double>& bets() const noexcept { return bets_; }
  std::size_t block_size() const noexcept { return block_size_; }
  // log v_m, the weight of the start before observation mB + 1.
  static double log_start_weight(std::size_t block) noexcept;
  double epsilon() const noexcept { return epsilon_; }
  double shadow_rate() const noexcept { return shadow_rate_; }
  double alpha() const noexcept { return alpha_; }

 private:
  void place_start() noexcept;
  void settle_misses() noexcept;

  double epsilon_, shadow_rate_, alpha_;
  std::size_t block_size_;
  double log_threshold_;               // log(1/α)
  std::vector<double> bets_;
  std::vector<double> log_step_miss_;  // log(1 + w (0 − ε)) per bet
  std::vector<double> log_step_hit_;   // log(1 + w (1/π − ε)) per bet
  std::vector<double> log_wealth_;     // log S_t per bet, missing the unsettled misses
  std::size_t unsettled_misses_ = 0;   // X = 0 observations not yet applied to log_wealth_
  std::size_t next_block_ = 0;         // starts placed so far
  std::size_t next_start_ = 0;         // observations before the next start
  double log_reserve_ = 0;             // log F(next_block_): weight of the starts to come
  std::size_t count_ = 0, shadowed_ = 0, disagreements_ = 0;
  bool alarmed_ = false;
};

// The public skim::GateState: a Monitor is only ever normal (accepted
// proposals answered, a share π shadow-executed) or collecting (after an
// alarm or while uncertified: everything executes, feeding calibration).
using skim::GateState;

struct MonitorOptions {
  // π, in [0, 1]. 0 turns live monitoring off: nothing is shadowed and no
  // alarm is ever raised, so the certificate is trusted unchecked.
  double shadow_rate = 0.05;
  double alpha = 0.01;        // the alarm's false-alarm probability, in (0, 1)
  // Fresh samples certify() runs on to leave `collecting`; when it fails the
  // window slides (the oldest sample goes) and certify() runs again every
  // `recalibration_retry` new samples (0 = recalibration_samples / 20, at least 1).
  std::size_t recalibration_samples = 3000;
  std::size_t recalibration_retry = 0;
  CertifyOptions certify;  // for recalibration
};

// What to do with one request, and the token to record its outcome with.
struct Decision {
  bool accept = false;   // answer with the proposal
  bool shadow = false;   // accepted and shadow-selected: also run the transformer, then record_shadow
  bool collect = false;  // executed while collecting: record_collected with the proposal's sample
  // The monitor epoch the decision was made in (0 = a fail-closed decision);
  // records from an epoch that has ended (an alarm or a recalibration since)
  // are counted and dropped, so they never feed a new e-process.
  std::uint64_t epoch = 0;
};

struct MonitorStats {
  GateState state = GateState::collecting;
  std::uint64_t epoch = 0;
  std::size_t decisions = 0;  // decide() calls
  std::size_t accepted = 0;   // decisions to answer with the proposal
  std::size_t executed = 0;   // decisions to execute (below threshold, collecting or failed)
  // Since the current certificate was installed (frozen at an alarm):
  std::size_t observed = 0;              // accepted outcomes recorded
  std::size_t shadowed = 0;              // of which shadow-executed
  std::size_t shadow_disagreements = 0;  // of which disagreed
  double disagreement_rate = 0;          // shadow_disagreements / shadowed
  double disagreement_upper_bound = 1;   // Clopper–Pearson upper (1 − α) bound on it
  double log_e_value = 0;                // log M_t of the e-process
  std::size_t alarms = 0;
  std::size_t recalibrations = 0;  // certificates installed from collected samples
  std::size_t collected = 0;       // samples in the recalibration window now
  std::size_t stale_records = 0;   // records dropped for an ended epoch
  std::string last_recalibration_failure;  // why the last recalibration attempt failed, if it did
  Certificate certificate;                 // current
};

// The gate's live state machine, shared by all threads of an engine (one
// mutex). Per request:
//   Decision d = monitor.decide(score, label, request_id);
//   d.accept && d.shadow   → answer the proposal, run the transformer, record_shadow(d, disagree)
//                            (a failed shadow run counts as a disagreement: fail closed)
//   d.accept && !d.shadow  → answer the proposal, record_accepted_unshadowed(d)
//   !d.accept              → run the transformer; if d.collect, record_collected(d, {score, disagree, label})
// For a joint-risk certificate call decide() for every request the
// certificate's n counted: rejected ones then enter the e-process as X = 0.
class Monitor {
 public:
  // Starts `normal` with a certified certificate, else `collecting`. Throws
  // skim::Error(invalid_argument) for π outside [0, 1], α or the certify
  // options' ε, δ outside (0, 1), recalibration_samples == 0, or a certified
  // certificate whose ε is outside (0, 1).
  Monitor(Certificate certificate, MonitorOptions options);
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  // Accept only in `normal` under the current certificate; any internal
  // failure yields a plain execute (fail closed).
  Decision decide(double score, int label, std::string_view request_id) noexcept;

  // Outcomes of accepted decisions. Throws skim::Error(invalid_argument) when
  // the decision does not match (record_shadow for a decision not accepted
  // and shadow-selected, record_accepted_unshadowed for one that is not
  // accepted or is shadow-selected): a misreport would bias the e-process.
  void record_shadow(const Decision& decision, bool disagree);
  void record_accepted_unshadowed(const Decision& decision);
  // A labelled sample from a request executed while collecting. Throws
  // skim::Error(invalid_argument) for a score that is NaN or outside [0, 1].
  void record_collected(const Decision& decision, const CalibrationSample& sample);

  MonitorStats stats() const;
  Certificate current_certificate() const;
  GateState state() const;

 private:
  void observe_locked(bool shadowed, bool disagree);
  void enter_collecting_locked();
  void try_recalibrate_locked();
  void start_eprocess_locked();
  bool current_locked(const Decision& decision) const noexcept;

  const MonitorOptions options_;
  const std::size_t retry_every_;
  mutable std::mutex mutex_;
  GateState state_ = GateState::collecting;
  std::uint64_t epoch_ = 1;
  Certificate certificate_;
  std::optional<EProcess> eprocess_;  // once a certificate has been in force, unless π = 0
  std::deque<CalibrationSample> window_;
  std::size_t since_attempt_ = 0;
  std::size_t decisions_ = 0, accepted_ = 0, executed_ = 0;
  std::size_t alarms_ = 0, recalibrations_ = 0, stale_records_ = 0;
  std::string last_recalibration_failure_;
};

}  // namespace skim::gate

#include "gate/monitor.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numbers>
#include <sstream>

#include "skim/error.hpp"

namespace skim::gate {

namespace {

constexpr std::uint64_t fnv_offset = 0xcbf29ce484222325ull;
constexpr std::uint64_t fnv_prime = 0x100000001b3ull;

void fnv1a(std::uint64_t& hash, const void* data, std::size_t size) noexcept {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= fnv_prime;
  }
}

// FNV-1a alone mixes its last bytes poorly into the high bits, and ids often
// differ only in a trailing counter; the finaliser spreads every bit.
std::uint64_t splitmix64_finalize(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::string number(double value) {
  std::ostringstream out;
  out.precision(6);
  out << value;
  return out.str();
}

void require(bool ok, const std::string& message) {
  if (!ok) throw Error(ErrorCode::invalid_argument, message);
}
// The record_* checks run per request: their message is made only to be thrown.
void require(bool ok, const char* message) {
  if (!ok) throw Error(ErrorCode::invalid_argument, message);
}

// Names the samples a recalibrated certificate was computed from.
std::string hash_samples(const std::vector<CalibrationSample>& samples) {
  std::uint64_t hash = fnv_offset;
  for (const CalibrationSample& sample : samples) {
    const std::uint64_t score_bits = std::bit_cast<std::uint64_t>(sample.score);
    const unsigned char disagree = sample.disagree ? 1 : 0;
    const std::int32_t label = sample.label;
    fnv1a(hash, &score_bits, sizeof score_bits);
    fnv1a(hash, &disagree, sizeof disagree);
    fnv1a(hash, &label, sizeof label);
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(splitmix64_finalize(hash)));
  return std::string("monitor-fnv1a64:") + text;
}

}  // namespace

bool shadow_selected(std::string_view request_id, double rate) noexcept {
  std::uint64_t hash = fnv_offset;
  fnv1a(hash, request_id.data(), request_id.size());
  // The top 53 bits as a double in [0, 1).
  const double u = static_cast<double>(splitmix64_finalize(hash) >> 11) * 0x1.0p-53;
  return u < rate;  // false for a NaN rate
}

// ---- EProcess ----------------------------------------------------------------

namespace {

constexpr double log_zero = -std::numeric_limits<double>::infinity();

// log(e^a + e^b), exact for either being log 0.
double log_add_exp(double a, double b) noexcept {
  if (a < b) std::swap(a, b);
  if (b == log_zero) return a;
  return a + std::log1p(std::exp(b - a));
}

// log F(m) = log(ln 2 / ln(m + 2)): the weight of the starts at blocks m, m + 1, ….
double log_start_tail(std::size_t block) noexcept {
  return std::log(std::numbers::ln2) - std::log(std::log(static_cast<double>(block) + 2));
}

}  // namespace

double EProcess::log_start_weight(std::size_t block) noexcept {
  // v_m = F(m) − F(m+1) = ln 2 · ln(1 + 1/(m+2)) / (ln(m+2) ln(m+3)), without
  // the cancellation of the difference for large m.
  const double m = static_cast<double>(block);
  return std::log(std::numbers::ln2) + std::log(std::log1p(1 / (m + 2))) - std::log(std::log(m + 2)) -
         std::log(std::log(m + 3));
}

EProcess::EProcess(double epsilon, double shadow_rate, double alpha, std::size_t bets, std::size_t block_size)
    : epsilon_(epsilon), shadow_rate_(shadow_rate), alpha_(alpha), block_size_(block_size) {
  require(epsilon > 0 && epsilon < 1, "EProcess: epsilon must be in (0, 1), got " + number(epsilon));
  require(shadow_rate > 0 && shadow_rate <= 1, "EProcess: shadow rate must be in (0, 1], got " + number(shadow_rate));
  require(alpha > 0 && alpha < 1, "EProcess: alpha must be in (0, 1), got " + number(alpha));
  require(bets > 0, "EProcess: needs at least one bet");
  require(block_size > 0, "EProcess: block size must be at least 1");
  log_threshold_ = -std::log(alpha);
  // X takes two values, 0 and 1/π, so each bet's log step is precomputed.
  const double hit = 1 / shadow_rate;
  for (std::size_t k = 0; k < bets; ++k) {
    const double w = std::ldexp(1.0, -static_cast<int>(k) - 1) / epsilon;
    bets_.push_back(w);
    log_step_miss_.push_back(std::log1p(-w * epsilon));
    log_step_hit_.push_back(std::log1p(w * (hit - epsilon)));
  }
  reset();
}

void EProcess::settle_misses() noexcept {
  if (unsettled_misses_ == 0) return;
  const auto misses = static_cast<double>(unsettled_misses_);
  for (std::size_t k = 0; k < log_wealth_.size(); ++k) log_wealth_[k] += misses * log_step_miss_[k];
  unsettled_misses_ = 0;
}

void EProcess::place_start() noexcept {
  settle_misses();
  const double log_weight = log_start_weight(next_block_);
  for (double& log_wealth : log_wealth_) log_wealth = log_add_exp(log_wealth, log_weight);
  ++next_block_;
  log_reserve_ = log_start_tail(next_block_);
  // Saturates for a block size past any stream: no further starts.
  constexpr std::size_t never = std::numeric_limits<std::size_t>::max();
  next_start_ = next_block_ > never / block_size_ ? never : next_block_ * block_size_;
}

void EProcess::observe(bool shadowed, bool disagree) noexcept {
  if (count_ == next_start_) place_start();
  ++count_;
  const bool hit = shadowed && disagree;
  shadowed_ += shadowed ? 1 : 0;
  disagreements_ += hit ? 1 : 0;
  // X = 0 shrinks every wealth, and a start only moves weight from the
  // reserve into them, so M_t falls: only a hit can cross 1/α. The bets
  // catch up on the misses at the next start or hit.
  if (!hit) {
    ++unsettled_misses_;
    return;
  }
  settle_misses();
  for (std::size_t k = 0; k < log_wealth_.size(); ++k) log_wealth_[k] += log_step_hit_[k];
  if (!alarmed_ && log_value() >= log_threshold_) alarmed_ = true;
}

double EProcess::log_value() const noexcept {
  // log(reserve + mean of exp(log S)): log-sum-exp around the largest term.
  const auto misses = static_cast<double>(unsettled_misses_);
  const auto settled = [&](std::size_t k) { return log_wealth_[k] + misses * log_step_miss_[k]; };
  double top = log_zero;
  for (std::size_t k = 0; k < log_wealth_.size(); ++k) top = std::max(top, settled(k));
  if (top == log_zero) return log_reserve_;  // no start placed yet
  double sum = 0;
  for (std::size_t k = 0; k < log_wealth_.size(); ++k) sum += std::exp(settled(k) - top);
  return log_add_exp(top + std::log(sum / static_cast<double>(log_wealth_.size())), log_reserve_);
}

double EProcess::disagreement_rate() const noexcept {
  return shadowed_ == 0 ? 0 : static_cast<double>(disagreements_) / static_cast<double>(shadowed_);
}

double EProcess::disagreement_upper_bound() const {
  return shadowed_ == 0 ? 1 : clopper_pearson_upper(disagreements_, shadowed_, alpha_);
}

void EProcess::reset() noexcept {
  log_wealth_.assign(bets_.size(), log_zero);  // S_0 = 0: all the weight still in reserve
  unsettled_misses_ = next_block_ = next_start_ = 0;
  log_reserve_ = 0;  // F(0) = 1: M_0 = 1
  count_ = shadowed_ = disagreements_ = 0;
  alarmed_ = false;
}

// ---- Monitor -----------------------------------------------------------------

Monitor::Monitor(Certificate certificate, MonitorOptions options)
    : options_(std::move(options)),
      retry_every_(options_.recalibration_retry > 0 ? options_.recalibration_retry
                                                    : std::max<std::size_t>(1, options_.recalibration_samples / 20)),
      certificate_(std::move(certificate)) {
  require(options_.shadow_rate >= 0 && options_.shadow_rate <= 1,
          "MonitorOptions.shadow_rate must be in [0, 1], got " + number(options_.shadow_rate));
  require(options_.alpha > 0 && options_.alpha < 1, "MonitorOptions.alpha must be in (0, 1), got " + number(options_.alpha));
  require(options_.recalibration_samples > 0, "MonitorOptions.recalibration_samples must be at least 1");
  require(options_.certify.epsilon > 0 && options_.certify.epsilon < 1,
          "MonitorOptions.certify.epsilon must be in (0, 1), got " + number(options_.certify.epsilon));
  require(options_.certify.delta > 0 && options_.certify.delta < 1,
          "MonitorOptions.certify.delta must be in (0, 1), got " + number(options_.certify.delta));
  if (certificate_.certified) {
    require(certificate_.epsilon > 0 && certificate_.epsilon < 1,
            "Monitor: the certificate's epsilon must be in (0, 1), got " + number(certificate_.epsilon));
    start_eprocess_locked();
    state_ = GateState::normal;
  } else {
    state_ = GateState::collecting;
    since_attempt_ = retry_every_;  // attempt as soon as the window fills
  }
}

Decision Monitor::decide(double score, int label, std::string_view request_id) noexcept {
  try {
    std::lock_guard lock(mutex_);
    ++decisions_;
    Decision decision;
    decision.epoch = epoch_;
    if (state_ == GateState::collecting) {
      decision.collect = true;
      ++executed_;
      return decision;
    }
    if (accepts(certificate_, score, label)) {
      decision.accept = true;
      decision.shadow = shadow_selected(request_id, options_.shadow_rate);
      ++accepted_;
      return decision;
    }
    ++executed_;
    // Joint risk counts errors per request: a rejected proposal is X = 0.
    if (certificate_.risk == Risk::joint) observe_locked(false, false);
    return decision;
  } catch (...) {
    return Decision{};  // execute, record nothing
  }
}

bool Monitor::current_locked(const Decision& decision) const noexcept {
  return decision.epoch == epoch_ && state_ == GateState::normal;
}

void Monitor::start_eprocess_locked() {
  // π = 0: nothing is shadowed, so there is nothing to test; no e-process.
  if (options_.shadow_rate > 0) eprocess_.emplace(certificate_.epsilon, options_.shadow_rate, options_.alpha);
  else eprocess_.reset();
}

void Monitor::record_shadow(const Decision& decision, bool disagree) {
  require(decision.accept && decision.shadow, "Monitor::record_shadow: the decision was not an accepted, shadow-selected one");
  std::lock_guard lock(mutex_);
  if (!current_locked(decision)) {
    ++stale_records_;
    return;
  }
  observe_locked(true, disagree);
}

void Monitor::record_accepted_unshadowed(const Decision& decision) {
  require(decision.accept && !decision.shadow,
          "Monitor::record_accepted_unshadowed: the decision was not an accepted, unshadowed one");
  std::lock_guard lock(mutex_);
  if (!current_locked(decision)) {
    ++stale_records_;
    return;
  }
  observe_locked(false, false);
}

void Monitor::observe_locked(bool shadowed, bool disagree) {
  if (!eprocess_) return;
  eprocess_->observe(shadowed, disagree);
  if (eprocess_->alarmed()) enter_collecting_locked();
}

void Monitor::enter_collecting_locked() {
  // The e-process stays as it was at the alarm, for stats.
  state_ = GateState::collecting;
  ++epoch_;
  ++alarms_;
  window_.clear();
  since_attempt_ = retry_every_;
}

void Monitor::record_collected(const Decision& decision, const CalibrationSample& sample) {
  if (!(sample.score >= 0 && sample.score <= 1))
    throw Error(ErrorCode::invalid_argument,
                "Monitor::record_collected: score " + number(sample.score) + " is not in [0, 1]");
  std::lock_guard lock(mutex_);
  if (!decision.collect || decision.epoch != epoch_ || state_ != GateState::collecting) {
    ++stale_records_;
    return;
  }
  window_.push_back(sample);
  if (window_.size() > options_.recalibration_samples) window_.pop_front();
  ++since_attempt_;
  if (window_.size() == options_.recalibration_samples && since_attempt_ >= retry_every_) try_recalibrate_locked();
}

void Monitor::try_recalibrate_locked() {
  // Under the lock: certify() on a few thousand samples takes well under a
  // millisecond, and it runs once per `retry_every_` collected requests.
  since_attempt_ = 0;
  const std::vector<CalibrationSample> samples(window_.begin(), window_.end());
  Certificate fresh;
  try {
    fresh = certify(samples, options_.certify);
  } catch (const std::exception& error) {
    last_recalibration_failure_ = error.what();
    return;  // keep collecting: fail closed
  }
  if (!fresh.certified) {
    last_recalibration_failure_ = fresh.reason;
    return;
  }
  fresh.proposer_version = certificate_.proposer_version;
  fresh.data_hash = hash_samples(samples);
  certificate_ = std::move(fresh);
  start_eprocess_locked();
  state_ = GateState::normal;
  ++epoch_;
  ++recalibrations_;
  window_.clear();
  last_recalibration_failure_.clear();
}

MonitorStats Monitor::stats() const {
  MonitorStats stats;
  std::optional<EProcess> eprocess;
  {
    std::lock_guard lock(mutex_);
    stats.state = state_;
    stats.epoch = epoch_;
    stats.decisions = decisions_;
    stats.accepted = accepted_;
    stats.executed = executed_;
    stats.alarms = alarms_;
    stats.recalibrations = recalibrations_;
    stats.collected = window_.size();
    stats.stale_records = stale_records_;
    stats.last_recalibration_failure = last_recalibration_failure_;
    stats.certificate = certificate_;
    eprocess = eprocess_;
  }
  if (eprocess) {  // the bound's bisection runs outside the lock
    stats.observed = eprocess->count();
    stats.shadowed = eprocess->shadowed();
    stats.shadow_disagreements = eprocess->disagreements();
    stats.disagreement_rate = eprocess->disagreement_rate();
    stats.disagreement_upper_bound = eprocess->disagreement_upper_bound();
    stats.log_e_value = eprocess->log_value();
  }
  return stats;
}

Certificate Monitor::current_certificate() const {
  std::lock_guard lock(mutex_);
  return certificate_;
}

GateState Monitor::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

}  // namespace skim::gate

#pragma once
// A fastText-style classifier (Joulin et al. 2017): hashed word and character
// n-grams, the mean of their embedding rows, a linear softmax; trained here by
// SGD in seconds. It proposes; the gate decides whether a proposal is
// trusted, from score(), which is high only when the classifier is confident
// AND the input looks like its training data (coverage).
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace skim::propose {

struct NgramOptions {
  // 2^17 × 32 embeddings are 4 Mi values: 8 MiB at f16, the budget for a
  // shipped model directory. Chosen on CLINC150 val with
  // bench/propose/ngram_eval.cpp: 2^15..2^20 buckets and dim 32 or 64 are
  // within noise of each other (90.6–91.4 % in-scope), dim 16 loses ~1.5
  // points; lr 1.0 beats 0.5 by ~0.5 points over 4 seeds at 25 epochs.
  std::size_t buckets = std::size_t{1} << 17;
  std::size_t dim = 32;
  int epochs = 25;
  float learning_rate = 1.0f;  // decays linearly to 0 over epochs × examples
  int min_char_n = 3;          // character n-grams of "<word>", in code points;
  int max_char_n = 5;          // max_char_n = 0 turns them off
  int word_ngrams = 2;         // 1: unigrams; 2: and bigrams; ... (at most 5)
  std::uint64_t seed = 0;      // initialization and shuffling (std::mt19937_64)
};

struct NgramPrediction {
  int label = -1;
  float probability = 0;  // softmax probability of `label`
  // Share of the input's features (by 64-bit fingerprint, not by bucket, so
  // hash collisions cannot make unseen text look familiar) seen in training;
  // 0 for an input without features.
  float coverage = 0;
  float word_coverage = 0;  // the same over word n-grams only
  std::size_t features = 0;  // the input's n-gram features, repeats counted (embedding rows summed)
  std::vector<float> probabilities;
};

// A set of feature fingerprints: open addressing, linear probing, at most
// half full, so a lookup is mostly one load. predict() looks up every
// feature of its input; a binary search over CLINC150's 60 000 sorted
// fingerprints is 16 dependent loads, each a cache miss after a transformer
// call has run.
class FingerprintSet {
 public:
  FingerprintSet() = default;
  explicit FingerprintSet(std::span<const std::uint64_t> fingerprints);

  bool contains(std::uint64_t fingerprint) const noexcept;
  // Starts loading the slot a lookup of `fingerprint` reads first.
  void prefetch(std::uint64_t fingerprint) const noexcept;

 private:
  static constexpr std::uint64_t kEmpty = 0;
  std::size_t slot(std::uint64_t fingerprint) const noexcept;

  std::vector<std::uint64_t> slots_;  // kEmpty where free
  std::size_t mask_ = 0;
  bool holds_empty_marker_ = false;  // the one fingerprint no slot can hold
};

// The weights as plain arrays, row-major, for the caller to store (e.g. one
// safetensors file with metadata().dump() as a header value: embeddings may
// be stored as F16, see rounded_to_f16; fingerprints as U64).
struct NgramArrays {
  std::vector<float> embeddings;            // [buckets, dim]
  std::vector<float> output;                // [labels, dim]
  std::vector<float> bias;                  // [labels]
  std::vector<std::uint64_t> fingerprints;  // sorted, distinct: every feature seen in training
};

class NgramClassifier {
 public:
  // Trains on `texts` (raw; normalized here) with label ids in [0, n_labels).
  // Deterministic for a given seed and build: one thread, no Hogwild, so a
  // retrain reproduces the weights and their version() (all of CLINC150,
  // 15 100 texts, trains in ~2 s on one core, so threads would buy little).
  // Throws
  // skim::Error(invalid_argument) for an empty set, sizes that differ, a
  // label out of range or a text without features (naming the row), or a bad
  // option; skim::Error(text) naming the row for invalid UTF-8.
  static NgramClassifier train(std::span<const std::string> texts, std::span<const int> labels,
                               std::size_t n_labels, const NgramOptions& options = {});

  // From stored arrays and metadata() output. Every shape is checked against
  // the metadata, values must be finite and fingerprints strictly increasing;
  // otherwise skim::Error(format) naming the array or field.
  NgramClassifier(NgramArrays arrays, const nlohmann::json& metadata);

  // Thread-safe (const, no shared scratch). Invalid UTF-8 is
  // skim::Error(text) naming the byte offset.
  NgramPrediction predict(std::string_view text) const;
  // The same for a text that is already normalize_for_match's output.
  NgramPrediction predict_normalized(std::string_view normalized) const;
  // What the gate thresholds: the probability when the input looks like the
  // training data (coverage ≥ kMinCoverage and word_coverage ≥
  // kMinWordCoverage), else 0. In [0, 1]. Chosen on CLINC150 val (seed 0)
  // over probability alone and probability × coverage: at the threshold that
  // keeps errors among the accepted ≤ 1 % / 2 % / 5 % it accepts 62.0 / 74.6
  // / 87.4 % of val (probability alone 62.7 / 75.1 / 88.8 %, probability ×
  // coverage 55.5 / 69.4 / 89.0 %), while at those thresholds only 0.2 / 0.2
  // / 1.4 % of SST-2 movie reviews (text the model never saw the like of)
  // get through, against 0.7 / 1.5 / 13.9 % for probability alone; random
  // letters get through never, against up to 22.9 %.
  float score(const NgramPrediction& prediction) const noexcept;
  // Character n-grams of any English text are mostly familiar (SST-2's
  // median coverage is 0.81), word n-grams are not (median 0.44; CLINC150 val
  // in-scope 0.92): the word floor does most of the work, the overall floor
  // is the input-coverage check as specified, and rejects gibberish
  // (random-letter strings: coverage ≤ 0.53, word coverage ≤ 0.33).
  static constexpr float kMinCoverage = 0.8f;
  static constexpr float kMinWordCoverage = 0.6f;

  // Feature fingerprints of a text (normalized here), in order, repeats kept.
  std::vector<std::uint64_t> features(std::string_view text) const;

  const NgramOptions& options() const noexcept { return options_; }
  std::size_t labels() const noexcept { return n_labels_; }
  const NgramArrays& arrays() const noexcept { return arrays_; }
  // {"format": "skim-ngram", "format_version": 1, "labels", "buckets", "dim",
  //  "min_char_n", "max_char_n", "word_ngrams", "epochs", "learning_rate", "seed"}
  nlohmann::json metadata() const;
  // "ngram-" + 16 hex digits: a hash of metadata() and every array, so a
  // certificate names exactly the weights it was computed for.
  const std::string& version() const noexcept { return version_; }

  // A copy whose embeddings are rounded to the nearest f16 value (ties to
  // even), so storing them as F16 and loading them back is exact and keeps
  // version(). Calibrate the gate on this copy, not on the f32 original.
  NgramClassifier rounded_to_f16() const;

 private:
  NgramClassifier(NgramArrays arrays, std::size_t n_labels, const NgramOptions& options);
  // Appends the fingerprints of a normalized text, word n-grams first;
  // returns how many of them are word n-grams.
  std::size_t append_features(std::string_view normalized, std::vector<std::uint64_t>& out) const;
  // version_ and seen_, from arrays_: after every change of it.
  void derive_from_arrays();

  NgramOptions options_;
  std::size_t n_labels_ = 0;
  NgramArrays arrays_;
  FingerprintSet seen_;  // arrays_.fingerprints
  std::string version_;
};

// IEEE binary16 bits of a float, rounded to nearest, ties to even (overflow
// gives ±inf, NaN stays NaN), and back (exact).
std::uint16_t f16_bits(float value) noexcept;
float f16_value(std::uint16_t bits) noexcept;

}  // namespace skim::propose

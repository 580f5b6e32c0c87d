#include "propose/ngram.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <random>
#include <utility>

#include "propose/hash.hpp"
#include "propose/normalize.hpp"
#include "skim/error.hpp"

namespace skim::propose {
namespace {

constexpr int kFormatVersion = 1;
constexpr int kMaxWordNgrams = 5;
constexpr int kMaxCharN = 16;

// One salt per feature kind, so the word "abc", the bigram "abc x" and the
// character trigram "abc" are different fingerprints.
const std::uint64_t kCharSalt = fnv1a("skim.ngram.char");
const std::array<std::uint64_t, kMaxWordNgrams> kWordSalts = [] {
  std::array<std::uint64_t, kMaxWordNgrams> salts;
  for (int n = 1; n <= kMaxWordNgrams; ++n) salts[n - 1] = fnv1a("skim.ngram.word" + std::to_string(n));
  return salts;
}();

[[noreturn]] void bad_option(const std::string& what) {
  throw Error(ErrorCode::invalid_argument, "NgramOptions: " + what);
}

void check_options(const NgramOptions& options) {
  if (options.buckets == 0 || options.buckets > (std::size_t{1} << 32)) {
    bad_option("buckets must be in [1, 2^32], got " + std::to_string(options.buckets));
  }
  if (options.dim == 0 || options.dim > 4096) {
    bad_option("dim must be in [1, 4096], got " + std::to_string(options.dim));
  }
  if (options.buckets * options.dim > (std::size_t{1} << 32)) {
    bad_option("buckets × dim must be at most 2^32 values (16 GiB), got " + std::to_string(options.buckets) +
               " × " + std::to_string(options.dim));
  }
  if (options.epochs <= 0) bad_option("epochs must be positive, got " + std::to_string(options.epochs));
  if (!(options.learning_rate > 0) || !std::isfinite(options.learning_rate)) {
    bad_option("learning_rate must be positive and finite, got " + std::to_string(options.learning_rate));
  }
  if (options.word_ngrams < 1 || options.word_ngrams > kMaxWordNgrams) {
    bad_option("word_ngrams must be in [1, " + std::to_string(kMaxWordNgrams) + "], got " +
               std::to_string(options.word_ngrams));
  }
  const bool chars_off = options.max_char_n == 0;
  if (!chars_off && (options.min_char_n < 1 || options.min_char_n > options.max_char_n ||
                     options.max_char_n > kMaxCharN)) {
    bad_option("character n-grams need 1 <= min_char_n <= max_char_n <= " + std::to_string(kMaxCharN) +
               " (or max_char_n = 0), got " + std::to_string(options.min_char_n) + ".." +
               std::to_string(options.max_char_n));
  }
}

// Exact ties-to-even rounding through float arithmetic for subnormal halves,
// integer rounding on the mantissa otherwise.
std::uint16_t to_half(float value) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) return sign | (magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;  // ≥ 65520 rounds past 65504
  if (magnitude < 0x38800000u) {                        // below 2^-14: subnormal half
    const float scaled = std::bit_cast<float>(magnitude) * 16777216.0f;  // × 2^24, exact
    return sign | static_cast<std::uint16_t>(std::nearbyint(scaled));
  }
  const std::uint32_t rebased = magnitude - 0x38000000u;  // exponent bias 127 → 15
  const std::uint32_t rounding = 0xfffu + ((rebased >> 13) & 1u);
  return sign | static_cast<std::uint16_t>((rebased + rounding) >> 13);
}

float from_half(std::uint16_t half) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  const std::uint32_t exponent = (half >> 10) & 0x1fu;
  const std::uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0) {
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // 2^-24
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// Uniform in [0, 1) from the top 24 bits: the same on every standard library
// (std::uniform_real_distribution's algorithm is not specified).
float unit_float(std::mt19937_64& rng) { return static_cast<float>(rng() >> 40) * 0x1p-24f; }

void softmax_in_place(std::vector<float>& values) {
  const float top = *std::max_element(values.begin(), values.end());
  float sum = 0;
  for (float& v : values) sum += (v = std::exp(v - top));
  for (float& v : values) v /= sum;
}

const nlohmann::json& field(const nlohmann::json& metadata, const char* name) {
  const auto found = metadata.find(name);
  if (found == metadata.end()) {
    throw Error(ErrorCode::format, std::string("ngram metadata: missing \"") + name + "\"");
  }
  return *found;
}

template <typename T>
T integer_field(const nlohmann::json& metadata, const char* name) {
  const nlohmann::json& value = field(metadata, name);
  if (!value.is_number_integer()) {
    throw Error(ErrorCode::format,
                std::string("ngram metadata: \"") + name + "\" must be an integer, got " + value.dump());
  }
  if (value.is_number_unsigned()) return static_cast<T>(value.get<std::uint64_t>());
  const auto signed_value = value.get<std::int64_t>();
  if (std::is_unsigned_v<T> && signed_value < 0) {
    throw Error(ErrorCode::format, std::string("ngram metadata: \"") + name + "\" must not be negative");
  }
  return static_cast<T>(signed_value);
}

template <typename T>
void check_size(const char* array, const std::vector<T>& values, std::size_t expected, const std::string& shape) {
  if (values.size() != expected) {
    throw Error(ErrorCode::format, std::string("ngram array \"") + array + "\" has " +
                                       std::to_string(values.size()) + " values, expected " + shape + " = " +
                                       std::to_string(expected));
  }
}

void check_finite(const char* array, const std::vector<float>& values) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw Error(ErrorCode::format, std::string("ngram array \"") + array + "\" value " + std::to_string(i) +
                                         " is not finite");
    }
  }
}

}  // namespace

FingerprintSet::FingerprintSet(std::span<const std::uint64_t> fingerprints) {
  const std::size_t size = std::bit_ceil(std::max<std::size_t>(2 * fingerprints.size(), 16));
  slots_.assign(size, kEmpty);
  mask_ = size - 1;
  for (std::uint64_t fingerprint : fingerprints) {
    if (fingerprint == kEmpty) {
      holds_empty_marker_ = true;
      continue;
    }
    std::size_t at = slot(fingerprint);
    while (slots_[at] != kEmpty && slots_[at] != fingerprint) at = (at + 1) & mask_;
    slots_[at] = fingerprint;
  }
}

std::size_t FingerprintSet::slot(std::uint64_t fingerprint) const noexcept {
  // Fibonacci hashing: the product's high half, which every fingerprint bit reaches.
  return static_cast<std::size_t>((fingerprint * 0x9e3779b97f4a7c15ull) >> 32) & mask_;
}

bool FingerprintSet::contains(std::uint64_t fingerprint) const noexcept {
  if (fingerprint == kEmpty) return holds_empty_marker_;
  if (slots_.empty()) return false;
  for (std::size_t at = slot(fingerprint);; at = (at + 1) & mask_) {
    if (slots_[at] == fingerprint) return true;
    if (slots_[at] == kEmpty) return false;
  }
}

void FingerprintSet::prefetch(std::uint64_t fingerprint) const noexcept {
  if (!slots_.empty()) __builtin_prefetch(slots_.data() + slot(fingerprint));
}

std::uint16_t f16_bits(float value) noexcept { return to_half(value); }
float f16_value(std::uint16_t bits) noexcept { return from_half(bits); }

std::size_t NgramClassifier::append_features(std::string_view normalized, std::vector<std::uint64_t>& out) const {
  const std::vector<std::string_view> words = split_words(normalized);
  const std::size_t first = out.size();
  for (int n = 1; n <= options_.word_ngrams; ++n) {
    const std::uint64_t salt = kWordSalts[n - 1];
    for (std::size_t i = 0; i + n <= words.size(); ++i) {
      std::uint64_t hash = fnv1a(words[i], salt);
      for (int k = 1; k < n; ++k) hash = fnv1a(words[i + k], fnv1a(std::string_view(" "), hash));
      out.push_back(hash);
    }
  }
  const std::size_t word_features = out.size() - first;
  if (options_.max_char_n == 0) return word_features;
  std::string wrapped;
  std::vector<std::size_t> starts;  // byte offset of each code point, then the end
  for (std::string_view word : words) {
    wrapped.clear();
    wrapped.push_back('<');
    wrapped.append(word);
    wrapped.push_back('>');
    starts.clear();
    for (std::size_t i = 0; i < wrapped.size(); ++i) {
      if ((static_cast<unsigned char>(wrapped[i]) & 0xC0) != 0x80) starts.push_back(i);
    }
    const std::size_t count = starts.size();
    starts.push_back(wrapped.size());
    for (std::size_t i = 0; i < count; ++i) {
      for (std::size_t n = options_.min_char_n; n <= static_cast<std::size_t>(options_.max_char_n) && i + n <= count;
           ++n) {
        if (n == 1 && (i == 0 || i + 1 == count)) continue;  // "<" or ">" alone says nothing
        out.push_back(fnv1a(std::string_view(wrapped).substr(starts[i], starts[i + n] - starts[i]), kCharSalt));
      }
    }
  }
  return word_features;
}

std::vector<std::uint64_t> NgramClassifier::features(std::string_view text) const {
  std::vector<std::uint64_t> out;
  append_features(normalize_for_match(text), out);
  return out;
}

NgramClassifier::NgramClassifier(NgramArrays arrays, std::size_t n_labels, const NgramOptions& options)
    : options_(options), n_labels_(n_labels), arrays_(std::move(arrays)) {
  derive_from_arrays();
}

NgramClassifier NgramClassifier::train(std::span<const std::string> texts, std::span<const int> labels,
                                       std::size_t n_labels, const NgramOptions& options) {
  check_options(options);
  if (texts.size() != labels.size()) {
    throw Error(ErrorCode::invalid_argument, "NgramClassifier::train: " + std::to_string(texts.size()) +
                                                 " texts but " + std::to_string(labels.size()) + " labels");
  }
  if (texts.empty()) throw Error(ErrorCode::invalid_argument, "NgramClassifier::train: no training examples");
  if (n_labels == 0) throw Error(ErrorCode::invalid_argument, "NgramClassifier::train: n_labels is 0");
  const std::size_t buckets = options.buckets, dim = options.dim;

  // A classifier with empty weights, only to extract features.
  NgramClassifier extractor(NgramArrays{}, n_labels, options);
  std::vector<std::vector<std::uint32_t>> rows(texts.size());
  std::vector<std::uint64_t> seen;
  std::vector<std::uint64_t> fingerprints;
  for (std::size_t row = 0; row < texts.size(); ++row) {
    if (labels[row] < 0 || static_cast<std::size_t>(labels[row]) >= n_labels) {
      throw Error(ErrorCode::invalid_argument, "NgramClassifier::train: row " + std::to_string(row) + ": label " +
                                                   std::to_string(labels[row]) + " is outside [0, " +
                                                   std::to_string(n_labels) + ")");
    }
    fingerprints.clear();
    try {
      extractor.append_features(normalize_for_match(texts[row]), fingerprints);
    } catch (const Error& error) {
      throw Error(error.code(), "NgramClassifier::train: row " + std::to_string(row) + ": " + error.what());
    }
    if (fingerprints.empty()) {
      throw Error(ErrorCode::invalid_argument, "NgramClassifier::train: row " + std::to_string(row) +
                                                   ": the text has no words (empty or only punctuation)");
    }
    rows[row].reserve(fingerprints.size());
    for (std::uint64_t fingerprint : fingerprints) {
      rows[row].push_back(static_cast<std::uint32_t>(fingerprint % buckets));
    }
    seen.insert(seen.end(), fingerprints.begin(), fingerprints.end());
  }
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());

  // fastText's initialization: embeddings uniform in ±1/dim, output zero.
  std::mt19937_64 rng(options.seed);
  NgramArrays arrays;
  arrays.embeddings.resize(buckets * dim);
  const float scale = 1.0f / static_cast<float>(dim);
  for (float& value : arrays.embeddings) value = (2 * unit_float(rng) - 1) * scale;
  arrays.output.assign(n_labels * dim, 0.0f);
  arrays.bias.assign(n_labels, 0.0f);
  float* const embeddings = arrays.embeddings.data();
  float* const output = arrays.output.data();

  std::vector<std::size_t> order(texts.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::vector<float> hidden(dim), gradient(dim), probabilities(n_labels);
  const double total_steps = static_cast<double>(options.epochs) * static_cast<double>(texts.size());
  std::size_t step = 0;
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);  // Fisher–Yates
    for (std::size_t row : order) {
      const float lr = static_cast<float>(options.learning_rate * (1.0 - static_cast<double>(step++) / total_steps));
      const std::vector<std::uint32_t>& features = rows[row];
      std::fill(hidden.begin(), hidden.end(), 0.0f);
      for (std::uint32_t bucket : features) {
        const float* e = embeddings + std::size_t{bucket} * dim;
        for (std::size_t d = 0; d < dim; ++d) hidden[d] += e[d];
      }
      const float inverse = 1.0f / static_cast<float>(features.size());
      for (float& h : hidden) h *= inverse;
      for (std::size_t k = 0; k < n_labels; ++k) {
        const float* w = output + k * dim;
        float logit = arrays.bias[k];
        for (std::size_t d = 0; d < dim; ++d) logit += w[d] * hidden[d];
        probabilities[k] = logit;
      }
      softmax_in_place(probabilities);
      // Softmax cross-entropy: d loss / d logit_k = p_k − [k = y]. The hidden
      // gradient uses the output rows before their update, as fastText does.
      std::fill(gradient.begin(), gradient.end(), 0.0f);
      for (std::size_t k = 0; k < n_labels; ++k) {
        const float alpha = lr * ((static_cast<int>(k) == labels[row] ? 1.0f : 0.0f) - probabilities[k]);
        float* w = output + k * dim;
        for (std::size_t d = 0; d < dim; ++d) {
          gradient[d] += alpha * w[d];
          w[d] += alpha * hidden[d];
        }
        arrays.bias[k] += alpha;
      }
      for (float& g : gradient) g *= inverse;
      for (std::uint32_t bucket : features) {
        float* e = embeddings + std::size_t{bucket} * dim;
        for (std::size_t d = 0; d < dim; ++d) e[d] += gradient[d];
      }
    }
  }
  // Rows no training feature reaches keep their random start; zero them, so
  // an unseen feature adds nothing but its share of the mean (pulling the
  // prediction towards the prior) instead of noise. (No measurable change on
  // CLINC150 val; it makes what an unseen feature does predictable.)
  std::vector<bool> used(buckets, false);
  for (const auto& features : rows) {
    for (std::uint32_t bucket : features) used[bucket] = true;
  }
  for (std::size_t bucket = 0; bucket < buckets; ++bucket) {
    if (!used[bucket]) std::fill_n(embeddings + bucket * dim, dim, 0.0f);
  }
  arrays.fingerprints = std::move(seen);
  return NgramClassifier(std::move(arrays), n_labels, options);
}

NgramClassifier::NgramClassifier(NgramArrays arrays, const nlohmann::json& metadata) : arrays_(std::move(arrays)) {
  if (!metadata.is_object()) throw Error(ErrorCode::format, "ngram metadata: expected a JSON object");
  const nlohmann::json& format = field(metadata, "format");
  if (!format.is_string() || format.get<std::string>() != "skim-ngram") {
    throw Error(ErrorCode::format, "ngram metadata: \"format\" must be \"skim-ngram\", got " + format.dump());
  }
  const int format_version = integer_field<int>(metadata, "format_version");
  if (format_version != kFormatVersion) {
    throw Error(ErrorCode::format, "ngram metadata: format_version " + std::to_string(format_version) +
                                       " is not supported (this build reads " + std::to_string(kFormatVersion) + ")");
  }
  n_labels_ = integer_field<std::size_t>(metadata, "labels");
  options_.buckets = integer_field<std::size_t>(metadata, "buckets");
  options_.dim = integer_field<std::size_t>(metadata, "dim");
  options_.min_char_n = integer_field<int>(metadata, "min_char_n");
  options_.max_char_n = integer_field<int>(metadata, "max_char_n");
  options_.word_ngrams = integer_field<int>(metadata, "word_ngrams");
  options_.epochs = integer_field<int>(metadata, "epochs");
  options_.seed = integer_field<std::uint64_t>(metadata, "seed");
  const nlohmann::json& learning_rate = field(metadata, "learning_rate");
  if (!learning_rate.is_number()) {
    throw Error(ErrorCode::format, "ngram metadata: \"learning_rate\" must be a number, got " + learning_rate.dump());
  }
  options_.learning_rate = learning_rate.get<float>();
  if (n_labels_ == 0) throw Error(ErrorCode::format, "ngram metadata: \"labels\" is 0");
  try {
    check_options(options_);
  } catch (const Error& error) {
    throw Error(ErrorCode::format, std::string("ngram metadata: ") + error.what());
  }
  const std::string dims = "[" + std::to_string(options_.buckets) + ", " + std::to_string(options_.dim) + "]";
  check_size("embeddings", arrays_.embeddings, options_.buckets * options_.dim, "buckets × dim " + dims);
  check_size("output", arrays_.output, n_labels_ * options_.dim,
             "labels × dim [" + std::to_string(n_labels_) + ", " + std::to_string(options_.dim) + "]");
  check_size("bias", arrays_.bias, n_labels_, "labels [" + std::to_string(n_labels_) + "]");
  check_finite("embeddings", arrays_.embeddings);
  check_finite("output", arrays_.output);
  check_finite("bias", arrays_.bias);
  for (std::size_t i = 1; i < arrays_.fingerprints.size(); ++i) {
    if (arrays_.fingerprints[i - 1] >= arrays_.fingerprints[i]) {
      throw Error(ErrorCode::format, "ngram array \"fingerprints\" is not strictly increasing at index " +
                                         std::to_string(i));
    }
  }
  derive_from_arrays();
}

nlohmann::json NgramClassifier::metadata() const {
  return {{"format", "skim-ngram"},
          {"format_version", kFormatVersion},
          {"labels", n_labels_},
          {"buckets", options_.buckets},
          {"dim", options_.dim},
          {"min_char_n", options_.min_char_n},
          {"max_char_n", options_.max_char_n},
          {"word_ngrams", options_.word_ngrams},
          {"epochs", options_.epochs},
          {"learning_rate", options_.learning_rate},
          {"seed", options_.seed}};
}

void NgramClassifier::derive_from_arrays() {
  seen_ = FingerprintSet(arrays_.fingerprints);
  std::uint64_t hash = fnv1a(metadata().dump());
  const auto mix = [&hash](const auto& values) {
    const std::uint64_t count = values.size();
    hash = fnv1a_bytes(&count, sizeof count, hash);  // so arrays cannot trade values across their boundary
    hash = fnv1a_bytes(values.data(), values.size() * sizeof(values[0]), hash);
  };
  mix(arrays_.embeddings);
  mix(arrays_.output);
  mix(arrays_.bias);
  mix(arrays_.fingerprints);
  version_ = "ngram-" + hex64(hash);
}

NgramPrediction NgramClassifier::predict(std::string_view text) const {
  return predict_normalized(normalize_for_match(text));
}

NgramPrediction NgramClassifier::predict_normalized(std::string_view normalized) const {
  thread_local std::vector<std::uint64_t> fingerprints;  // reused: the router predicts per request
  fingerprints.clear();
  const std::size_t word_features = append_features(normalized, fingerprints);
  const std::size_t dim = options_.dim;
  const auto row = [&](std::uint64_t fingerprint) {
    return arrays_.embeddings.data() + (fingerprint % options_.buckets) * dim;
  };
  // Every set slot and embedding row is asked for before the first is read:
  // after a transformer call they are cache misses, which then overlap
  // instead of waiting one after another.
  for (std::uint64_t fingerprint : fingerprints) {
    seen_.prefetch(fingerprint);
    const char* bytes = reinterpret_cast<const char*>(row(fingerprint));
    for (std::size_t offset = 0; offset < dim * sizeof(float); offset += 64) __builtin_prefetch(bytes + offset);
    __builtin_prefetch(bytes + dim * sizeof(float) - 1);
  }
  std::vector<float> hidden(dim, 0.0f);
  std::size_t seen = 0, words_seen = 0;
  for (std::size_t i = 0; i < fingerprints.size(); ++i) {
    const std::uint64_t fingerprint = fingerprints[i];
    if (seen_.contains(fingerprint)) {
      ++seen;
      words_seen += i < word_features;
    }
    const float* e = row(fingerprint);
    for (std::size_t d = 0; d < dim; ++d) hidden[d] += e[d];
  }
  if (!fingerprints.empty()) {
    const float inverse = 1.0f / static_cast<float>(fingerprints.size());
    for (float& h : hidden) h *= inverse;
  }
  NgramPrediction prediction;
  prediction.features = fingerprints.size();
  prediction.probabilities.resize(n_labels_);
  for (std::size_t k = 0; k < n_labels_; ++k) {
    const float* w = arrays_.output.data() + k * dim;
    float logit = arrays_.bias[k];
    for (std::size_t d = 0; d < dim; ++d) logit += w[d] * hidden[d];
    prediction.probabilities[k] = logit;
  }
  softmax_in_place(prediction.probabilities);
  const auto best = std::max_element(prediction.probabilities.begin(), prediction.probabilities.end());
  prediction.label = static_cast<int>(best - prediction.probabilities.begin());
  prediction.probability = *best;
  prediction.coverage =
      fingerprints.empty() ? 0.0f : static_cast<float>(seen) / static_cast<float>(fingerprints.size());
  prediction.word_coverage =
      word_features == 0 ? 0.0f : static_cast<float>(words_seen) / static_cast<float>(word_features);
  return prediction;
}

float NgramClassifier::score(const NgramPrediction& prediction) const noexcept {
  const bool familiar = prediction.coverage >= kMinCoverage && prediction.word_coverage >= kMinWordCoverage;
  return familiar ? prediction.probability : 0.0f;
}

NgramClassifier NgramClassifier::rounded_to_f16() const {
  NgramArrays arrays = arrays_;
  for (float& value : arrays.embeddings) value = from_half(to_half(value));
  return NgramClassifier(std::move(arrays), n_labels_, options_);
}

}  // namespace skim::propose

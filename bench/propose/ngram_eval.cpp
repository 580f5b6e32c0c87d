// Measures skim::propose::NgramClassifier on CLINC150 (Larson et al. 2019):
// fit on train + oos_train, report on val + oos_val (or, with --test, on
// test + oos_test, once the settings are chosen). Kept out of bench/*.cpp, which
// CMake globs into the Google Benchmark binary; built as skim_ngram_eval:
//   build/bench/skim_ngram_eval /work/shared/data/clinc150/data_full.json [--buckets N] [--dim N]
//       [--epochs N] [--lr X] [--minn N] [--maxn N] [--word-ngrams N] [--seed N]
//       [--test] [--sst2 dev.tsv] [--gate]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "propose/ngram.hpp"

using skim::propose::NgramClassifier;
using skim::propose::NgramOptions;
using skim::propose::NgramPrediction;

namespace {

struct Split {
  std::vector<std::string> texts;
  std::vector<int> labels;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Gate acceptance at thresholds for a score function.
template <typename Score>
void gate_table(const char* name, const std::vector<NgramPrediction>& predictions, const std::vector<int>& gold,
                int oos, Score score) {
  std::printf("  gate %-28s", name);
  for (double threshold : {0.5, 0.8, 0.9, 0.95, 0.99}) {
    std::size_t accepted = 0, correct = 0, oos_accepted_wrong = 0;
    for (std::size_t i = 0; i < predictions.size(); ++i) {
      if (score(predictions[i]) < threshold) continue;
      ++accepted;
      if (predictions[i].label == gold[i]) ++correct;
      else if (gold[i] == oos) ++oos_accepted_wrong;
    }
    std::printf(" | >=%.2f acc %5.1f%% right %6.2f%% (oos-wrong %zu)", threshold,
                100.0 * accepted / predictions.size(), accepted ? 100.0 * correct / accepted : 0.0,
                oos_accepted_wrong);
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s data_full.json [options]\n", argv[0]);
    return 2;
  }
  NgramOptions options;
  bool test = false, gate = false;
  std::string sst2;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (arg == "--buckets") options.buckets = std::stoull(next());
    else if (arg == "--dim") options.dim = std::stoull(next());
    else if (arg == "--epochs") options.epochs = std::stoi(next());
    else if (arg == "--lr") options.learning_rate = std::stof(next());
    else if (arg == "--minn") options.min_char_n = std::stoi(next());
    else if (arg == "--maxn") options.max_char_n = std::stoi(next());
    else if (arg == "--word-ngrams") options.word_ngrams = std::stoi(next());
    else if (arg == "--seed") options.seed = std::stoull(next());
    else if (arg == "--test") test = true;
    else if (arg == "--gate") gate = true;
    else if (arg == "--sst2") sst2 = next();
    else { std::fprintf(stderr, "unknown option %s\n", arg.c_str()); return 2; }
  }

  std::ifstream in(argv[1]);
  const nlohmann::json data = nlohmann::json::parse(in);
  std::vector<std::string> names;
  for (const auto& row : data.at("train")) names.push_back(row.at(1).get<std::string>());
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  names.push_back("oos");
  std::map<std::string, int> ids;
  for (std::size_t i = 0; i < names.size(); ++i) ids[names[i]] = static_cast<int>(i);
  const int oos = ids.at("oos");
  const auto load = [&](std::initializer_list<const char*> keys) {
    Split split;
    for (const char* key : keys) {
      for (const auto& row : data.at(key)) {
        split.texts.push_back(row.at(0).get<std::string>());
        split.labels.push_back(ids.at(row.at(1).get<std::string>()));
      }
    }
    return split;
  };
  const Split train = load({"train", "oos_train"});
  const Split eval = test ? load({"test", "oos_test"}) : load({"val", "oos_val"});

  auto start = std::chrono::steady_clock::now();
  const NgramClassifier model = NgramClassifier::train(train.texts, train.labels, names.size(), options);
  const double train_seconds = seconds_since(start);

  start = std::chrono::steady_clock::now();
  std::vector<NgramPrediction> predictions;
  for (const std::string& text : eval.texts) predictions.push_back(model.predict(text));
  const double predict_seconds = seconds_since(start);

  std::size_t in_scope = 0, in_scope_right = 0, oos_total = 0, oos_right = 0, false_oos = 0;
  for (std::size_t i = 0; i < predictions.size(); ++i) {
    if (eval.labels[i] == oos) {
      ++oos_total;
      oos_right += predictions[i].label == oos;
    } else {
      ++in_scope;
      in_scope_right += predictions[i].label == eval.labels[i];
      false_oos += predictions[i].label == oos;
    }
  }
  std::printf("buckets %zu dim %zu epochs %d lr %g char %d..%d word_ngrams %d seed %llu | %s: in-scope acc %.2f%% "
              "OOS recall %.1f%% (in-scope called oos %zu) | train %.2fs (%zu fingerprints) | predict %.1f us/text\n",
              options.buckets, options.dim, options.epochs, options.learning_rate, options.min_char_n,
              options.max_char_n, options.word_ngrams, static_cast<unsigned long long>(options.seed),
              test ? "test" : "val", 100.0 * in_scope_right / in_scope, 100.0 * oos_right / oos_total, false_oos,
              train_seconds, model.arrays().fingerprints.size(), 1e6 * predict_seconds / eval.texts.size());
  if (!gate) return 0;

  // Coverage distribution: in-scope eval, OOS eval, gibberish, SST-2.
  const auto quantiles = [](std::vector<float> values, const char* name) {
    std::sort(values.begin(), values.end());
    const auto q = [&](double p) { return values[static_cast<std::size_t>(p * (values.size() - 1))]; };
    std::size_t above = 0;
    for (float v : values) above += v >= NgramClassifier::kMinCoverage;
    std::printf("  coverage %-22s n=%5zu  p1 %.3f p5 %.3f p10 %.3f p50 %.3f p90 %.3f max %.3f  >=%.2f: %.1f%%\n", name,
                values.size(), q(0.01), q(0.05), q(0.10), q(0.5), q(0.9), values.back(),
                NgramClassifier::kMinCoverage, 100.0 * above / values.size());
  };
  std::vector<float> cov_in, cov_oos, wcov_in, wcov_oos;
  for (std::size_t i = 0; i < predictions.size(); ++i) {
    (eval.labels[i] == oos ? cov_oos : cov_in).push_back(predictions[i].coverage);
    (eval.labels[i] == oos ? wcov_oos : wcov_in).push_back(predictions[i].word_coverage);
  }
  quantiles(cov_in, "in-scope");
  quantiles(cov_oos, "oos");
  quantiles(wcov_in, "words: in-scope");
  quantiles(wcov_oos, "words: oos");
  // Gibberish: random lowercase "words" of 3–8 letters, 2–5 words.
  std::mt19937_64 rng(1);
  std::vector<float> cov_gib, wcov_gib;
  std::vector<NgramPrediction> gib_predictions;
  for (int i = 0; i < 2000; ++i) {
    std::string text;
    const int words = 2 + static_cast<int>(rng() % 4);
    for (int w = 0; w < words; ++w) {
      if (w) text += ' ';
      const int letters = 3 + static_cast<int>(rng() % 6);
      for (int k = 0; k < letters; ++k) text += static_cast<char>('a' + rng() % 26);
    }
    gib_predictions.push_back(model.predict(text));
    cov_gib.push_back(gib_predictions.back().coverage);
    wcov_gib.push_back(gib_predictions.back().word_coverage);
  }
  quantiles(cov_gib, "random letters");
  quantiles(wcov_gib, "words: random letters");
  std::vector<NgramPrediction> sst_predictions;
  if (!sst2.empty()) {
    std::ifstream tsv(sst2);
    std::string line;
    std::getline(tsv, line);  // header
    std::vector<float> cov_sst, wcov_sst;
    while (std::getline(tsv, line)) {
      const std::string sentence = line.substr(0, line.find('\t'));
      sst_predictions.push_back(model.predict(sentence));
      cov_sst.push_back(sst_predictions.back().coverage);
      wcov_sst.push_back(sst_predictions.back().word_coverage);
    }
    quantiles(cov_sst, "sst2 (movie reviews)");
    quantiles(wcov_sst, "words: sst2");
  }

  // Score candidates for the gate. The gate picks its threshold on
  // calibration data, so what matters is (a) how much of in-domain traffic a
  // score can accept at a given error rate among the accepted (its
  // risk-coverage curve) and (b) how much unlike-the-training text it still
  // accepts at that threshold (shift the calibration set never showed).
  struct Candidate {
    const char* name;
    std::function<float(const NgramPrediction&)> score;
  };
  const std::vector<Candidate> candidates = {
      {"probability", [](const NgramPrediction& p) { return p.probability; }},
      {"probability*coverage", [](const NgramPrediction& p) { return p.probability * p.coverage; }},
      {"probability|coverage>=0.8", [](const NgramPrediction& p) { return p.coverage >= 0.8f ? p.probability : 0.f; }},
      {"probability*word_coverage", [](const NgramPrediction& p) { return p.probability * p.word_coverage; }},
      {"probability|word_cov>=0.5", [](const NgramPrediction& p) { return p.word_coverage >= 0.5f ? p.probability : 0.f; }},
      {"probability|word_cov>=0.6", [](const NgramPrediction& p) { return p.word_coverage >= 0.6f ? p.probability : 0.f; }},
      {"p|word_cov>=0.7", [](const NgramPrediction& p) { return p.word_coverage >= 0.7f ? p.probability : 0.f; }},
      {"p|word>=0.6&cov>=0.8", [](const NgramPrediction& p) { return p.word_coverage >= 0.6f && p.coverage >= 0.8f ? p.probability : 0.f; }},
      {"p|word>=0.5&cov>=0.8", [](const NgramPrediction& p) { return p.word_coverage >= 0.5f && p.coverage >= 0.8f ? p.probability : 0.f; }},
      {"p*min(1,word/0.6)", [](const NgramPrediction& p) { return p.probability * std::min(1.0f, p.word_coverage / 0.6f); }},
      {"model.score (chosen)", [&](const NgramPrediction& p) { return model.score(p); }},
  };
  std::printf("eval (%s): fixed thresholds, accepted share / accuracy among accepted\n",
              test ? "test+oos_test" : "val+oos_val");
  for (const Candidate& candidate : candidates) gate_table(candidate.name, predictions, eval.labels, oos, candidate.score);
  const auto accepted_share = [](const std::vector<NgramPrediction>& ps, const auto& score, float threshold) {
    std::size_t accepted = 0;
    for (const auto& p : ps) accepted += score(p) >= threshold;
    return ps.empty() ? 0.0 : 100.0 * accepted / ps.size();
  };
  std::printf("risk-coverage: the most of eval a threshold can accept with error <= eps among the accepted, "
              "and what that threshold lets through elsewhere\n");
  for (const Candidate& candidate : candidates) {
    std::vector<std::pair<float, bool>> scored;
    for (std::size_t i = 0; i < predictions.size(); ++i) {
      scored.push_back({candidate.score(predictions[i]), predictions[i].label == eval.labels[i]});
    }
    std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::printf("  %-28s", candidate.name);
    for (double eps : {0.01, 0.02, 0.05}) {
      // Largest prefix (cut between distinct scores) with errors <= eps × size.
      std::size_t errors = 0, best = 0;
      float threshold = 2.0f;
      for (std::size_t i = 0; i < scored.size(); ++i) {
        errors += !scored[i].second;
        const bool boundary = i + 1 == scored.size() || scored[i + 1].first < scored[i].first;
        if (boundary && scored[i].first > 0 && errors <= eps * (i + 1)) best = i + 1, threshold = scored[i].first;
      }
      std::printf(" | eps %.0f%%: accept %5.1f%% (t=%.4f) letters %4.1f%% sst2 %4.1f%%", 100 * eps,
                  100.0 * best / scored.size(), threshold, accepted_share(gib_predictions, candidate.score, threshold),
                  accepted_share(sst_predictions, candidate.score, threshold));
    }
    std::printf("\n");
  }

  // f16 embeddings: how many predictions change, and by how much.
  const NgramClassifier half = model.rounded_to_f16();
  std::size_t label_changes = 0;
  float max_probability_change = 0, max_score_change = 0;
  for (std::size_t i = 0; i < eval.texts.size(); ++i) {
    const NgramPrediction p = half.predict(eval.texts[i]);
    label_changes += p.label != predictions[i].label;
    max_probability_change = std::max(max_probability_change, std::fabs(p.probability - predictions[i].probability));
    max_score_change = std::max(max_score_change, std::fabs(half.score(p) - model.score(predictions[i])));
  }
  std::printf("  f16 embeddings: %zu of %zu labels change, max |d probability| %.2e, max |d score| %.2e\n",
              label_changes, eval.texts.size(), max_probability_change, max_score_change);
  return 0;
}

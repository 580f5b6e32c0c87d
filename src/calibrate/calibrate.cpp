// skim::calibrate: n-gram proposer training, the transformer's answers on the
// calibration set, the certificate, and the package the Engine loads.
#include "skim/calibrate.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "calibrate/acm_fit.hpp"
#include "calibrate/mod_fit.hpp"
#include "engine/router.hpp"
#include "format/content_hash.hpp"
#include "gate/certificate.hpp"
#include "propose/normalize.hpp"
#include "skim/engine.hpp"
#include "skim/error.hpp"

namespace skim {

namespace fs = std::filesystem;

CalibrateOptions& CalibrateOptions::epsilon(double e) {
  if (!(e > 0 && e < 1)) throw Error(ErrorCode::invalid_argument, "epsilon " + std::to_string(e) + " is outside (0, 1)");
  epsilon_ = e;
  return *this;
}

CalibrateOptions& CalibrateOptions::delta(double d) {
  if (!(d > 0 && d < 1)) throw Error(ErrorCode::invalid_argument, "delta " + std::to_string(d) + " is outside (0, 1)");
  delta_ = d;
  return *this;
}

CalibrateOptions& CalibrateOptions::mod_capacity(double c) {
  if (!(c > 0 && c <= 1)) throw Error(ErrorCode::invalid_argument, "MoD capacity " + std::to_string(c) + " is outside (0, 1]");
  mod_capacity_ = c;
  mod_flops_ = 0;
  return *this;
}

CalibrateOptions& CalibrateOptions::mod_flops(double share) {
  if (!(share > 0 && share <= 1))
    throw Error(ErrorCode::invalid_argument, "MoD FLOPs share " + std::to_string(share) + " is outside (0, 1]");
  mod_flops_ = share;
  mod_capacity_ = 0;
  return *this;
}

CalibrateOptions& CalibrateOptions::acm_budget(double b) {
  if (!(b > 0 && b <= 1)) throw Error(ErrorCode::invalid_argument, "ACM budget " + std::to_string(b) + " is outside (0, 1]");
  acm_budget_ = b;
  return *this;
}

CalibrateOptions& CalibrateOptions::acm_learners(int n) {
  if (n < 0) throw Error(ErrorCode::invalid_argument, "ACM learners " + std::to_string(n) + " is negative");
  acm_learners_ = n;
  return *this;
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Label ids of `rows` in the model's label list; an unknown label names its row.
std::vector<int> label_ids(std::span<const LabelledText> rows, const std::vector<std::string>& labels, const char* what) {
  std::unordered_map<std::string, int> id;
  for (std::size_t i = 0; i < labels.size(); ++i) id.emplace(labels[i], static_cast<int>(i));
  std::vector<int> out(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto it = id.find(rows[i].label);
    if (it == id.end())
      throw Error(ErrorCode::invalid_argument, std::string(what) + " row " + std::to_string(i + 1) + ": label \"" +
                                                   rows[i].label + "\" is not one of the model's " +
                                                   std::to_string(labels.size()) + " labels");
    out[i] = it->second;
  }
  return out;
}

propose::RuleSet read_rules(const fs::path& file, const std::vector<std::string>& labels) {
  if (file.empty()) return {};
  std::ifstream in(file);
  if (!in) throw Error(ErrorCode::io, file.string() + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return propose::RuleSet::parse(text.str(), labels, file.string());
}

// The transformer's label ids for `texts`, in chunks, with progress.
std::vector<int> transformer_labels(const Engine& engine, const std::vector<std::string>& texts, const char* what,
                                    const ProgressCallback& progress) {
  std::vector<int> out(texts.size());
  constexpr std::size_t chunk = 256;
  const std::string stage = std::string("running the transformer on the ") + what;
  for (std::size_t first = 0; first < texts.size(); first += chunk) {
    if (progress) progress(stage, first, texts.size());
    const std::size_t last = std::min(texts.size(), first + chunk);
    const std::vector<std::string> part(texts.begin() + first, texts.begin() + last);
    std::vector<Answer> answers;
    try {
      answers = engine.classify(part);
    } catch (const Error& e) {
      throw Error(e.code(), std::string(what) + " rows " + std::to_string(first + 1) + "–" + std::to_string(last) + ": " +
                                e.what());
    }
    for (std::size_t i = first; i < last; ++i) out[i] = answers[i - first].label_id;
  }
  if (progress) progress(stage, texts.size(), texts.size());
  return out;
}

// One utterance per line; blank lines skipped, nothing else dropped.
std::vector<std::string> read_lines(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw Error(ErrorCode::io, file.string() + ": cannot open");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(std::move(line));
  }
  if (lines.empty()) throw Error(ErrorCode::invalid_argument, file.string() + ": no utterances");
  return lines;
}

CalibrationReport write_and_report(const fs::path& model, const CalibrateOptions& options,
                                   const RouterPackage& package, CalibrationReport report) {
  const PackageFiles files = package_files(model, options.out());
  if (!files.json.parent_path().empty()) fs::create_directories(files.json.parent_path());  // "model.gguf": here
  write_package(files, package);
  report.certificate = package.certificate;
  report.skim_json = files.json;
  report.skim_safetensors = files.tensors;
  spdlog::debug("skim-calibrate: wrote {} ({})", report.skim_json.string(),
                report.certificate.certified ? "certified" : "uncertified");
  return report;
}

// ACM gates on `target` into the package and the report; returns them packed.
execute::acm::WidthGating fit_acm_into(calibration::AcmTarget& target, const Engine::Impl& engine,
                                       const CalibrateOptions& options, RouterPackage& package,
                                       CalibrationReport& report) {
  calibration::AcmFitOptions acm;
  acm.budget = options.acm_budget();
  acm.learners = options.acm_learners();
  acm.refit = options.acm_refit();
  acm.layers = options.acm_layers();
  acm.progress = options.progress();
  kernels::set_thread_count(engine.options.threads());
  calibration::AcmFit fit = calibration::fit_acm(target, engine.backend, acm);
  fit.report["with_mod"] = package.mod.has_value();
  for (const auto& l : fit.spec.layers) report.acm_layers.push_back(l.layer);
  report.acm_learners = fit.spec.layers.empty() ? 0 : fit.spec.layers.front().learners;
  report.acm_ffn_flops_share = fit.ffn_flops_share;
  report.acm_agreement = fit.agreement;
  report.acm_seconds = fit.seconds;
  package.acm = std::move(fit.spec);
  package.acm_fit = std::move(fit.report);
  return std::move(fit.gating);
}

}  // namespace

CalibrationReport calibrate(const fs::path& model_dir, std::span<const LabelledText> train,
                            std::span<const LabelledText> calibration, const CalibrateOptions& options) {
  if (train.empty() && !options.fits_mod() && !options.fits_acm())
    throw Error(ErrorCode::invalid_argument, "empty training set");
  if (calibration.empty()) throw Error(ErrorCode::invalid_argument, "empty calibration set");
  // Dense and without a router: an existing package must not shape what is fitted.
  auto engine = Engine::open(model_dir, Options().threads(options.threads()).router(false).mod(false).acm(false));
  const auto& labels = engine->info().labels;
  const auto& progress = options.progress();
  std::vector<std::string> calib_texts(calibration.size());
  for (std::size_t i = 0; i < calibration.size(); ++i) calib_texts[i] = calibration[i].text;

  CalibrationReport report;
  report.calibration_rows = calibration.size();
  RouterPackage package;
  package.model_hash = model_content_hash(model_dir);
  package.labels = labels;

  // Token routers first: the transformer the gate is certified against is
  // the one that runs, routing included.
  if (options.fits_mod()) {
    calibration::ModFitOptions mod;
    mod.capacity = options.mod_capacity();
    mod.flops_share = options.mod_flops();
    mod.layers = options.mod_layers();
    mod.progress = progress;
    calibration::ModFit fit = calibration::fit_mod_routers(engine->impl(), calib_texts, mod);
    for (const auto& b : fit.routing.blocks) {
      report.mod_layers.push_back(b.layer);
      report.mod_capacities.push_back(b.capacity);
    }
    report.mod_flops_share = fit.flops_share;
    report.mod_agreement = fit.report.at("argmax_agreement").get<double>();
    report.mod_seconds = fit.seconds;
    package.mod = std::move(fit.routing);
    package.mod_fit = std::move(fit.report);
  }
  // Then the FFN gates, on the FFN inputs the routed model produces.
  std::optional<execute::acm::WidthGating> width;
  if (options.fits_acm()) {
    const auto store = format::TensorStore::open_directory(model_dir);
    const auto target = calibration::encoder_target(engine->impl(), store, calib_texts,
                                                    package.mod ? &*package.mod : nullptr,
                                                    calibration::kAcmSensitivityTokens);
    width = fit_acm_into(*target, engine->impl(), options, package, report);
  }
  if (train.empty()) return write_and_report(model_dir, options, package, report);

  if (labels.empty())
    throw Error(ErrorCode::model, model_dir.string() + ": the model has no classification labels (config has no id2label)");
  const std::vector<int> train_ids = label_ids(train, labels, "training");
  const std::vector<int> calib_ids = label_ids(calibration, labels, "calibration");
  for (const auto& label : options.never_cache())
    if (std::find(labels.begin(), labels.end(), label) == labels.end())
      throw Error(ErrorCode::invalid_argument, "never-cache label \"" + label + "\" is not one of the model's labels");
  report.train_rows = train.size();
  report.has_proposer = true;
  package.never_cache = options.never_cache();
  package.rules = read_rules(options.rules(), labels);

  // The proposer, rounded as it will be stored so the certificate speaks for the stored weights.
  std::vector<std::string> train_texts(train.size());
  for (std::size_t i = 0; i < train.size(); ++i) train_texts[i] = train[i].text;
  std::vector<int> train_labels = train_ids;
  if (!options.distill().empty()) {
    std::vector<std::string> pool = read_lines(options.distill());
    const std::vector<int> labelled = transformer_labels(*engine, pool, "distillation set", progress);
    report.distill_rows = pool.size();
    train_texts.insert(train_texts.end(), std::make_move_iterator(pool.begin()), std::make_move_iterator(pool.end()));
    train_labels.insert(train_labels.end(), labelled.begin(), labelled.end());
  }

  propose::NgramOptions ngram;
  if (options.ngram_buckets()) ngram.buckets = options.ngram_buckets();
  if (options.ngram_dim()) ngram.dim = options.ngram_dim();
  if (options.ngram_epochs()) ngram.epochs = options.ngram_epochs();
  ngram.seed = options.seed();
  auto start = Clock::now();
  if (progress) progress("training the n-gram proposer", 0, train_texts.size());
  package.proposer.emplace(
      propose::NgramClassifier::train(train_texts, train_labels, labels.size(), ngram).rounded_to_f16());
  report.proposer_train_seconds = seconds_since(start);
  if (progress) progress("training the n-gram proposer", train_texts.size(), train_texts.size());

  // The transformer's answers: the reference the certificate is about.
  start = Clock::now();
  std::vector<int> transformer;
  if (package.mod || width) {
    std::optional<execute::mod::TokenRouting> routing;
    if (package.mod) routing.emplace(*package.mod, execute::mod::Scorer::learned, 0, true);
    std::optional<execute::acm::WidthRouting> widths;
    if (width) widths.emplace(*width, execute::acm::Gate::learned);
    const auto outputs = calibration::run_encoder_on(engine->impl(), calib_texts,
                                                     {routing ? &*routing : nullptr, widths ? &*widths : nullptr});
    for (std::size_t i = 0; i < calib_texts.size(); ++i) transformer.push_back(outputs.argmax(i));
  } else {
    transformer = transformer_labels(*engine, calib_texts, "calibration set", progress);
  }
  report.transformer_seconds = seconds_since(start);

  // Rows the rules answer are the user's word, not the proposer's: they are
  // left out of the certificate, as they are left out of the gate at run time.
  std::vector<gate::CalibrationSample> samples;
  format::ContentHash data_hash;
  std::size_t proposer_correct = 0, transformer_correct = 0, agree = 0;
  for (std::size_t i = 0; i < calibration.size(); ++i) {
    data_hash.update_field(calibration[i].text).update_field(labels[transformer[i]]);
    transformer_correct += transformer[i] == calib_ids[i];
    const auto prediction = package.proposer->predict(calibration[i].text);
    proposer_correct += prediction.label == calib_ids[i];
    agree += prediction.label == transformer[i];
    if (package.rules.match(propose::normalize_for_match(calibration[i].text))) {
      ++report.rule_rows;
      continue;
    }
    samples.push_back({package.proposer->score(prediction), prediction.label != transformer[i], prediction.label});
  }
  const double n = static_cast<double>(calibration.size());
  report.proposer_accuracy = proposer_correct / n;
  report.transformer_accuracy = transformer_correct / n;
  report.agreement = agree / n;

  gate::CertifyOptions certify;
  certify.epsilon = options.epsilon();
  certify.delta = options.delta();
  certify.risk = options.risk();
  certify.per_label = options.per_label();
  certify.labels = options.per_label() ? labels.size() : 0;
  if (samples.empty()) {
    package.certificate.reason = "every calibration row was answered by a rule; nothing left to certify";
    package.certificate.epsilon = options.epsilon();
    package.certificate.delta = options.delta();
    package.certificate.risk = options.risk();
  } else {
    package.certificate = gate::certify(samples, certify);
  }
  package.certificate.data_hash = data_hash.hex();
  package.certificate.proposer_version = proposer_stack_version(*package.proposer, package.rules);
  package.calibration = {{"train_rows", report.train_rows},
                         {"distill_rows", report.distill_rows},
                         {"calibration_rows", report.calibration_rows},
                         {"rule_rows", report.rule_rows},
                         {"proposer_train_seconds", report.proposer_train_seconds},
                         {"proposer_accuracy", report.proposer_accuracy},
                         {"transformer_accuracy", report.transformer_accuracy},
                         {"agreement", report.agreement}};

  return write_and_report(model_dir, options, package, report);
}

CalibrationReport calibrate_text(const fs::path& model, std::span<const std::string> documents,
                                 const CalibrateOptions& options) {
  if (!options.fits_mod() && !options.fits_acm())
    throw Error(ErrorCode::invalid_argument, "calibrate_text: ask for MoD routers (mod_capacity) or ACM gates (acm_budget)");
  if (options.mod_flops() > 0)
    throw Error(ErrorCode::invalid_argument, "a FLOPs target for MoD (mod_flops) is not supported for decoders; give mod_capacity");
  if (documents.empty()) throw Error(ErrorCode::invalid_argument, "no calibration documents");
  auto engine = Engine::open(model, Options().threads(options.threads()).router(false).mod(false).acm(false));
  const Engine::Impl& impl = engine->impl();
  if (!impl.decoder)
    throw Error(ErrorCode::invalid_argument, model.string() + " is an encoder; calibrate it with labelled texts (calibrate)");
  if (impl.decoder_routing)
    throw Error(ErrorCode::invalid_argument, model.string() + " is a native Mixture-of-Depths checkpoint: it routes with "
                                             "its own trained routers, and fitted ones do not apply to it");
  kernels::set_thread_count(options.threads());
  CalibrationReport report;
  report.calibration_rows = documents.size();
  RouterPackage package;
  package.model_hash = model_content_hash(model);
  const DecoderWeights weights = open_decoder_weights(model);

  const auto sequences = calibration::decoder_sequences(impl, documents);
  // One target (cache, workspace, spread) for every measurement below.
  const auto target = calibration::decoder_target(impl, *weights.source, weights.naming, sequences, nullptr,
                                                  calibration::kAcmSensitivityTokens);
  if (options.fits_mod()) {
    const auto start = Clock::now();
    // Measured on a spread of the documents, against the dense model.
    const calibration::RoutedRun measure = [&](const execute::mod::Routing* routing) {
      target->route(routing);
      return target->run(nullptr, true);
    };
    package.mod = calibration::fit_decoder_routers(*impl.decoder, sequences, options.mod_layers(),
                                                   options.mod_capacity(), package.mod_fit, measure);
    for (const auto& b : package.mod->blocks) {
      report.mod_layers.push_back(b.layer);
      report.mod_capacities.push_back(b.capacity);
    }
    report.mod_flops_share = package.mod_fit.at("flops_share").get<double>();
    report.mod_agreement = package.mod_fit.at("argmax_agreement").get<double>();
    report.mod_seconds = seconds_since(start);
    package.mod_fit["checked_on"] = target->check_on;
  }
  if (options.fits_acm()) {
    target->route(package.mod ? &*package.mod : nullptr);
    fit_acm_into(*target, impl, options, package, report);
  }
  return write_and_report(model, options, package, report);
}

}  // namespace skim

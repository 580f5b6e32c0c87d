// skim-calibrate: fit the meaning-first router, Mixture-of-Depths token
// routers and/or Adaptive Computation Module gates of a classification
// model, or the routers and/or gates of a decoder on plain text (--text).
//   skim-calibrate --model DIR [--train TRAIN] --calib CALIB [--split-train S]
//                  [--split-calib S] [--epsilon E] [--delta D]
//                  [--risk selective|joint] [--per-label] [--rules FILE]
//                  [--never-cache LABEL ...] [--distill FILE]
//                  [--mod-capacity C | --mod-flops F] [--mod-layers L,L,...]
//                  [--acm-budget B] [--acm-learners N] [--acm-layers L,L,...] [--acm-refit]
//                  [--out DIR] [--threads N]
// With --mod-capacity / --mod-flops, first fits token routers on CALIB's
// texts (forward passes only); with --acm-budget, then splits each FFN into
// learners and fits per-token gates on them. With --train, trains the n-gram proposer on
// TRAIN, runs the transformer (routed, if so) on CALIB and certifies the
// gate. Writes skim.json + skim.safetensors into the model directory (or
// --out). Data: TSV text<TAB>label or CLINC150 JSON (--split picks the part
// of both files, or --split-train / --split-calib each).
//   skim-calibrate --model MODEL --text FILE [--mod-capacity C] [--mod-layers ...]
//                  [--acm-budget B] [--acm-learners N] [--acm-layers ...] [--acm-refit] [--out DIR]
// A decoder (.gguf, llama2.c .bin or Hugging Face directory) on the documents
// of FILE (split on <|endoftext|> or blank lines); the package goes beside a
// single-file model as <file>.skim.json / <file>.skim.safetensors.
// Any error: one line on stderr, exit code 2.
#include <CLI/CLI.hpp>
#include <chrono>
#include <algorithm>
#include <cstdio>
#include <unistd.h>
#include <iostream>
#include <skim/skim.hpp>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Calibrate the meaning-first router of a skim classification model"};
  std::string model, train, calib, text, split, split_train, split_calib, rules, out, distill, risk = "selective";
  std::vector<std::string> never_cache;
  double epsilon = 0.01, delta = 0.05, mod_capacity = 0, mod_flops = 0, acm_budget = 0;
  std::vector<int> mod_layers, acm_layers;
  int threads = 0, acm_learners = 0;
  bool per_label = false, acm_refit = false;
  app.add_option("--model", model, "model directory (a decoder: .gguf, .bin or directory, with --text)")->required();
  app.add_option("--train", train,
                 "proposer training data (TSV text<TAB>label or CLINC150 JSON); without it, only MoD routers are fitted");
  auto* calib_option = app.add_option("--calib", calib, "calibration data, drawn like production traffic");
  app.add_option("--text", text, "a decoder's calibration documents (plain text)")->excludes(calib_option);
  app.add_option("--split", split, "CLINC150 JSON: the part of --train and --calib (train, val, test)");
  app.add_option("--split-train", split_train, "CLINC150 JSON: the part of --train (default train)");
  app.add_option("--split-calib", split_calib, "CLINC150 JSON: the part of --calib (default val)");
  app.add_option("--epsilon", epsilon, "largest disagreement rate with the transformer to certify");
  app.add_option("--delta", delta, "the certificate fails with probability at most delta");
  app.add_option("--risk", risk, "selective: P(disagree | accepted); joint: P(accepted and disagree)")
      ->check(CLI::IsMember({"selective", "joint"}));
  app.add_flag("--per-label", per_label, "one certificate per proposed label at delta/G");
  app.add_option("--rules", rules, "JSON rules file: [{\"label\": ..., \"regex\"|\"keywords\": ...}]");
  app.add_option("--never-cache", never_cache, "labels the answer cache must never hold");
  app.add_option("--distill", distill,
                 "unlabeled utterances (one per line) the transformer labels for the proposer to train on too");
  auto* capacity_option = app.add_option(
      "--mod-capacity", mod_capacity, "MoD: average share of tokens the routed blocks process, in (0, 1]");
  app.add_option("--mod-flops", mod_flops, "MoD: share of the encoder's dense FLOPs to execute, in (0, 1]")
      ->excludes(capacity_option);
  app.add_option("--mod-layers", mod_layers, "MoD: blocks that may be routed (default: all but the first two and the last)")
      ->delimiter(',');
  app.add_option("--acm-budget", acm_budget, "ACM: average share of FFN width the gates leave in use, in (0, 1]");
  app.add_option("--acm-learners", acm_learners, "ACM: learners per FFN (default: FFN width / 256, within [4, 16])")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--acm-layers", acm_layers, "ACM: FFNs to make adaptive (default: all)")->delimiter(',');
  app.add_flag("--acm-refit", acm_refit, "ACM: refit each prefix's down projection by least squares");
  app.add_option("--out", out, "where to write skim.json and skim.safetensors (default: --model)");
  app.add_option("--threads", threads, "worker threads (0: one per core)")->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "skim-calibrate: " << e.what() << "\n";
    return 2;
  }

  try {
    const bool tty = isatty(fileno(stderr));
    auto progress = [&](std::string_view stage, std::size_t done, std::size_t total) {
      // A line per 10% (a redrawn line on a terminal) so long steps show life.
      const std::size_t step = std::max<std::size_t>(1, total / 10);
      if (done != total && done % step != 0) return;
      std::cerr << (tty ? "\r" : "") << "skim-calibrate: " << stage << " " << done << "/" << total
                << (tty && done != total ? "" : "\n") << std::flush;
    };
    skim::CalibrateOptions options;
    options.epsilon(epsilon).delta(delta).risk(risk == "joint" ? skim::Risk::joint : skim::Risk::selective)
        .per_label(per_label).never_cache(never_cache).threads(threads).progress(progress);
    if (!rules.empty()) options.rules(rules);
    if (!out.empty()) options.out(out);
    if (!distill.empty()) options.distill(distill);
    if (mod_capacity != 0) options.mod_capacity(mod_capacity);
    if (mod_flops != 0) options.mod_flops(mod_flops);
    if (!mod_layers.empty()) options.mod_layers(mod_layers);
    if (app.count("--acm-budget")) options.acm_budget(acm_budget);
    options.acm_learners(acm_learners).acm_refit(acm_refit);
    if (!acm_layers.empty()) options.acm_layers(acm_layers);
    if (!text.empty()) {
      if (!train.empty()) throw skim::Error(skim::ErrorCode::invalid_argument, "--train does not apply with --text");
      if (!options.fits_mod() && !options.fits_acm())
        throw skim::Error(skim::ErrorCode::invalid_argument, "--text needs --mod-capacity or --acm-budget (or both)");
      const auto documents = skim::read_documents(text);
      std::cerr << "skim-calibrate: " << documents.size() << " documents\n";
      const skim::CalibrationReport r = skim::calibrate_text(model, documents, options);
      if (options.fits_mod()) {
        std::printf("mod: %zu routed blocks:", r.mod_layers.size());
        for (std::size_t i = 0; i < r.mod_layers.size(); ++i) std::printf(" layer %d at %.3f", r.mod_layers[i], r.mod_capacities[i]);
        std::printf("; on a spread of the documents: %.1f%% of the dense FLOPs, next-token agreement with dense %.4f (%.1f s)\n",
                    100 * r.mod_flops_share, r.mod_agreement, r.mod_seconds);
      }
      if (options.fits_acm())
        std::printf("acm: %zu adaptive FFNs of %d learners; on a spread of the documents: %.1f%% of the FFNs' dense FLOPs, "
                    "next-token agreement with the model without ACM %.4f (%.1f s)\n",
                    r.acm_layers.size(), r.acm_learners, 100 * r.acm_ffn_flops_share, r.acm_agreement, r.acm_seconds);
      std::printf("wrote %s and %s\n", r.skim_json.string().c_str(), r.skim_safetensors.string().c_str());
      return 0;
    }
    if (calib.empty()) throw skim::Error(skim::ErrorCode::invalid_argument, "--calib (or, for a decoder, --text) is required");
    if (train.empty() && !options.fits_mod() && !options.fits_acm())
      throw skim::Error(skim::ErrorCode::invalid_argument,
                        "--train is required unless MoD routers or ACM gates are fitted (--mod-capacity, --mod-flops, --acm-budget)");
    auto pick = [&](const std::string& one, const std::string& fallback) { return one.empty() ? split.empty() ? fallback : split : one; };
    const auto train_rows =
        train.empty() ? std::vector<skim::LabelledText>{} : skim::read_labelled(train, pick(split_train, "train"));
    const auto calib_rows = skim::read_labelled(calib, pick(split_calib, "val"));
    std::cerr << "skim-calibrate: " << train_rows.size() << " training rows, " << calib_rows.size()
              << " calibration rows\n";
    const skim::CalibrationReport r = skim::calibrate(model, train_rows, calib_rows, options);
    const auto& c = r.certificate;
    if (options.fits_mod()) {
      std::printf("mod: %zu routed blocks:", r.mod_layers.size());
      for (std::size_t i = 0; i < r.mod_layers.size(); ++i) std::printf(" layer %d at %.3f", r.mod_layers[i], r.mod_capacities[i]);
      std::printf("; on the calibration texts: %.1f%% of the encoder's dense FLOPs, argmax agreement with dense %.4f (%.1f s)\n",
                  100 * r.mod_flops_share, r.mod_agreement, r.mod_seconds);
    }
    if (options.fits_acm()) {
      std::printf("acm: %zu adaptive FFNs of %d learners; on the calibration texts: %.1f%% of the FFNs' dense FLOPs, "
                  "argmax agreement with the model without ACM %.4f (%.1f s)\n",
                  r.acm_layers.size(), r.acm_learners, 100 * r.acm_ffn_flops_share, r.acm_agreement, r.acm_seconds);
    }
    if (!r.has_proposer) {
      std::printf("wrote %s and %s\n", r.skim_json.string().c_str(), r.skim_safetensors.string().c_str());
      return 0;
    }
    if (r.distill_rows) std::printf("distillation: the transformer labelled %zu utterances\n", r.distill_rows);
    std::printf("proposer: trained on %zu rows in %.2f s; accuracy on calibration labels %.4f (transformer %.4f), "
                "agreement with the transformer %.4f\n",
                r.train_rows, r.proposer_train_seconds, r.proposer_accuracy, r.transformer_accuracy, r.agreement);
    if (r.rule_rows) std::printf("rules: answered %zu of %zu calibration rows\n", r.rule_rows, r.calibration_rows);
    if (c.certified) {
      std::printf("certified: %s risk <= %.4g with confidence %.4g", std::string(skim::to_string(c.risk)).c_str(),
                  c.epsilon, 1 - c.delta);
      if (c.label_thresholds.empty()) {
        std::printf(" at threshold %.6g\n", c.threshold);
      } else {
        const auto certified = std::count_if(c.label_thresholds.begin(), c.label_thresholds.end(),
                                             [](double t) { return t <= 1; });
        std::printf(" for %zd of %zu labels (own thresholds, delta/G each)\n", certified, c.label_thresholds.size());
      }
      std::printf("  calibration: %zu samples, %zu accepted (%.1f%% of transformer calls avoided expected), "
                  "%zu disagreements (%.4f), upper bound %.4f\n",
                  c.n, c.accepted, 100 * c.coverage, c.disagreements, c.empirical_risk, c.upper_bound);
    } else {
      std::printf("not certified: %s\n  every request will run the transformer\n", c.reason.c_str());
    }
    std::printf("wrote %s and %s\n", r.skim_json.string().c_str(), r.skim_safetensors.string().c_str());
  } catch (const std::exception& e) {
    std::cerr << "skim-calibrate: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

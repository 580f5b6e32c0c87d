// skim-eval: run a labelled set through a skim model and report quality next
// to cost, against the transformer alone on the same inputs, in one run.
//   skim-eval --model DIR --data FILE [--split S] [--no-router] [--threads N]
//             [--shadow-rate P] [--mod on|off] [--mod-capacity C]
//             [--mod-router learned|oracle|random]
//             [--acm on|off] [--acm-budget B] [--acm-gate learned|oracle|uniform]
//   skim-eval --model PATH --perplexity FILE [--threads N] [--mod on|off]
//             [--mod-router ...] [--acm on|off] [--acm-budget B] [--acm-gate ...]
// Decoders (--perplexity): scores FILE's documents (split on <|endoftext|>,
// else on blank lines), each from BOS, and prints documents, tokens,
// perplexity, the FLOPs executed and dense (and the FFNs' part), seconds,
// the routed blocks and the adaptive FFNs.
// "transformer" is the model as configured: with Mixture-of-Depths routers or
// ACM gates in the package (and --mod / --acm on), routed; transformer_flops
// and transformer_dense_flops are what its calls executed and would have
// dense, transformer_ffn_flops and transformer_dense_ffn_flops the FFNs' part.
// Prints one JSON object. Any error: one line on stderr, exit code 2.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>
#include <string>
#include <vector>

namespace {

// The adaptive FFNs the engine runs with, or null.
nlohmann::json acm_json(const skim::ModelInfo& info, const std::string& gate) {
  if (info.acm_layers.empty()) return nullptr;
  return {{"gate", gate}, {"layers", info.acm_layers}, {"learners", info.acm_learners}, {"budget", info.acm_budget}};
}

using Clock = std::chrono::steady_clock;

struct Run {
  std::vector<skim::Answer> answers;
  double seconds = 0;
};

// One request at a time, as a service sees them.
Run run(const skim::Engine& engine, const std::vector<skim::LabelledText>& rows) {
  Run r;
  r.answers.reserve(rows.size());
  const auto start = Clock::now();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    try {
      r.answers.push_back(engine.classify(rows[i].text, skim::Request().id(std::to_string(i))));
    } catch (const skim::Error& e) {
      throw skim::Error(e.code(), "row " + std::to_string(i + 1) + ": " + e.what());
    }
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return r;
}

// Accuracy against the labels; with an "oos" label also in-scope accuracy and
// out-of-scope recall (CLINC150's measures).
void add_quality(nlohmann::json& out, const std::string& prefix, const std::vector<skim::LabelledText>& rows,
                 const std::vector<skim::Answer>& answers) {
  std::size_t correct = 0, in_scope = 0, in_correct = 0, oos = 0, oos_found = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const bool ok = answers[i].label == rows[i].label;
    correct += ok;
    if (rows[i].label == "oos") {
      ++oos;
      oos_found += ok;
    } else {
      ++in_scope;
      in_correct += ok;
    }
  }
  out[prefix + "accuracy"] = static_cast<double>(correct) / rows.size();
  if (oos > 0 && in_scope > 0) {
    out[prefix + "in_scope_accuracy"] = static_cast<double>(in_correct) / in_scope;
    out[prefix + "oos_recall"] = static_cast<double>(oos_found) / oos;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Evaluate a skim model on labelled data: quality and cost, router against transformer alone"};
  std::string model, data, split;
  int threads = 0;
  bool no_router = false;
  double shadow_rate = 0.05, mod_capacity = 0;
  std::string mod = "on", mod_router = "learned", acm = "on", acm_gate = "learned";
  double acm_budget = 0;
  app.add_option("--model", model, "model directory")->required();
  std::string perplexity;
  auto* data_option = app.add_option("--data", data, "labelled data: TSV text<TAB>label, or CLINC150 JSON");
  app.add_option("--perplexity", perplexity, "decoders: score this text file's documents instead")
      ->excludes(data_option);
  app.add_option("--split", split, "part of a CLINC150 JSON file (train, val, test)");
  app.add_option("--threads", threads, "worker threads (0: one per core)")->check(CLI::NonNegativeNumber);
  app.add_flag("--no-router", no_router, "transformer only (the router's fields are then omitted)");
  app.add_option("--shadow-rate", shadow_rate, "share of accepted proposals also run through the transformer")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--mod", mod, "Mixture-of-Depths routing from the package: on (default) or off")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--mod-capacity", mod_capacity, "one capacity in (0, 1] for every routed block");
  app.add_option("--mod-router", mod_router, "how routed blocks score tokens: learned, oracle (upper bound), random")
      ->check(CLI::IsMember({"learned", "oracle", "random"}));
  app.add_option("--acm", acm, "Adaptive Computation Module gates from the package: on (default) or off")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--acm-budget", acm_budget, "mean share of FFN width in (0, 1] instead of the package's");
  app.add_option("--acm-gate", acm_gate, "how FFNs choose learners: learned, oracle (upper bound), uniform (static)")
      ->check(CLI::IsMember({"learned", "oracle", "uniform"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "skim-eval: " << e.what() << "\n";
    return 2;
  }

  try {
    if (app.count("--mod-capacity") && !(mod_capacity > 0 && mod_capacity <= 1))
      throw skim::Error(skim::ErrorCode::invalid_argument,
                        "--mod-capacity " + std::to_string(mod_capacity) + " is outside (0, 1]");
    if (data.empty() && perplexity.empty())
      throw skim::Error(skim::ErrorCode::invalid_argument, "give --data (classifiers) or --perplexity (decoders)");
    if (app.count("--acm-budget") && !(acm_budget > 0 && acm_budget <= 1))
      throw skim::Error(skim::ErrorCode::invalid_argument,
                        "--acm-budget " + std::to_string(acm_budget) + " is outside (0, 1]");
    skim::Options options;
    options.threads(threads).mod(mod == "on").mod_capacity(mod_capacity).acm(acm == "on").acm_budget(acm_budget);
    options.acm_gate(acm_gate == "oracle"    ? skim::AcmGate::oracle
                     : acm_gate == "uniform" ? skim::AcmGate::uniform
                                             : skim::AcmGate::learned);
    options.mod_router(mod_router == "oracle"   ? skim::ModRouter::oracle
                       : mod_router == "random" ? skim::ModRouter::random
                                                : skim::ModRouter::learned);
    if (!perplexity.empty()) {
      auto engine = skim::Engine::open(model, options);
      if (!engine->info().is_decoder)
        throw skim::Error(skim::ErrorCode::invalid_argument,
                          "--perplexity needs a decoder; " + model + " is a " + engine->info().model_type + " encoder");
      const auto docs = skim::read_documents(perplexity);
      auto session = engine->session();
      skim::Perplexity p;
      try {
        p = session.perplexity(docs);
      } catch (const skim::Error& e) {
        throw skim::Error(e.code(), perplexity + ": " + e.what());
      }
      nlohmann::json blocks = nlohmann::json::array();
      for (const auto& b : engine->info().mod_blocks) blocks.push_back({{"layer", b.layer}, {"capacity", b.capacity}});
      const nlohmann::json out = {{"model", model},
                                  {"data", perplexity},
                                  {"threads", threads},
                                  {"documents", p.documents},
                                  {"truncated_documents", p.truncated_documents},
                                  {"tokens", p.tokens},
                                  {"perplexity", p.perplexity},
                                  {"transformer_flops", p.cost.flops},
                                  {"transformer_dense_flops", p.cost.dense_flops},
                                  {"transformer_ffn_flops", p.cost.ffn_flops},
                                  {"transformer_dense_ffn_flops", p.cost.dense_ffn_flops},
                                  {"seconds", p.cost.seconds},
                                  {"mod", blocks.empty() ? nlohmann::json(nullptr)
                                                         : nlohmann::json{{"router", mod_router}, {"layers", blocks}}},
                                  {"acm", acm_json(engine->info(), acm_gate)}};
      std::cout << out.dump(1) << "\n";
      return 0;
    }
    const auto rows = skim::read_labelled(data, split);
    auto dense = skim::Engine::open(model, skim::Options(options).router(false));
    const auto& labels = dense->info().labels;
    for (std::size_t i = 0; i < rows.size(); ++i)
      if (std::find(labels.begin(), labels.end(), rows[i].label) == labels.end())
        throw skim::Error(skim::ErrorCode::invalid_argument, data + " row " + std::to_string(i + 1) + ": label \"" +
                                                                 rows[i].label + "\" is not one of the model's labels");

    const Run transformer = run(*dense, rows);
    nlohmann::json out = {{"model", model}, {"data", data}, {"n", rows.size()}, {"threads", threads}};
    if (!split.empty()) out["split"] = split;
    add_quality(out, "transformer_", rows, transformer.answers);
    double t_flops = 0, t_dense = 0, t_ffn = 0, t_dense_ffn = 0;
    for (const auto& a : transformer.answers)
      t_flops += a.cost.flops, t_dense += a.cost.dense_flops, t_ffn += a.cost.ffn_flops, t_dense_ffn += a.cost.dense_ffn_flops;
    out["transformer_flops"] = t_flops;
    out["transformer_dense_flops"] = t_dense;
    out["transformer_ffn_flops"] = t_ffn;
    out["transformer_dense_ffn_flops"] = t_dense_ffn;
    out["transformer_only_seconds"] = transformer.seconds;
    const auto& blocks = dense->info().mod_blocks;
    if (blocks.empty()) {
      out["mod"] = nullptr;
    } else {
      nlohmann::json layers = nlohmann::json::array();
      for (const auto& b : blocks) layers.push_back({{"layer", b.layer}, {"capacity", b.capacity}});
      out["mod"] = {{"router", mod_router}, {"layers", layers}};
    }
    out["acm"] = acm_json(dense->info(), acm_gate);

    if (no_router) {
      add_quality(out, "", rows, transformer.answers);
      out["router"] = "off";
      out["transformer_calls"] = rows.size();
      out["call_rate"] = 1.0;
      out["flops"] = t_flops;
      out["dense_flops"] = t_dense;
      out["seconds"] = transformer.seconds;
    } else {
      auto routed_engine = skim::Engine::open(model, skim::Options(options).shadow_rate(shadow_rate));
      const Run routed = run(*routed_engine, rows);
      add_quality(out, "", rows, routed.answers);
      std::map<std::string, std::size_t> routes;
      std::size_t accepted = 0, accepted_disagreements = 0;
      double flops = 0, dense_flops = 0;
      for (std::size_t i = 0; i < rows.size(); ++i) {
        const auto& a = routed.answers[i];
        ++routes[std::string(skim::to_string(a.route))];
        if (a.route != skim::Route::transformer) {
          ++accepted;
          accepted_disagreements += a.label != transformer.answers[i].label;
        }
        flops += a.cost.flops;
        dense_flops += transformer.answers[i].cost.dense_flops;
      }
      const skim::RouterStats stats = routed_engine->stats();
      out["router"] = std::string(skim::to_string(stats.state));
      out["routes"] = routes;
      out["transformer_calls"] = stats.transformer_calls;
      out["call_rate"] = static_cast<double>(stats.transformer_calls) / rows.size();
      out["accepted"] = accepted;
      out["accepted_disagreements"] = accepted_disagreements;
      out["accepted_disagreement_rate"] = accepted ? static_cast<double>(accepted_disagreements) / accepted : 0.0;
      out["flops"] = flops;
      out["dense_flops"] = dense_flops;
      out["seconds"] = routed.seconds;
      out["speedup"] = routed.seconds > 0 ? transformer.seconds / routed.seconds : 0.0;
      const auto& c = stats.certificate;
      out["certificate"] = {{"certified", c.certified}, {"epsilon", c.epsilon}, {"delta", c.delta},
                            {"threshold", c.certified ? c.threshold : -1.0}, {"calibration_n", c.n},
                            {"calibration_coverage", c.coverage}, {"upper_bound", c.upper_bound}};
      out["monitor"] = {{"shadowed", stats.shadowed}, {"shadow_disagreements", stats.shadow_disagreements},
                        {"live_disagreement", stats.live_disagreement}, {"live_upper_bound", stats.live_upper_bound},
                        {"e_value", stats.e_value}, {"alarms", stats.alarms}, {"recalibrations", stats.recalibrations}};
    }
    std::cout << out.dump(1) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "skim-eval: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

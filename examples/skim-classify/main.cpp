// skim-classify: label utterances with a skim model.
//   skim-classify --model DIR [--threads N] [--json] [--shadow-rate P]
//                 [--tenant T] [--no-router] [TEXT ...]
// With no TEXT, reads one utterance per line from stdin. Plain output is
// `label<TAB>score<TAB>route` per input (route: cache, rule, proposer or
// transformer; a calibrated model answers without the transformer where its
// certificate allows); --json prints one object per line. Any error: one
// line on stderr, exit code 2.
#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Classify utterances with a skim model"};
  std::string model;
  int threads = 0;
  bool json = false, no_router = false;
  double shadow_rate = 0.05;
  std::string tenant;
  std::vector<std::string> texts;
  app.add_option("--model", model, "model directory (config.json, model.safetensors, vocab)")->required();
  app.add_option("--threads", threads, "worker threads (0: one per core)")->check(CLI::NonNegativeNumber);
  app.add_flag("--json", json, "one JSON object per line");
  app.add_option("--shadow-rate", shadow_rate, "share of accepted proposals also run through the transformer")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--tenant", tenant, "tenant id: the answer cache is never shared between tenants");
  app.add_flag("--no-router", no_router, "always run the transformer");
  app.add_option("text", texts, "utterances (default: one per line from stdin)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "skim-classify: " << e.what() << "\n";
    return 2;
  }

  try {
    auto engine =
        skim::Engine::open(model, skim::Options().threads(threads).shadow_rate(shadow_rate).router(!no_router));
    const auto request = skim::Request().tenant(tenant);
    auto session = engine->session();
    auto print = [&](const std::string& text, const skim::Answer& a) {
      if (!json) {
        std::cout << a.label << '\t' << a.score << '\t' << skim::to_string(a.route) << '\n';
        return;
      }
      nlohmann::json j = {{"text", text},
                          {"label", a.label},
                          {"score", a.score},
                          {"route", std::string(skim::to_string(a.route))},
                          {"shadowed", a.shadowed},
                          {"flops", a.cost.flops},
                          {"dense_flops", a.cost.dense_flops},
                          {"ms", a.cost.seconds * 1e3},
                          {"tokens", a.tokens},
                          {"truncated", a.truncated}};
      std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    };
    if (!texts.empty()) {
      auto answers = session.classify(texts, request);
      for (std::size_t i = 0; i < texts.size(); ++i) print(texts[i], answers[i]);
    } else {
      // One line at a time, so answers stream as input arrives.
      std::string line;
      for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        try {
          print(line, session.classify(line, request));
        } catch (const skim::Error& e) {
          throw skim::Error(e.code(), "stdin line " + std::to_string(n) + ": " + e.what());
        }
        std::cout.flush();
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "skim-classify: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

// Mixture-of-Depths on a decoder, first slice: routers fitted on TinyStories
// text with calibration::fit_decoder_routers (post-hoc semantics, causal
// thresholds), then perplexity and executed FLOPs on other stories for the
// learned, oracle and random scorers against the dense model. One JSON object
// per line on stdout.
//   skim_mod_decoder_eval MODEL STORIES [--fit N] [--eval N] [--layers "2,3;1,2,3,4"]
//                         [--capacities 0.875,0.75,0.5,0.25] [--threads N]
// MODEL: a decoder skim opens (GGUF, llama2.c .bin + tokenizer beside it, HF
// directory); STORIES: documents separated by <|endoftext|>, the first N
// fit the routers, the next N are scored.
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "calibrate/mod_fit.hpp"
#include "engine/engine_impl.hpp"
#include "kernels/backend.hpp"

namespace {

using skim::execute::FlopCount;

std::vector<int> parse_ints(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoi(item));
  return out;
}

std::vector<std::string> split(const std::string& text, const std::string& separator) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t next = text.find(separator, at);
    out.push_back(text.substr(at, next == std::string::npos ? std::string::npos : next - at));
    if (next == std::string::npos) break;
    at = next + separator.size();
  }
  return out;
}

struct Result {
  double nll = 0, executed = 0, dense = 0, seconds = 0;
  std::size_t tokens = 0;
  double perplexity() const { return std::exp(nll / std::max<std::size_t>(tokens, 1)); }
};

// Position p predicts token p + 1, every sequence from BOS, in chunks.
Result score(const skim::Engine::Impl& engine, const std::vector<std::vector<std::int32_t>>& sequences,
             const skim::execute::mod::TokenRouting* routing) {
  const auto& decoder = *engine.decoder;
  const int vocab = decoder.config().vocab, chunk = 128;
  skim::execute::DecoderWorkspace ws(decoder, chunk);
  auto cache = decoder.make_cache();
  Result result;
  const auto start = std::chrono::steady_clock::now();
  for (const auto& ids : sequences) {
    cache.clear();
    for (std::size_t at = 0; at + 1 < ids.size();) {
      const std::size_t n = std::min<std::size_t>(ids.size() - 1 - at, chunk);
      const auto tokens = std::span(ids).subspan(at, n);
      FlopCount f = routing ? decoder.forward(tokens, cache, ws, *routing) : decoder.forward(tokens, cache, ws);
      for (std::size_t r = 0; r < n; r += skim::execute::LlamaDecoder::logits_rows()) {
        const int count = static_cast<int>(std::min<std::size_t>(n - r, skim::execute::LlamaDecoder::logits_rows()));
        decoder.logits(ws, static_cast<int>(r), count);
        for (int k = 0; k < count; ++k) {
          const float* l = ws.logits() + static_cast<std::size_t>(k) * vocab;
          const float top = *std::max_element(l, l + vocab);
          double sum = 0;
          for (int j = 0; j < vocab; ++j) sum += std::exp(double(l[j]) - top);
          result.nll += std::log(sum) - (double(l[ids[at + r + k + 1]]) - top);
        }
      }
      result.executed += f.executed;
      result.dense += f.dense;
      result.tokens += n;
      at += n;
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: skim_mod_decoder_eval MODEL STORIES [--fit N] [--eval N] [--layers \"2,3;1,2,3,4\"] "
                 "[--capacities 0.875,0.75,0.5,0.25] [--threads N]\n";
    return 2;
  }
  std::size_t fit_count = 200, eval_count = 200;
  std::string layer_sets = "2,3;1,2,3,4", capacities = "0.875,0.75,0.5,0.25";
  int threads = 2;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--fit") fit_count = std::stoul(value);
    else if (flag == "--eval") eval_count = std::stoul(value);
    else if (flag == "--layers") layer_sets = value;
    else if (flag == "--capacities") capacities = value;
    else if (flag == "--threads") threads = std::stoi(value);
    else {
      std::cerr << "skim_mod_decoder_eval: unknown option " << flag << "\n";
      return 2;
    }
  }
  try {
    auto engine = skim::Engine::open(argv[1], skim::Options().threads(threads));
    const auto& impl = engine->impl();
    if (!impl.decoder) throw skim::Error(skim::ErrorCode::invalid_argument, std::string(argv[1]) + " is not a decoder");
    skim::kernels::set_thread_count(threads);
    std::ifstream in(argv[2]);
    if (!in) throw skim::Error(skim::ErrorCode::io, std::string(argv[2]) + ": cannot open");
    std::stringstream text;
    text << in.rdbuf();
    std::vector<std::vector<std::int32_t>> fit, evaluation;
    for (const auto& story : split(text.str(), "<|endoftext|>")) {
      if (story.find_first_not_of(" \n\t") == std::string::npos) continue;
      std::vector<std::int32_t> ids;
      impl.sentencepiece->encode(story, true, false, ids);
      if (ids.size() > static_cast<std::size_t>(impl.llama_config.context)) ids.resize(impl.llama_config.context);
      (fit.size() < fit_count ? fit : evaluation).push_back(std::move(ids));
      if (evaluation.size() == eval_count) break;
    }
    const Result dense = score(impl, evaluation, nullptr);
    std::cout << nlohmann::json{{"router", "dense"}, {"perplexity", dense.perplexity()}, {"tokens", dense.tokens},
                                {"flops_share", 1.0}, {"seconds", dense.seconds}}
                     .dump()
              << std::endl;
    for (const auto& set : split(layer_sets, ";")) {
      const std::vector<int> layers = parse_ints(set);
      for (const auto& capacity_text : split(capacities, ",")) {
        const double capacity = std::stod(capacity_text);
        nlohmann::json report;
        const auto routing = skim::calibration::fit_decoder_routers(*impl.decoder, fit, layers, capacity, report);
        for (auto scorer : {skim::execute::mod::Scorer::learned, skim::execute::mod::Scorer::oracle,
                            skim::execute::mod::Scorer::random}) {
          const skim::execute::mod::TokenRouting routing_pass(routing, scorer, 0, false, 7);
          const Result r = score(impl, evaluation, &routing_pass);
          const char* name = scorer == skim::execute::mod::Scorer::learned  ? "learned"
                              : scorer == skim::execute::mod::Scorer::oracle ? "oracle"
                                                                             : "random";
          std::cout << nlohmann::json{{"router", name},
                                      {"layers", layers},
                                      {"capacity", capacity},
                                      {"perplexity", r.perplexity()},
                                      {"perplexity_vs_dense", r.perplexity() / dense.perplexity() - 1},
                                      {"flops_share", r.executed / r.dense},
                                      {"seconds", r.seconds},
                                      {"tokens", r.tokens},
                                      {"fit", report}}
                           .dump()
                    << std::endl;
        }
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "skim_mod_decoder_eval: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

// skim-generate: text from a LLaMA-family decoder (GGUF, llama2.c .bin, or a
// Hugging Face directory).
//   skim-generate --model PATH [--tokenizer PATH] [--prompt TEXT] [--max-tokens N]
//                 [--temperature T] [--top-k K] [--top-p P] [--seed S] [--threads N] [--ids]
//                 [--weights auto|f32|bf16|q8_0] [--bf16] [--verbose]
//   skim-generate --model PATH --perplexity FILE
// Text streams to stdout as it is generated; --ids prints the generated token
// ids instead. --perplexity scores a file (documents separated by blank lines
// or by <|endoftext|>, each from BOS, each cut at the context) and prints one
// JSON object. Any error: one line on stderr, exit code 2.
#include <CLI/CLI.hpp>
#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Generate text with a skim decoder"};
  std::string model, tokenizer, prompt, perplexity_file;
  std::size_t max_tokens = 256;
  float temperature = 0.f, top_p = 1.f;
  int top_k = 0, threads = 0;
  std::uint64_t seed = 0;
  bool ids = false, verbose = false, bf16 = false;
  std::string weights = "auto";
  app.add_option("--model", model, "GGUF file, llama2.c .bin, or Hugging Face directory")->required();
  app.add_option("--tokenizer", tokenizer, "tokenizer file for a llama2.c checkpoint (tok512.bin, tokenizer.bin)");
  app.add_option("--prompt", prompt, "text to continue (default: start from BOS)");
  app.add_option("--max-tokens", max_tokens, "tokens to generate at most");
  app.add_option("--temperature", temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  app.add_option("--top-k", top_k, "sample among the k most likely (0 = off)")->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", top_p, "nucleus sampling mass (1 = off)")->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--seed", seed, "random seed for sampling");
  app.add_option("--threads", threads, "worker threads (0: one per core)")->check(CLI::NonNegativeNumber);
  app.add_flag("--ids", ids, "print generated token ids instead of text");
  app.add_option("--weights", weights,
                 "GEMM weight packing: auto (f32; Q8_0 stays Q8_0), f32, bf16, q8_0 (int8 compute)")
      ->check(CLI::IsMember({"auto", "f32", "bf16", "q8_0"}));
  app.add_flag("--bf16", bf16, "same as --weights bf16");
  app.add_flag("--verbose", verbose, "print token counts and speed on stderr");
  app.add_option("--perplexity", perplexity_file, "score this text file instead of generating");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "skim-generate: " << e.what() << "\n";
    return 2;
  }

  try {
    skim::Options options;
    options.threads(threads);
    if (bf16) weights = "bf16";
    options.weight_precision(weights == "f32"    ? skim::WeightPrecision::f32
                             : weights == "bf16" ? skim::WeightPrecision::bf16
                             : weights == "q8_0" ? skim::WeightPrecision::q8_0
                                                 : skim::WeightPrecision::automatic);
    if (!tokenizer.empty()) options.tokenizer(tokenizer);
    auto engine = skim::Engine::open(model, options);
    auto session = engine->session();

    if (!perplexity_file.empty()) {
      const auto docs = skim::read_documents(perplexity_file);
      skim::Perplexity p;
      try {
        p = session.perplexity(docs);
      } catch (const skim::Error& e) {
        throw skim::Error(e.code(), perplexity_file + ": " + e.what());
      }
      nlohmann::json j = {{"documents", p.documents}, {"truncated_documents", p.truncated_documents},
                          {"tokens", p.tokens},       {"perplexity", p.perplexity},
                          {"flops", p.cost.flops},    {"dense_flops", p.cost.dense_flops},
                          {"seconds", p.cost.seconds}};
      std::cout << j.dump() << "\n";
      return 0;
    }

    auto gen_options = skim::GenerateOptions()
                           .max_tokens(max_tokens)
                           .temperature(temperature)
                           .top_k(top_k)
                           .top_p(top_p)
                           .seed(seed);
    std::size_t streamed = 0;
    auto stream = [&](std::string_view piece, std::int32_t) {
      if (!ids) std::cout << piece << std::flush;
      streamed += piece.size();
      return true;
    };
    auto g = session.generate(prompt, gen_options, stream);
    if (ids) {
      for (std::size_t i = 0; i < g.tokens.size(); ++i) std::cout << (i ? " " : "") << g.tokens[i];
    } else {
      std::cout << g.text.substr(streamed);  // a character that never completed, as U+FFFD
    }
    std::cout << "\n";
    if (verbose)
      std::cerr << "skim-generate: " << g.tokens.size() << " tokens, stop " << skim::to_string(g.stop) << ", prefill "
              << g.prompt_tokens << " tokens in " << g.prefill_seconds * 1e3 << " ms, decode "
              << (g.tokens.size() > 1 ? (g.tokens.size() - 1) / g.decode_seconds : 0) << " tokens/s\n";
  } catch (const std::exception& e) {
    std::cerr << "skim-generate: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

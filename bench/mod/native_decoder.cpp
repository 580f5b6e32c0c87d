// A native Mixture-of-Depths decoder checkpoint (trained with MoD, e.g.
// tests/data/models/stories-mod-native) in skim: held-out perplexity and the
// share of transformer FLOPs executed, with its routing and with every token
// routed (Options::mod(false)), optionally a dense twin's perplexity; then
// prefill and decoding wall time, routed vs every token routed, interleaved.
// One JSON object on stdout.
//   skim_mod_native_decoder MODEL STORIES [--dense DIR] [--first 900] [--count 100]
//                           [--repeats 7] [--prefill 128] [--decode 128] [--threads N]
// STORIES: documents separated by <|endoftext|> lines; stories [first,
// first + count) are scored, each whitespace-normalised (runs of whitespace
// to one space, as bench/fixtures/train_mod_decoder.py does) and truncated to
// the model's context by Session::score.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>
#include <string>
#include <vector>

#include "engine/engine_impl.hpp"

namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> read_stories(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> stories;
  const std::string separator = "<|endoftext|>";
  for (std::size_t at = 0; at <= text.size();) {
    const std::size_t next = text.find(separator, at);
    const std::string story = text.substr(at, next == std::string::npos ? std::string::npos : next - at);
    std::string normalised;
    for (std::size_t i = 0; i < story.size();) {
      if (std::isspace(static_cast<unsigned char>(story[i]))) {
        while (i < story.size() && std::isspace(static_cast<unsigned char>(story[i]))) ++i;
        if (!normalised.empty() && i < story.size()) normalised += ' ';
      } else {
        normalised += story[i++];
      }
    }
    if (!normalised.empty()) stories.push_back(normalised);
    if (next == std::string::npos) break;
    at = next + separator.size();
  }
  return stories;
}

nlohmann::json score(const skim::Engine& engine, const std::vector<std::string>& stories) {
  auto session = engine.session();
  double nll = 0, flops = 0, dense = 0;
  std::size_t tokens = 0;
  const auto start = Clock::now();
  for (const auto& s : stories) {
    const auto r = session.score(s);
    nll += r.negative_log_likelihood;
    tokens += r.tokens;
    flops += r.cost.flops;
    dense += r.cost.dense_flops;
  }
  return {{"tokens", tokens},
          {"nll", nll},
          {"perplexity", std::exp(nll / std::max<std::size_t>(tokens, 1))},
          {"flops", flops},
          {"dense_flops", dense},
          {"flops_share", flops / dense},
          {"seconds", std::chrono::duration<double>(Clock::now() - start).count()}};
}

// Wall time of one prefill of `prefill` tokens (one chunk, last row's
// logits) and of feeding the next `decode` tokens one at a time (one logits
// row each), with the engine's routing.
std::pair<double, double> time_once(const skim::Engine::Impl& impl, const std::vector<std::int32_t>& ids, int prefill,
                                    int decode) {
  const auto& decoder = *impl.decoder;
  const skim::execute::mod::TokenRouting routing(*impl.decoder_routing, skim::execute::mod::Scorer::learned, 0, false);
  skim::execute::DecoderWorkspace ws(decoder, prefill);
  auto cache = decoder.make_cache();
  const auto t0 = Clock::now();
  decoder.forward(std::span(ids).subspan(0, prefill), cache, ws, routing);
  decoder.logits(ws, prefill - 1, 1);
  const auto t1 = Clock::now();
  for (int i = 0; i < decode; ++i) {
    decoder.forward(std::span(ids).subspan(prefill + i, 1), cache, ws, routing);
    decoder.logits(ws, 0, 1);
  }
  const auto t2 = Clock::now();
  return {std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count()};
}

nlohmann::json summary(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {{"median", v[v.size() / 2]}, {"min", v.front()}, {"max", v.back()}, {"all", v}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: skim_mod_native_decoder MODEL STORIES [--dense DIR] [--first 900] [--count 100] "
                 "[--repeats 7] [--prefill 128] [--decode 128] [--threads N]\n";
    return 2;
  }
  const std::string model = argv[1], stories_path = argv[2];
  std::string dense_dir;
  int first = 900, count = 100, repeats = 7, prefill = 128, decode = 128, threads = 2;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--dense") dense_dir = value;
    else if (flag == "--first") first = std::stoi(value);
    else if (flag == "--count") count = std::stoi(value);
    else if (flag == "--repeats") repeats = std::stoi(value);
    else if (flag == "--prefill") prefill = std::stoi(value);
    else if (flag == "--decode") decode = std::stoi(value);
    else if (flag == "--threads") threads = std::stoi(value);
    else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  try {
    const auto all = read_stories(stories_path);
    if (first + count > static_cast<int>(all.size())) throw std::runtime_error("not enough stories");
    const std::vector<std::string> held_out(all.begin() + first, all.begin() + first + count);
    const auto routed = skim::Engine::open(model, skim::Options().threads(threads));
    const auto every = skim::Engine::open(model, skim::Options().threads(threads).mod(false));
    if (!routed->impl().decoder_routing) throw std::runtime_error(model + ": not a native Mixture-of-Depths checkpoint");
    nlohmann::json out;
    out["model"] = model;
    out["stories"] = {{"file", stories_path}, {"first", first}, {"count", count}};
    out["threads"] = threads;
    out["routed"] = score(*routed, held_out);
    out["every_token_routed"] = score(*every, held_out);
    if (!dense_dir.empty()) out["dense_twin"] = score(*skim::Engine::open(dense_dir, skim::Options().threads(threads)), held_out);

    if (repeats <= 0) {  // scores only
      std::cout << out.dump(1) << std::endl;
      return 0;
    }
    // Timing text: the held-out stories' tokens back to back.
    std::vector<std::int32_t> ids;
    for (const auto& s : held_out) {
      routed->impl().sentencepiece->encode(s, true, false, ids);
      if (static_cast<int>(ids.size()) >= prefill + decode) break;
    }
    if (prefill + decode > routed->info().max_sequence_length || static_cast<int>(ids.size()) < prefill + decode)
      throw std::runtime_error("--prefill + --decode exceeds the context or the text");
    std::vector<double> prefill_routed, prefill_every, decode_routed, decode_every, prefill_ratio, decode_ratio;
    time_once(routed->impl(), ids, prefill, decode);  // warm-up
    time_once(every->impl(), ids, prefill, decode);
    for (int r = 0; r < repeats; ++r) {
      const auto a = time_once(routed->impl(), ids, prefill, decode);
      const auto b = time_once(every->impl(), ids, prefill, decode);
      prefill_routed.push_back(a.first), decode_routed.push_back(a.second);
      prefill_every.push_back(b.first), decode_every.push_back(b.second);
      prefill_ratio.push_back(a.first / b.first), decode_ratio.push_back(a.second / b.second);
    }
    out["timing"] = {{"prefill_tokens", prefill},
                     {"decode_tokens", decode},
                     {"repeats", repeats},
                     {"prefill_seconds_routed", summary(prefill_routed)},
                     {"prefill_seconds_every_token", summary(prefill_every)},
                     {"prefill_ratio", summary(prefill_ratio)},
                     {"decode_seconds_routed", summary(decode_routed)},
                     {"decode_seconds_every_token", summary(decode_every)},
                     {"decode_ratio", summary(decode_ratio)}};
    std::cout << out.dump(1) << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "skim_mod_native_decoder: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

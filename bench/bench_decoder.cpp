// Decoder benchmarks on a warm session (weights packed, primitives built):
//   SKIM_BENCH_DECODER=model.gguf [SKIM_BENCH_BF16=1 | SKIM_BENCH_Q8_0=1] skim_bench --benchmark_filter=Decoder
// Prefill: one pass over a 128-token prompt (BOS + random ids) into an empty
// cache, plus the last position's logits. Decode: 64 single-token steps after
// a 16-token prompt, reported as tokens per second.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <random>
#include <skim/skim.hpp>

#include "engine/engine_impl.hpp"

namespace {

struct DecoderFixture {
  std::shared_ptr<const skim::Engine> engine;
  std::unique_ptr<skim::execute::DecoderWorkspace> ws;
  std::unique_ptr<skim::execute::KvCache> cache;

  static DecoderFixture* get(benchmark::State& state) {
    static DecoderFixture* fixture = nullptr;
    if (fixture) return fixture;
    const char* path = std::getenv("SKIM_BENCH_DECODER");
    if (!path) {
      state.SkipWithError("set SKIM_BENCH_DECODER to a decoder model");
      return nullptr;
    }
    const char* threads = std::getenv("SKIM_BENCH_THREADS");
    const char* bf16 = std::getenv("SKIM_BENCH_BF16");
    auto options = skim::Options().threads(threads ? std::atoi(threads) : 2);
    if (bf16 && std::string(bf16) == "1") options.weight_precision(skim::WeightPrecision::bf16);
    const char* q8 = std::getenv("SKIM_BENCH_Q8_0");
    if (q8 && std::string(q8) == "1") options.weight_precision(skim::WeightPrecision::q8_0);
    fixture = new DecoderFixture{skim::Engine::open(path, options), nullptr, nullptr};
    const auto& impl = fixture->engine->impl();
    fixture->ws = std::make_unique<skim::execute::DecoderWorkspace>(*impl.decoder, 128);
    fixture->cache = std::make_unique<skim::execute::KvCache>(impl.decoder->make_cache());
    return fixture;
  }
};

std::vector<std::int32_t> random_prompt(int n, int vocab) {
  std::mt19937 rng(7);
  std::vector<std::int32_t> ids(n);
  ids[0] = 1;  // BOS
  for (int i = 1; i < n; ++i) ids[i] = 3 + static_cast<std::int32_t>(rng() % (vocab - 3));
  return ids;
}

void BM_DecoderPrefill(benchmark::State& state) {
  auto* f = DecoderFixture::get(state);
  if (!f) return;
  const auto& impl = f->engine->impl();
  const int n = static_cast<int>(state.range(0));
  auto prompt = random_prompt(n, impl.llama_config.vocab);
  skim::kernels::set_thread_count(f->engine->options().threads());
  for (auto _ : state) {
    f->cache->clear();
    impl.decoder->forward(prompt, *f->cache, *f->ws);
    impl.decoder->logits(*f->ws, n - 1, 1);
  }
  // Seconds per layer: time / (iterations × layers).
  state.counters["per_layer"] = benchmark::Counter(
      impl.llama_config.layers, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_DecoderPrefill)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_DecoderDecode(benchmark::State& state) {
  auto* f = DecoderFixture::get(state);
  if (!f) return;
  const auto& impl = f->engine->impl();
  const int steps = static_cast<int>(state.range(0));
  auto prompt = random_prompt(16, impl.llama_config.vocab);
  skim::kernels::set_thread_count(f->engine->options().threads());
  for (auto _ : state) {
    state.PauseTiming();
    f->cache->clear();
    impl.decoder->forward(prompt, *f->cache, *f->ws);
    state.ResumeTiming();
    std::int32_t token = 3;
    for (int s = 0; s < steps; ++s) {
      impl.decoder->forward(std::span(&token, 1), *f->cache, *f->ws);
      impl.decoder->logits(*f->ws, 0, 1);
      const float* l = f->ws->logits();
      token = static_cast<std::int32_t>(std::max_element(l, l + impl.llama_config.vocab) - l);
    }
  }
  state.counters["tokens_per_s"] = benchmark::Counter(steps, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DecoderDecode)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

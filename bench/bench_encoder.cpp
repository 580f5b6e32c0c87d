// Kernel and layer benchmarks (Google Benchmark). Peers run the same shapes
// in bench/peers/; run_peers.py turns both into skim ÷ peer ratios.
//   skim_bench --benchmark_filter=BertBaseLayer
//   SKIM_BENCH_MODEL=examples/models/clinc150-bert SKIM_BENCH_TEXTS=file skim_bench --benchmark_filter=Model
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <skim/skim.hpp>

#include "engine/engine_impl.hpp"
#include "kernels/backend.hpp"
#include "kernels/matmul.hpp"
#include "random_bert.hpp"

namespace {

int bench_threads() {
  const char* t = std::getenv("SKIM_BENCH_THREADS");
  return t ? std::atoi(t) : 2;
}

// y[rows, out] = x·Wᵀ + b at BERT-base FFN shapes.
void BM_Linear(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), in = static_cast<int>(state.range(1)),
            out = static_cast<int>(state.range(2));
  skim::kernels::set_thread_count(bench_threads());
  skim::kernels::Backend backend;
  skim::kernels::Scratch scratch(backend);
  std::vector<float> w(static_cast<std::size_t>(in) * out, 0.01f), b(out, 0.f);
  const std::size_t padded = skim::kernels::Linear::padded_rows(rows);
  std::vector<float> x(padded * in, 1.f), y(padded * out);
  skim::kernels::Linear linear(backend, w, b, in, out, skim::kernels::Epilogue::none);
  for (auto _ : state) {
    linear(x.data(), y.data(), rows, scratch);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(linear.flops(rows), benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
// Decoding shapes too: one row against GPT-2-small-sized weights (bandwidth bound).
BENCHMARK(BM_Linear)
    ->Args({128, 768, 3072})
    ->Args({128, 3072, 768})
    ->Args({1024, 1024, 1024})
    ->Args({1, 768, 3072})
    ->Args({1, 768, 32000})
    ->UseRealTime();

// One BERT-base encoder layer (hidden 768, 12 heads, FFN 3072), batch × seq tokens.
void BM_BertBaseLayer(benchmark::State& state) {
  const int batch_size = static_cast<int>(state.range(0)), seq = static_cast<int>(state.range(1));
  static const auto dir = [] {
    skim::testing::TinyBertSpec spec;
    spec.hidden = 768, spec.heads = 12, spec.intermediate = 3072, spec.layers = 1, spec.positions = 512;
    spec.stddev = 0.02f;
    return skim::testing::write_tiny_bert(skim::testing::fresh_temp_dir("bench-bert-base-layer"), spec);
  }();
  const bool bf16 = state.range(2) == 1;
  auto engine = skim::Engine::open(dir, skim::Options().threads(bench_threads()).weight_precision(
                                            bf16 ? skim::WeightPrecision::bf16 : skim::WeightPrecision::f32));
  const auto& impl = engine->impl();
  skim::kernels::set_thread_count(bench_threads());
  skim::execute::TokenBatch batch;
  batch.clear();
  std::mt19937 rng(1);
  for (int s = 0; s < batch_size; ++s) {
    std::vector<std::int32_t> ids(seq);
    for (auto& id : ids) id = static_cast<std::int32_t>(rng() % 50);
    batch.add(ids);
  }
  skim::execute::EncoderWorkspace ws(*impl.encoder, batch.rows(), seq);
  impl.encoder->encode(batch, ws);  // embeddings + warm-up
  double flops = 0;
  for (auto _ : state) flops = impl.encoder->layer_forward(0, batch, ws, skim::execute::RowSelection::every_row()).executed;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
// Args: batch, sequence, bf16 weights (0/1).
BENCHMARK(BM_BertBaseLayer)
    ->Args({1, 128, 0})
    ->Args({8, 128, 0})
    ->Args({1, 128, 1})
    ->Args({8, 128, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// A whole model from SKIM_BENCH_MODEL on the lines of SKIM_BENCH_TEXTS:
// range(0) = 1 runs them one call each, 0 as one batched call.
void BM_Model(benchmark::State& state) {
  const char* model = std::getenv("SKIM_BENCH_MODEL");
  const char* texts_file = std::getenv("SKIM_BENCH_TEXTS");
  if (!model || !texts_file) {
    state.SkipWithError("set SKIM_BENCH_MODEL and SKIM_BENCH_TEXTS");
    return;
  }
  std::vector<std::string> texts;
  std::ifstream in(texts_file);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) texts.push_back(line);
  auto engine = skim::Engine::open(model, skim::Options().threads(bench_threads()).router(false));
  auto session = engine->session();
  const bool one_by_one = state.range(0) == 1;
  for (auto _ : state) {
    if (one_by_one)
      for (const auto& t : texts) benchmark::DoNotOptimize(session.classify(t));
    else
      benchmark::DoNotOptimize(session.classify(texts));
  }
  state.counters["texts"] = static_cast<double>(texts.size());
}
BENCHMARK(BM_Model)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

// The meaning-first router's overhead, per CLINC150 utterance, on a model
// whose certificate accepts nothing (the shipped clinc150-bert: every request
// runs the transformer, so the router is pure overhead):
//   skim_bench --benchmark_filter=Router --benchmark_repetitions=5
// BM_RouterOverhead runs each utterance with the router on and off and
// reports on/off as "ratio": both halves see the same load on a shared
// machine. BM_RouterClassify/1 and /0 are the two alone; /2 is a cache hit
// (the router answers). The rest time one stage each, as classify runs it,
// warm and cold (after a transformer call, as in classify).
// Model: SKIM_BENCH_ROUTER_MODEL (default examples/models/clinc150-bert).
// Texts: SKIM_BENCH_ROUTER_DATA, CLINC150's data_full.json (every 18th test
// utterance, out-of-scope included: 306 of 5500) or a text<TAB>label file
// (all of it); default the shared copy beside the source tree, else
// tests/data/propose/clinc150_subset_heldout.tsv. Threads: SKIM_BENCH_THREADS.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <skim/skim.hpp>

#include "engine/engine_impl.hpp"
#include "engine/router.hpp"
#include "propose/normalize.hpp"

namespace {

namespace fs = std::filesystem;

int bench_threads() {
  const char* t = std::getenv("SKIM_BENCH_THREADS");
  return t ? std::atoi(t) : 2;
}

fs::path model_dir() {
  const char* model = std::getenv("SKIM_BENCH_ROUTER_MODEL");
  return model ? fs::path(model) : fs::path(SKIM_SOURCE_DIR) / "examples/models/clinc150-bert";
}

const std::vector<std::string>& utterances() {
  static const std::vector<std::string> texts = [] {
    const char* data = std::getenv("SKIM_BENCH_ROUTER_DATA");
    fs::path file = data ? fs::path(data) : fs::path(SKIM_SOURCE_DIR) / "../shared/data/clinc150/data_full.json";
    if (!data && !fs::exists(file)) file = fs::path(SKIM_SOURCE_DIR) / "tests/data/propose/clinc150_subset_heldout.tsv";
    const bool clinc_json = file.extension() == ".json";
    const auto rows = skim::read_labelled(file, clinc_json ? "test" : "");
    std::vector<std::string> out;
    for (std::size_t i = 0; i < rows.size(); i += clinc_json ? 18 : 1) out.push_back(rows[i].text);
    return out;
  }();
  return texts;
}

std::shared_ptr<const skim::Engine> open_engine(bool router) {
  return skim::Engine::open(model_dir(), skim::Options().threads(bench_threads()).router(router));
}

// The model's router, or nullptr after failing the benchmark: the figures
// mean nothing unless every request reaches the transformer.
const skim::Router* uncertified_router(benchmark::State& state, const skim::Engine& engine) {
  const skim::Router* router = engine.impl().router.get();
  if (!router) state.SkipWithError("the model has no router package (skim.json)");
  else if (engine.stats().certificate.certified) state.SkipWithError("the model's certificate is certified");
  else return router;
  return nullptr;
}

// After a run: had the gate recalibrated and begun accepting, some requests
// skipped the transformer and the figures are not the overhead's.
void require_all_ran_the_transformer(benchmark::State& state, const skim::Engine& engine) {
  const skim::RouterStats s = engine.stats();
  if (s.transformer_calls != s.calls)
    state.SkipWithError("the gate recalibrated and answered requests itself; shorten the run");
}

// Between passes over the utterances, untimed: each call then misses the
// cache, as a first sight does.
void clear_cache(benchmark::State& state, const skim::Router& router) {
  state.PauseTiming();
  router.cache().clear();
  state.ResumeTiming();
}

// One classify call per iteration, cycling through the utterances, on an
// empty cache every pass, except for /2, which warms it once: every call is
// then a hit.
// range(0): 1 router on, 0 off, 2 on and warm.
void BM_RouterClassify(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0));
  const auto engine = open_engine(mode != 0);
  const skim::Router* router = mode != 0 ? uncertified_router(state, *engine) : nullptr;
  if (mode != 0 && !router) return;
  const auto& texts = utterances();
  if (mode == 2)
    for (const auto& t : texts) engine->classify(t);
  std::size_t next = 0;
  for (auto _ : state) {
    if (next == texts.size()) {
      next = 0;
      if (mode == 1) clear_cache(state, *router);
    }
    benchmark::DoNotOptimize(engine->classify(texts[next++]));
  }
  if (mode == 1) require_all_ran_the_transformer(state, *engine);
}
BENCHMARK(BM_RouterClassify)->ArgName("router")->Arg(1)->Arg(0)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();

// (a) / (b) paired: each utterance with the router on and off, the order
// flipped every call and every pass: the second call of a pair runs faster
// (by ~3.5% with the router off on both: the text's vocabulary and the
// shape's oneDNN primitives are warm), so a fixed order would bias the ratio.
// "ratio" is the sum of on-times over the sum of off-times; "median_ratio"
// the median of the per-call ratios, which a preempted call cannot move.
void BM_RouterOverhead(benchmark::State& state) {
  using Clock = std::chrono::steady_clock;
  const auto routed = open_engine(true), plain = open_engine(false);
  const skim::Router* router = uncertified_router(state, *routed);
  if (!router) return;
  const auto& texts = utterances();
  const auto seconds = [](const skim::Engine& engine, const std::string& text) {
    const auto start = Clock::now();
    benchmark::DoNotOptimize(engine.classify(text));
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  double on_seconds = 0, off_seconds = 0;
  std::vector<double> ratios;
  std::size_t next = 0, pass = 0;
  for (auto _ : state) {
    if (next == texts.size()) {
      next = 0, ++pass;
      clear_cache(state, *router);
    }
    const std::string& text = texts[next];
    double on, off;
    if ((next++ + pass) % 2 == 0) {
      on = seconds(*routed, text);
      off = seconds(*plain, text);
    } else {
      off = seconds(*plain, text);
      on = seconds(*routed, text);
    }
    on_seconds += on;
    off_seconds += off;
    ratios.push_back(on / off);
  }
  require_all_ran_the_transformer(state, *routed);
  const auto per_call = benchmark::Counter::kAvgIterations;
  state.counters["on_us"] = benchmark::Counter(on_seconds * 1e6, per_call);
  state.counters["off_us"] = benchmark::Counter(off_seconds * 1e6, per_call);
  state.counters["ratio"] = on_seconds / off_seconds;
  std::nth_element(ratios.begin(), ratios.begin() + ratios.size() / 2, ratios.end());
  state.counters["median_ratio"] = ratios[ratios.size() / 2];
}
// Two seconds: every utterance twice.
BENCHMARK(BM_RouterOverhead)->MinTime(2)->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---- the stages alone, per utterance ----------------------------------------

struct RouterFixture {
  std::shared_ptr<const skim::Engine> engine = open_engine(true), plain = open_engine(false);
  const skim::Router* router = engine->impl().router.get();
  std::vector<std::string> normalized;
  std::vector<skim::Answer> answers;  // the transformer's, for the cache and the monitor

  static RouterFixture& get() {
    static RouterFixture fixture;
    return fixture;
  }

 private:
  RouterFixture() {
    for (const auto& t : utterances()) {
      normalized.push_back(skim::propose::normalize_for_match(t));
      answers.push_back(plain->classify(t));
    }
  }
};

// Runs stage(i) on utterance i, one per iteration, timing it alone by hand;
// prepare(i) runs first, untimed. cold:1 also runs the transformer on the
// utterance first, untimed, as classify does between one request's stages and
// the next's: its weights push the stage's code and data out of the caches,
// and that is where the router pays (the proposer ~3x its warm time).
template <typename Prepare, typename Stage>
void time_stage(benchmark::State& state, Prepare&& prepare, Stage&& stage) {
  using Clock = std::chrono::steady_clock;
  auto& f = RouterFixture::get();
  const bool cold = state.range(0) == 1;
  const auto& texts = utterances();
  std::size_t next = 0;
  for (auto _ : state) {
    if (next == texts.size()) next = 0;
    prepare(next);
    if (cold) benchmark::DoNotOptimize(f.plain->classify(texts[next]));
    const auto start = Clock::now();
    stage(next++);
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
  }
}
const auto nothing_to_prepare = [](std::size_t) {};

void warm(benchmark::internal::Benchmark* b) {
  b->ArgName("cold")->Arg(0)->UseManualTime()->Unit(benchmark::kMicrosecond);
}
// A fixed count: the untimed transformer calls would otherwise take minutes.
void cold(benchmark::internal::Benchmark* b) {
  b->ArgName("cold")->Arg(1)->Iterations(1000)->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void BM_RouterNormalize(benchmark::State& state) {
  const auto& texts = utterances();
  time_stage(state, nothing_to_prepare,
             [&](std::size_t i) { benchmark::DoNotOptimize(skim::propose::normalize_for_match(texts[i])); });
}
BENCHMARK(BM_RouterNormalize)->Apply(warm);
BENCHMARK(BM_RouterNormalize)->Apply(cold);

// The n-gram proposer's predict and score, on the normalized text as classify calls it.
void BM_RouterProposer(benchmark::State& state) {
  auto& f = RouterFixture::get();
  if (!uncertified_router(state, *f.engine)) return;
  const auto& proposer = f.router->proposer();
  time_stage(state, nothing_to_prepare, [&](std::size_t i) {
    benchmark::DoNotOptimize(proposer.score(proposer.predict_normalized(f.normalized[i])));
  });
}
BENCHMARK(BM_RouterProposer)->Apply(warm);
BENCHMARK(BM_RouterProposer)->Apply(cold);

// A miss, then the transformer's answer put, as for a first sight; each pass
// starts on an empty cache.
void BM_RouterCache(benchmark::State& state) {
  auto& f = RouterFixture::get();
  if (!uncertified_router(state, *f.engine)) return;
  auto& cache = f.router->cache();
  const std::string& version = f.router->version();
  time_stage(
      state, [&](std::size_t i) { if (i == 0) cache.clear(); },
      [&](std::size_t i) {
        benchmark::DoNotOptimize(cache.get("", "classify", f.normalized[i]));
        benchmark::DoNotOptimize(cache.put("", "classify", f.normalized[i], version, f.answers[i]));
      });
}
BENCHMARK(BM_RouterCache)->Apply(warm);
BENCHMARK(BM_RouterCache)->Apply(cold);

// The gate on an uncertified certificate: the request id, decide, and the
// collected sample recorded. A fresh monitor before its window (the
// certificate's n samples) fills: a full window attempts to recalibrate (one
// certify per n/20 samples) and, on these utterances, certifies, which makes
// it another gate.
void BM_RouterMonitor(benchmark::State& state) {
  auto& f = RouterFixture::get();
  if (!uncertified_router(state, *f.engine)) return;
  const auto& proposer = f.router->proposer();
  std::vector<skim::gate::CalibrationSample> samples;
  for (std::size_t i = 0; i < f.normalized.size(); ++i) {
    const auto prediction = proposer.predict_normalized(f.normalized[i]);
    samples.push_back({proposer.score(prediction), prediction.label != f.answers[i].label_id, prediction.label});
  }
  const skim::Certificate certificate = f.engine->stats().certificate;
  skim::gate::MonitorOptions options;
  options.recalibration_samples = certificate.n;
  options.certify.epsilon = certificate.epsilon;
  options.certify.delta = certificate.delta;
  std::optional<skim::gate::Monitor> monitor;
  std::size_t recorded = 0;
  const skim::Request request;
  time_stage(
      state,
      [&](std::size_t) {
        if (monitor && recorded + 1 < certificate.n) return;
        monitor.emplace(certificate, options);
        recorded = 0;
      },
      [&](std::size_t i) {
        const auto decision = monitor->decide(samples[i].score, samples[i].label, f.router->request_id(request, 0, 1));
        monitor->record_collected(decision, samples[i]);
        ++recorded;
      });
}
BENCHMARK(BM_RouterMonitor)->Apply(warm);
BENCHMARK(BM_RouterMonitor)->Apply(cold);

}  // namespace

// The machine's ceilings, against which the kernels' figures are read:
//   skim_bench --benchmark_filter=Ceiling
// BM_CeilingStreamRead: bytes/s of a read-only stream over 512 MiB of varied
// data on huge pages (what a decoding step is bound by); BM_CeilingFmaF32:
// f32 FLOP/s of independent 512-bit FMAs in registers (what prefill is bound
// by). Threads: SKIM_BENCH_THREADS (default 2).
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <cstdlib>

#include "kernels/aligned_buffer.hpp"

namespace {

int bench_threads() {
  const char* t = std::getenv("SKIM_BENCH_THREADS");
  return t ? std::atoi(t) : 2;
}

__attribute__((target("avx512f"))) float sum_range(const float* a, std::size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (std::size_t i = 0; i < n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
    s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_load_ps(a + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_load_ps(a + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

void BM_CeilingStreamRead(benchmark::State& state) {
  const std::size_t n = std::size_t{1} << 27;  // 512 MiB of floats
  skim::kernels::AlignedBuffer<float> a;
  a.resize_for_streaming(n);
  // Varied values: pages of identical content could be merged by a
  // hypervisor and read from cache, which inflates the figure.
  for (std::size_t i = 0; i < n; ++i) a[i] = static_cast<float>((i * 2654435761u) >> 20);
  const int threads = bench_threads();
  float total = 0;
  for (auto _ : state) {
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const std::size_t t = omp_get_thread_num(), team = omp_get_num_threads();
      total += sum_range(a.data() + n / team * t, n / team);
    }
  }
  benchmark::DoNotOptimize(total);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n * sizeof(float)));
}
BENCHMARK(BM_CeilingStreamRead)->Unit(benchmark::kMillisecond)->UseRealTime();

__attribute__((target("avx512f"))) float fma_chains(long iterations) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(1e-3f * i);
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
  for (long i = 0; i < iterations; ++i)
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_fmadd_ps(acc[j], b, c);
  for (int i = 1; i < 12; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
  return _mm512_reduce_add_ps(acc[0]);
}

void BM_CeilingFmaF32(benchmark::State& state) {
  const long iterations = 10'000'000;  // × 12 FMAs × 32 FLOP per thread
  const int threads = bench_threads();
  float total = 0;
  for (auto _ : state) {
#pragma omp parallel num_threads(threads) reduction(+ : total)
    total += fma_chains(iterations);
  }
  benchmark::DoNotOptimize(total);
  state.counters["FLOPs"] = benchmark::Counter(static_cast<double>(iterations) * 12 * 32 * threads,
                                               benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CeilingFmaF32)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

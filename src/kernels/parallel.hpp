#pragma once
// Private to kernels/: splitting the column blocks of skim's own GEMV/GEMM
// loops over a thread team.
#include <algorithm>
#include <cstddef>

namespace skim::kernels {

// Runs fn(first, last) over [0, count) column blocks whose work streams
// `bytes` of weights. The team: one thread per 256 KiB (below that one
// thread finishes before a team would start), at most max_threads and
// count. Pieces: about 8 per thread, handed out as threads free up, because
// bandwidth-bound loops finish unevenly when two threads share the memory
// bus; small pieces even out the wait at the end.
template <typename Fn>
void parallel_ranges(int count, std::size_t bytes, int max_threads, Fn&& fn) {
  constexpr std::size_t bytes_per_thread = 256 * 1024;
  const int team = static_cast<int>(std::clamp<std::size_t>(bytes / bytes_per_thread, 1,
                                                            static_cast<std::size_t>(std::max(1, std::min(max_threads, count)))));
  if (team <= 1 || count <= 1) return fn(0, count);
  const int grain = std::max(1, count / (8 * team));
  const int pieces = (count + grain - 1) / grain;
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
  for (int p = 0; p < pieces; ++p) fn(p * grain, std::min(count, (p + 1) * grain));
}

}  // namespace skim::kernels

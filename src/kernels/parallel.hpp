#pragma once
// Private to kernels/: splitting the column blocks of skim's own GEMV/GEMM
// loops over a thread team.
#include <algorithm>

namespace skim::kernels {

// Runs fn(first, last) over [0, count) in about 8 pieces per thread, handed
// out as threads free up. Bandwidth-bound loops finish unevenly when two
// threads share the memory bus; small pieces even out the wait at the end.
template <typename Fn>
void parallel_ranges(int count, int team, Fn&& fn) {
  if (team <= 1 || count <= 1) return fn(0, count);
  const int grain = std::max(1, count / (8 * team));
  const int pieces = (count + grain - 1) / grain;
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
  for (int p = 0; p < pieces; ++p) fn(p * grain, std::min(count, (p + 1) * grain));
}

}  // namespace skim::kernels

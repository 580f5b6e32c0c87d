#pragma once
// A batch of token sequences packed back to back into rows, without padding.
#include <cstdint>
#include <span>
#include <vector>

namespace skim::execute {

struct TokenBatch {
  std::vector<std::int32_t> ids;       // all sequences' token ids, concatenated
  std::vector<std::int32_t> offsets;   // sequence s occupies rows [offsets[s], offsets[s+1])
  int sequences() const noexcept { return offsets.empty() ? 0 : static_cast<int>(offsets.size()) - 1; }
  int rows() const noexcept { return static_cast<int>(ids.size()); }
  int length(int s) const noexcept { return offsets[s + 1] - offsets[s]; }

  void clear() {
    ids.clear();
    offsets.assign(1, 0);
  }
  void add(std::span<const std::int32_t> sequence) {
    if (offsets.empty()) offsets.push_back(0);
    ids.insert(ids.end(), sequence.begin(), sequence.end());
    offsets.push_back(static_cast<std::int32_t>(ids.size()));
  }
};

// Which rows a block processes. Dense: every row. Routed (Mixture-of-Depths):
// an ascending list of row indices; the rest ride the residual stream.
struct RowSelection {
  bool all = true;
  std::span<const std::int32_t> rows;  // used when !all; ascending
  static RowSelection every_row() { return {}; }
  static RowSelection only(std::span<const std::int32_t> r) { return {false, r}; }
};

}  // namespace skim::execute

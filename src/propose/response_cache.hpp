#pragma once
// Exact-match cache of transformer answers, the cheapest proposer. A hit is
// only ever an earlier answer of the same model version to the same
// normalized text, for the same tenant and head; nothing else can be written
// into it (put takes a transformer's skim::Answer, not a label).
#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

#include "skim/answer.hpp"

namespace skim::propose {

// What a hit returns: the transformer's label id and its softmax score.
struct CachedAnswer {
  int label_id = -1;
  float score = 0;
};

struct ResponseCacheOptions {
  std::size_t byte_budget = 64u << 20;  // see ResponseCache::entry_bytes; 0 disables the cache
  std::set<int> never_cache;            // time-sensitive labels ("time", "weather", ...) are never stored
};

// LRU under a byte budget. An entry costs entry_bytes(): its key (version,
// tenant, head and normalized text, each but the last length-prefixed, so
// ("a:b", "c") and ("a", "b:c") cannot collide), sizeof(CachedAnswer) and
// kEntryOverheadBytes, so the budget tracks real memory within a small factor
// whatever the text lengths. Thread-safe: one mutex, held for a hash lookup
// and a list splice.
class ResponseCache {
 public:
  // Per-entry bookkeeping counted against the budget, measured for
  // libstdc++ on x86-64 and rounded up: the list node (2 pointers, the key's
  // std::string header, the answer, the byte count: 64), the unordered_map
  // node (next pointer, string_view, iterator, cached hash: 40), its bucket
  // slot (8) and malloc's per-block overhead on the three heap blocks.
  static constexpr std::size_t kEntryOverheadBytes = 160;

  explicit ResponseCache(ResponseCacheOptions options = {}, std::string version = {});
  ResponseCache(const ResponseCache&) = delete;
  ResponseCache& operator=(const ResponseCache&) = delete;

  // The version every entry is written and read under: the model's version
  // and the proposer stack's, as one string. A different version empties the
  // cache, since a new model or proposer may answer differently.
  void set_version(std::string version);
  std::string version() const;

  // `normalized` must already be normalize_for_match's output. Decoding
  // settings or anything else that changes the answer belong in `head`
  // ("classify", "generate:t=0:max=32").
  std::optional<CachedAnswer> get(std::string_view tenant, std::string_view head, std::string_view normalized);

  // Stores a transformer answer computed under `version` (pass the version
  // the answer's engine had when the request started). Returns whether it
  // was stored: not if the label is never-cache, the version is no longer the
  // current one (a model swap raced with the request), the score is not
  // finite, or the entry alone exceeds the budget. Throws
  // skim::Error(invalid_argument) if `answer` did not come from the
  // transformer (route) or has no label id: the cache must not learn from
  // proposers, or it would repeat their mistakes forever.
  bool put(std::string_view tenant, std::string_view head, std::string_view normalized,
           std::string_view version, const Answer& answer);

  std::size_t size() const;
  std::size_t bytes() const;  // sum of entry_bytes over the entries
  std::size_t byte_budget() const noexcept { return options_.byte_budget; }
  void clear();
  std::uint64_t hits() const;
  std::uint64_t misses() const;

  static std::size_t entry_bytes(std::string_view tenant, std::string_view version, std::string_view head,
                                 std::string_view normalized) noexcept;

 private:
  struct Entry {
    std::string key;  // version, tenant, head, normalized text (see entry_bytes)
    CachedAnswer answer;
    std::size_t bytes = 0;
  };
  using List = std::list<Entry>;

  void clear_locked();

  const ResponseCacheOptions options_;
  mutable std::mutex mutex_;
  std::string version_;
  List lru_;  // front = most recently used
  std::unordered_map<std::string_view, List::iterator> index_;  // views into Entry::key
  std::size_t bytes_ = 0;
  std::uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace skim::propose

#include "propose/response_cache.hpp"

#include <cmath>
#include <utility>

#include "skim/error.hpp"

namespace skim::propose {
namespace {

void append_field(std::string& key, std::string_view field) {
  key += std::to_string(field.size());
  key += ':';
  key += field;
}

// The version is part of the key, so an entry written under one version can
// never be found under another, even before set_version has emptied the cache.
std::string make_key(std::string_view version, std::string_view tenant, std::string_view head,
                     std::string_view normalized) {
  std::string key;
  key.reserve(version.size() + tenant.size() + head.size() + normalized.size() + 16);
  append_field(key, version);
  append_field(key, tenant);
  append_field(key, head);
  key += normalized;
  return key;
}

}  // namespace

ResponseCache::ResponseCache(ResponseCacheOptions options, std::string version)
    : options_(std::move(options)), version_(std::move(version)) {}

std::size_t ResponseCache::entry_bytes(std::string_view tenant, std::string_view version, std::string_view head,
                                       std::string_view normalized) noexcept {
  const auto prefixed = [](std::string_view field) { return std::to_string(field.size()).size() + 1 + field.size(); };
  return prefixed(version) + prefixed(tenant) + prefixed(head) + normalized.size() + sizeof(CachedAnswer) +
         kEntryOverheadBytes;
}

void ResponseCache::set_version(std::string version) {
  std::lock_guard lock(mutex_);
  if (version == version_) return;
  version_ = std::move(version);
  clear_locked();
}

std::string ResponseCache::version() const {
  std::lock_guard lock(mutex_);
  return version_;
}

std::optional<CachedAnswer> ResponseCache::get(std::string_view tenant, std::string_view head,
                                               std::string_view normalized) {
  std::lock_guard lock(mutex_);
  const std::string key = make_key(version_, tenant, head, normalized);
  const auto found = index_.find(key);
  if (found == index_.end()) {
    ++misses_;
    return std::nullopt;
  }
  lru_.splice(lru_.begin(), lru_, found->second);  // iterators stay valid
  ++hits_;
  return found->second->answer;
}

bool ResponseCache::put(std::string_view tenant, std::string_view head, std::string_view normalized,
                        std::string_view version, const Answer& answer) {
  if (answer.route != Route::transformer) {
    throw Error(ErrorCode::invalid_argument, std::string("ResponseCache::put: the answer came from the ") +
                                                 std::string(to_string(answer.route)) +
                                                 ", not the transformer; only transformer answers are cached");
  }
  if (answer.label_id < 0) {
    throw Error(ErrorCode::invalid_argument,
                "ResponseCache::put: the answer has no label id (" + std::to_string(answer.label_id) + ")");
  }
  if (options_.never_cache.count(answer.label_id) != 0 || !std::isfinite(answer.score)) return false;
  const std::size_t cost = entry_bytes(tenant, version, head, normalized);
  if (cost > options_.byte_budget) return false;

  std::lock_guard lock(mutex_);
  if (version != version_) return false;  // answered by a model that has since been replaced
  std::string key = make_key(version_, tenant, head, normalized);
  const CachedAnswer value{answer.label_id, answer.score};
  if (const auto found = index_.find(key); found != index_.end()) {
    // Same model, same input: the transformer is deterministic, so this only
    // refreshes the entry's recency (and its value, should it differ).
    found->second->answer = value;
    lru_.splice(lru_.begin(), lru_, found->second);
    return true;
  }
  while (!lru_.empty() && bytes_ + cost > options_.byte_budget) {
    Entry& oldest = lru_.back();
    bytes_ -= oldest.bytes;
    index_.erase(std::string_view(oldest.key));
    lru_.pop_back();
  }
  lru_.push_front(Entry{std::move(key), value, cost});
  index_.emplace(std::string_view(lru_.front().key), lru_.begin());
  bytes_ += cost;
  return true;
}

std::size_t ResponseCache::size() const {
  std::lock_guard lock(mutex_);
  return lru_.size();
}

std::size_t ResponseCache::bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

void ResponseCache::clear() {
  std::lock_guard lock(mutex_);
  clear_locked();
}

void ResponseCache::clear_locked() {
  index_.clear();
  lru_.clear();
  bytes_ = 0;
}

std::uint64_t ResponseCache::hits() const {
  std::lock_guard lock(mutex_);
  return hits_;
}

std::uint64_t ResponseCache::misses() const {
  std::lock_guard lock(mutex_);
  return misses_;
}

}  // namespace skim::propose

// AdapterCache: the policy of which adapter versions are loaded (the
// TensorFlow Serving manager; AdapterLoader is the mechanism).
//
//  - Identity is the content digest. Serving names point to versions; two
//    names with the same digest share one loaded copy.
//  - Pinning: Acquire(name) returns a shared_ptr to the version the name
//    points to *now*. While any such pointer lives the version stays loaded,
//    even if its name moves to a new version or is unloaded; the holder never
//    sees another version.
//  - Budget: Σ memory of loaded versions stays within memory_budget_bytes.
//    To make room, Load evicts least recently used versions that no request
//    is using; a replaced or unloaded version that is still in use is freed
//    when its last pin drops (it counts against the budget until then).
//    Evicted names are remembered: Acquire loads them again (a miss).
//  - Unload frees memory before returning: it waits for the version's pins
//    to drop, then the loader frees the tensors.
//
// Thread safety: every method may be called concurrently. Loads and unloads
// are serialized among themselves; Acquire never waits for a load of
// another adapter. The model and source must outlive the cache, and every
// pin must be dropped before the cache is destroyed (destroy the Engine
// first).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/serve/adapter_loader.h"
#include "worker/serve/adapter_source.h"

namespace qwha::serve {

struct AdapterCacheOptions {
  int64_t memory_budget_bytes = int64_t{1} << 30;
  // Acquire of a name that is not loaded: load it (evicted names, and names
  // that are registry ids). false: NotFound.
  bool load_on_demand = true;
  // When set, an adapter whose description names another base digest is
  // refused (FailedPrecondition) before anything is downloaded.
  std::string base_model_digest;
};

struct AdapterInfo {
  std::vector<std::string> names;  // empty for a version kept only by pins
  std::string adapter_id;
  std::string digest;
  std::string adapter_type;
  int64_t memory_bytes = 0;
  std::chrono::system_clock::time_point loaded_at, last_used_at;
  int64_t active_requests = 0;
  double load_seconds = 0;
  bool cache_hit = false;  // Load: the version was already loaded
};

struct UnloadResult {
  AdapterInfo adapter;
  int64_t freed_bytes = 0;
};

// Hooks for metrics; called without the cache's locks held.
struct AdapterCacheObserver {
  std::function<void()> on_hit;
  std::function<void()> on_miss;
  std::function<void(int64_t bytes)> on_evict;
  std::function<void(double seconds)> on_load;
  std::function<void(int64_t loaded, int64_t bytes)> on_change;  // versions loaded, Σ bytes
};

class AdapterCache {
 public:
  AdapterCache(const ServingModel* model, AdapterSource* source, AdapterCacheOptions options,
               AdapterCacheObserver observer = {});
  ~AdapterCache();
  AdapterCache(const AdapterCache&) = delete;
  AdapterCache& operator=(const AdapterCache&) = delete;

  // Points `name` at the version of registry adapter `adapter_id`, loading it
  // unless that digest is loaded already (cache_hit). Errors: the source's
  // (NotFound, Unavailable, DataLoss), the loader's (FailedPrecondition,
  // InvalidArgument), ResourceExhausted when the adapter is larger than the
  // budget or versions in use leave no room. On error the name keeps its
  // previous version.
  absl::StatusOr<AdapterInfo> Load(const std::string& name, const std::string& adapter_id);

  // Pins the version `name` points to. Not loaded: loaded first if
  // load_on_demand (the name is remembered from an eviction, or is taken as
  // a registry id), else NotFound naming it.
  absl::StatusOr<std::shared_ptr<const ServingAdapter>> Acquire(const std::string& name);

  // Removes `name`. If no other name points to its version, waits (up to
  // `wait`; nullopt: no limit) for its pins to drop and frees it before returning. NotFound for
  // an unknown name; DeadlineExceeded when the wait ends first (the version
  // is freed when its last request ends).
  absl::StatusOr<UnloadResult> Unload(const std::string& name,
                                      std::optional<std::chrono::milliseconds> wait = std::nullopt);

  // Loaded versions (and versions kept only by pins), most recently used first.
  std::vector<AdapterInfo> List() const;
  int64_t used_bytes() const;
  int64_t budget_bytes() const { return options_.memory_budget_bytes; }

 private:
  struct Entry;
  struct Pin;
  void Release(const std::shared_ptr<Entry>& entry);
  // Under mu_: drops `entry` from the loaded set; returns it if it can be
  // freed now (no pins), else keeps it in retiring_ for the last Release.
  std::shared_ptr<Entry> RetireLocked(const std::shared_ptr<Entry>& entry);
  void Free(const std::shared_ptr<Entry>& entry);
  AdapterInfo InfoLocked(const Entry& entry) const;
  void NotifyChange();

  const ServingModel* model_;
  AdapterSource* source_;
  AdapterCacheOptions options_;
  AdapterCacheObserver observer_;

  std::mutex load_mu_;  // serializes Load and Unload
  mutable std::mutex mu_;
  std::condition_variable freed_;
  std::map<std::string, std::shared_ptr<Entry>> loaded_;  // by digest
  std::vector<std::shared_ptr<Entry>> retiring_;          // unreachable, pinned
  std::map<std::string, std::string> names_;              // name → digest
  std::map<std::string, std::string> known_;              // name → adapter id (kept on eviction)
  int64_t used_bytes_ = 0;
  uint64_t tick_ = 0;
};

}  // namespace qwha::serve

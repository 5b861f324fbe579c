#include "worker/serve/adapter_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "worker/io/atomic_file.h"

namespace qwha::serve {
namespace {

using SystemClock = std::chrono::system_clock;

std::string Short(const std::string& digest) { return digest.substr(0, 12); }

}  // namespace

struct AdapterCache::Entry {
  std::string digest, adapter_id, adapter_type;
  std::unique_ptr<AdapterLoader> loader;
  int64_t bytes = 0;
  std::set<std::string> names;
  int64_t pins = 0;
  bool retired = false;  // unreachable by name: freed at the last Release
  bool freed = false;
  SystemClock::time_point loaded_at, last_used;
  uint64_t last_tick = 0;
  double load_seconds = 0;
};

// Keeps a version loaded while a request uses it.
struct AdapterCache::Pin {
  AdapterCache* cache;
  std::shared_ptr<Entry> entry;
  ~Pin() { cache->Release(entry); }
};

AdapterCache::AdapterCache(const ServingModel* model, AdapterSource* source,
                           AdapterCacheOptions options, AdapterCacheObserver observer)
    : model_(model),
      source_(source),
      options_(std::move(options)),
      observer_(std::move(observer)) {}

AdapterCache::~AdapterCache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [digest, entry] : loaded_) entry->loader->Unload();
}

AdapterInfo AdapterCache::InfoLocked(const Entry& e) const {
  AdapterInfo info;
  info.names.assign(e.names.begin(), e.names.end());
  info.adapter_id = e.adapter_id;
  info.digest = e.digest;
  info.adapter_type = e.adapter_type;
  info.memory_bytes = e.bytes;
  info.loaded_at = e.loaded_at;
  info.last_used_at = e.last_used;
  info.active_requests = e.pins;
  info.load_seconds = e.load_seconds;
  return info;
}

void AdapterCache::NotifyChange() {
  if (!observer_.on_change) return;
  int64_t loaded, bytes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    loaded = static_cast<int64_t>(loaded_.size() + retiring_.size());
    bytes = used_bytes_;
  }
  observer_.on_change(loaded, bytes);
}

std::shared_ptr<AdapterCache::Entry> AdapterCache::RetireLocked(const std::shared_ptr<Entry>& e) {
  loaded_.erase(e->digest);
  for (const std::string& n : e->names) names_.erase(n);
  e->names.clear();
  e->retired = true;
  if (e->pins == 0) return e;
  retiring_.push_back(e);
  return nullptr;
}

void AdapterCache::Free(const std::shared_ptr<Entry>& e) {
  e->loader->Unload();  // the tensors are gone once this returns
  {
    std::lock_guard<std::mutex> lock(mu_);
    used_bytes_ -= e->bytes;
    e->freed = true;
    retiring_.erase(std::remove(retiring_.begin(), retiring_.end(), e), retiring_.end());
  }
  freed_.notify_all();
  NotifyChange();
}

void AdapterCache::Release(const std::shared_ptr<Entry>& e) {
  bool free_now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    --e->pins;
    free_now = e->retired && e->pins == 0 && !e->freed;
  }
  if (free_now) Free(e);
}

absl::StatusOr<AdapterInfo> AdapterCache::Load(const std::string& name,
                                               const std::string& adapter_id) {
  if (name.empty() || adapter_id.empty()) {
    return absl::InvalidArgumentError(name.empty() ? "name: required" : "adapter_id: required");
  }
  std::lock_guard<std::mutex> serial(load_mu_);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<AdapterDescription> desc = source_->Describe(adapter_id);
  if (!desc.ok()) return desc.status();
  if (!options_.base_model_digest.empty() && !desc->base_model_digest.empty() &&
      desc->base_model_digest != options_.base_model_digest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "adapter '", adapter_id, "' was trained on base model ", Short(desc->base_model_digest),
        "…; this server serves ", Short(options_.base_model_digest), "…"));
  }

  std::shared_ptr<Entry> entry;
  std::shared_ptr<Entry> to_free;  // the name's previous version, if now unused
  std::vector<std::shared_ptr<Entry>> evicted;
  auto bind = [&](const std::shared_ptr<Entry>& e) {  // under mu_
    auto old = names_.find(name);
    if (old != names_.end() && old->second != e->digest) {
      std::shared_ptr<Entry> previous = loaded_.at(old->second);
      previous->names.erase(name);
      names_.erase(old);
      if (previous->names.empty()) to_free = RetireLocked(previous);
    }
    names_[name] = e->digest;
    known_[name] = adapter_id;
    e->names.insert(name);
  };
  std::optional<AdapterInfo> hit;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = loaded_.find(desc->digest);
    if (it != loaded_.end()) {
      bind(it->second);
      hit = InfoLocked(*it->second);
      hit->cache_hit = true;
    }
  }
  if (hit) {
    if (to_free) Free(to_free);
    return *hit;
  }

  absl::StatusOr<FetchedAdapter> fetched = source_->Fetch(*desc);
  if (!fetched.ok()) return fetched.status();
  auto cleanup = [&] {
    if (fetched->remove_after_load) (void)io::RemoveTree(fetched->dir);
  };
  auto loader = std::make_unique<AdapterLoader>(model_, fetched->dir, desc->digest);
  absl::StatusOr<int64_t> estimate = loader->EstimateMemory();
  if (!estimate.ok()) return cleanup(), estimate.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (*estimate > options_.memory_budget_bytes) {
      cleanup();
      return absl::ResourceExhaustedError(absl::StrCat("adapter '", adapter_id, "' needs ",
                                                       *estimate, " bytes; the memory budget is ",
                                                       options_.memory_budget_bytes));
    }
    // Least recently used versions without pins, until the new one fits.
    std::vector<std::shared_ptr<Entry>> idle;
    for (auto& [digest, e] : loaded_) {
      if (e->pins == 0) idle.push_back(e);
    }
    std::sort(idle.begin(), idle.end(),
              [](const auto& a, const auto& b) { return a->last_tick < b->last_tick; });
    int64_t reclaimable = 0;
    for (const auto& e : idle) reclaimable += e->bytes;
    if (used_bytes_ - reclaimable + *estimate > options_.memory_budget_bytes) {
      cleanup();
      return absl::ResourceExhaustedError(
          absl::StrCat("adapter '", adapter_id, "' needs ", *estimate, " bytes; ",
                       used_bytes_ - reclaimable, " of the ", options_.memory_budget_bytes,
                       "-byte budget are held by adapters in use by running requests"));
    }
    int64_t after = used_bytes_;
    for (size_t i = 0; i < idle.size() && after + *estimate > options_.memory_budget_bytes; ++i) {
      after -= idle[i]->bytes;
      evicted.push_back(RetireLocked(idle[i]));  // no pins: returned for freeing
    }
  }
  for (const auto& e : evicted) {
    const int64_t bytes = e->bytes;
    Free(e);
    if (observer_.on_evict) observer_.on_evict(bytes);
  }

  absl::Status loaded = loader->Load();
  cleanup();
  if (!loaded.ok()) return loaded;
  entry = std::make_shared<Entry>();
  entry->digest = desc->digest;
  entry->adapter_id = adapter_id;
  entry->adapter_type = desc->adapter_type;
  entry->bytes = loader->adapter()->memory_bytes();
  entry->loader = std::move(loader);
  entry->loaded_at = entry->last_used = SystemClock::now();
  entry->load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  AdapterInfo info;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entry->last_tick = ++tick_;
    loaded_[entry->digest] = entry;
    used_bytes_ += entry->bytes;
    bind(entry);
    info = InfoLocked(*entry);
  }
  if (to_free) Free(to_free);
  if (observer_.on_load) observer_.on_load(entry->load_seconds);
  NotifyChange();
  return info;
}

absl::StatusOr<std::shared_ptr<const ServingAdapter>> AdapterCache::Acquire(
    const std::string& name) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string adapter_id;
    std::shared_ptr<const ServingAdapter> pinned;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = names_.find(name);
      if (it != names_.end()) {
        std::shared_ptr<Entry> e = loaded_.at(it->second);
        ++e->pins;
        e->last_used = SystemClock::now();
        e->last_tick = ++tick_;
        std::shared_ptr<Pin> pin(new Pin{this, e});  // built in place: only this Pin releases
        pinned = std::shared_ptr<const ServingAdapter>(pin, e->loader->adapter());
      } else {
        auto known = known_.find(name);
        if (known != known_.end()) {
          adapter_id = known->second;
        } else if (options_.load_on_demand) {
          adapter_id = name;
        }
      }
    }
    if (pinned) {
      if (attempt == 0 && observer_.on_hit) observer_.on_hit();
      return pinned;
    }
    if (adapter_id.empty() || attempt > 0) break;
    if (observer_.on_miss) observer_.on_miss();
    absl::StatusOr<AdapterInfo> loaded = Load(name, adapter_id);
    if (!loaded.ok()) {
      return absl::Status(
          loaded.status().code(),
          absl::StrCat("adapter '", name,
                       "' is not loaded, and loading it failed: ", loaded.status().message()));
    }
  }
  return absl::NotFoundError(
      absl::StrCat("adapter '", name, "' is not loaded (LoadAdapter it first)"));
}

absl::StatusOr<UnloadResult> AdapterCache::Unload(const std::string& name,
                                                  std::optional<std::chrono::milliseconds> wait) {
  std::shared_ptr<Entry> entry, free_now;
  UnloadResult result;
  {
    std::lock_guard<std::mutex> serial(load_mu_);
    std::lock_guard<std::mutex> lock(mu_);
    known_.erase(name);
    auto it = names_.find(name);
    if (it == names_.end())
      return absl::NotFoundError(absl::StrCat("adapter '", name, "' is not loaded"));
    entry = loaded_.at(it->second);
    result.adapter = InfoLocked(*entry);
    entry->names.erase(name);
    names_.erase(it);
    if (!entry->names.empty()) return result;  // the version stays for its other names
    free_now = RetireLocked(entry);
  }
  if (free_now) {
    Free(free_now);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    auto done = [&] { return entry->freed; };
    if (!wait) {
      freed_.wait(lock, done);
    } else if (!freed_.wait_for(lock, *wait, done)) {
      return absl::DeadlineExceededError(
          absl::StrCat("adapter '", name, "' is still used by ", entry->pins,
                       " running requests; it will be freed when they end"));
    }
  }
  result.freed_bytes = entry->bytes;
  NotifyChange();
  return result;
}

std::vector<AdapterInfo> AdapterCache::List() const {
  std::vector<std::pair<uint64_t, AdapterInfo>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [digest, e] : loaded_) all.push_back({e->last_tick, InfoLocked(*e)});
    for (const auto& e : retiring_) all.push_back({e->last_tick, InfoLocked(*e)});
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<AdapterInfo> out;
  for (auto& [tick, info] : all) out.push_back(std::move(info));
  return out;
}

int64_t AdapterCache::used_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_bytes_;
}

}  // namespace qwha::serve

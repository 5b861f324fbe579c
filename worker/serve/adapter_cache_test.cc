#include "worker/serve/adapter_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "worker/io/atomic_file.h"
#include "worker/serve/serving_model.h"
#include "worker/serve/test_util.h"

namespace qwha::serve {
namespace {

using adapters::AdapterType;

class AdapterCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::QuantizedModel("llama2");
    auto serving = ServingModel::FromModel(*model_, testing::TestQuant(), {}, 64);
    ASSERT_TRUE(serving.ok());
    serving_ = *std::move(serving);
    root_ = testing::TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (int i = 0; i < 4; ++i) {
      const AdapterType type = i == 3 ? AdapterType::kLora : AdapterType::kQwha;
      ASSERT_TRUE(testing::WriteAdapterDir(testing::RandomAdapters(*model_, type, 10 + i), type,
                                           root_ + "/a" + std::to_string(i))
                      .ok());
    }
    source_ = std::make_unique<DirectoryAdapterSource>(root_);
  }

  std::unique_ptr<AdapterCache> MakeCache(int64_t budget) {
    AdapterCacheOptions options;
    options.memory_budget_bytes = budget;
    AdapterCacheObserver observer;
    observer.on_hit = [this] { ++hits_; };
    observer.on_miss = [this] { ++misses_; };
    observer.on_evict = [this](int64_t) { ++evictions_; };
    return std::make_unique<AdapterCache>(serving_.get(), source_.get(), options, observer);
  }

  // The device bytes adapter `id` takes once loaded (its estimate bounds them).
  int64_t Bytes(const std::string& id) {
    AdapterLoader loader(serving_.get(), root_ + "/" + id, "");
    EXPECT_TRUE(loader.Load().ok());
    const int64_t bytes = loader.adapter()->memory_bytes();
    EXPECT_LE(bytes, *loader.EstimateMemory());
    return bytes;
  }

  std::unique_ptr<model::LlamaModel> model_;
  std::unique_ptr<ServingModel> serving_;
  std::string root_;
  std::unique_ptr<DirectoryAdapterSource> source_;
  std::atomic<int> hits_{0}, misses_{0}, evictions_{0};
};

TEST_F(AdapterCacheTest, UnloadFreesTheTensorsAndTheAccountedBytes) {
  auto cache = MakeCache(int64_t{1} << 30);
  EXPECT_EQ(cache->used_bytes(), 0);
  auto info = cache->Load("x", "a0");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(info->cache_hit);
  EXPECT_EQ(info->memory_bytes, Bytes("a0"));
  EXPECT_EQ(cache->used_bytes(), Bytes("a0"));

  std::vector<c10::weak_intrusive_ptr<c10::StorageImpl>> storages;
  {
    auto pinned = cache->Acquire("x");
    ASSERT_TRUE(pinned.ok());
    (*pinned)->ForEachTensor(
        [&](const torch::Tensor& t) { storages.push_back(t.storage().getWeakStorageImpl()); });
  }
  ASSERT_FALSE(storages.empty());
  auto unloaded = cache->Unload("x");
  ASSERT_TRUE(unloaded.ok()) << unloaded.status();
  EXPECT_EQ(unloaded->freed_bytes, Bytes("a0"));
  EXPECT_EQ(cache->used_bytes(), 0);
  EXPECT_TRUE(cache->List().empty());
  for (const auto& weak : storages) EXPECT_TRUE(weak.expired()) << "a tensor outlived Unload";
  EXPECT_EQ(cache->Unload("x").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(AdapterCacheTest, UnloadWaitsForTheRequestsUsingTheVersion) {
  auto cache = MakeCache(int64_t{1} << 30);
  ASSERT_TRUE(cache->Load("x", "a0").ok());
  auto pinned = cache->Acquire("x");
  ASSERT_TRUE(pinned.ok());
  std::atomic<bool> returned{false};
  std::thread unloader([&] {
    auto result = cache->Unload("x");
    EXPECT_TRUE(result.ok()) << result.status();
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(returned) << "Unload returned while a request used the adapter";
  // The name is gone for new requests at once, but the pinned one still works.
  EXPECT_EQ(cache->Acquire("x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache->used_bytes(), Bytes("a0"));
  EXPECT_EQ((*pinned)->digest(), source_->Describe("a0")->digest);
  pinned->reset();
  unloader.join();
  EXPECT_TRUE(returned);
  EXPECT_EQ(cache->used_bytes(), 0);

  // With a bounded wait the call gives up but the version is still freed later.
  ASSERT_TRUE(cache->Load("y", "a1").ok());
  auto pin = cache->Acquire("y");
  auto timed = cache->Unload("y", std::chrono::milliseconds(50));
  EXPECT_EQ(timed.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(cache->used_bytes(), Bytes("a1"));
  pin->reset();
  EXPECT_EQ(cache->used_bytes(), 0);
}

TEST_F(AdapterCacheTest, ANewVersionUnderTheSameNameLeavesPinnedRequestsOnTheOld) {
  auto cache = MakeCache(int64_t{1} << 30);
  ASSERT_TRUE(cache->Load("x", "a0").ok());
  auto old_pin = cache->Acquire("x");
  ASSERT_TRUE(old_pin.ok());
  auto loaded = cache->Load("x", "a1");
  ASSERT_TRUE(loaded.ok());
  auto new_pin = cache->Acquire("x");
  ASSERT_TRUE(new_pin.ok());
  EXPECT_EQ((*old_pin)->digest(), source_->Describe("a0")->digest);
  EXPECT_EQ((*new_pin)->digest(), source_->Describe("a1")->digest);
  EXPECT_NE((*old_pin)->digest(), (*new_pin)->digest());
  // The old version is kept for its request only, then freed.
  EXPECT_EQ(cache->used_bytes(), Bytes("a0") + Bytes("a1"));
  ASSERT_EQ(cache->List().size(), 2u);
  old_pin->reset();
  EXPECT_EQ(cache->used_bytes(), Bytes("a1"));
  ASSERT_EQ(cache->List().size(), 1u);
  EXPECT_EQ(cache->List()[0].names, std::vector<std::string>{"x"});
}

TEST_F(AdapterCacheTest, SameDigestUnderTwoNamesIsOneCopy) {
  auto cache = MakeCache(int64_t{1} << 30);
  ASSERT_TRUE(cache->Load("x", "a0").ok());
  auto second = cache->Load("y", "a0");
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->cache_hit);
  EXPECT_EQ(cache->used_bytes(), Bytes("a0"));
  auto unloaded = cache->Unload("x");
  ASSERT_TRUE(unloaded.ok());
  EXPECT_EQ(unloaded->freed_bytes, 0);  // still loaded for "y"
  EXPECT_TRUE(cache->Acquire("y").ok());
}

TEST_F(AdapterCacheTest, LeastRecentlyUsedIdleVersionsAreEvictedAndReloadedOnDemand) {
  const int64_t one = std::max({Bytes("a0"), Bytes("a1"), Bytes("a2")});
  auto cache = MakeCache(2 * one + one / 2);  // room for two
  ASSERT_TRUE(cache->Load("a", "a0").ok());
  ASSERT_TRUE(cache->Load("b", "a1").ok());
  ASSERT_TRUE(cache->Acquire("a").ok());  // "b" is now the least recently used
  ASSERT_TRUE(cache->Load("c", "a2").ok());
  EXPECT_EQ(evictions_, 1);
  EXPECT_LE(cache->used_bytes(), cache->budget_bytes());
  std::set<std::string> names;
  for (const AdapterInfo& info : cache->List()) names.insert(info.names.begin(), info.names.end());
  EXPECT_EQ(names, (std::set<std::string>{"a", "c"}));
  // "b" comes back on demand (a miss), evicting the now least recently used "a".
  const int misses = misses_;
  auto b = cache->Acquire("b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(misses_, misses + 1);
  EXPECT_EQ((*b)->digest(), source_->Describe("a1")->digest);
  EXPECT_EQ(evictions_, 2);
  EXPECT_LE(cache->used_bytes(), cache->budget_bytes());
}

TEST_F(AdapterCacheTest, VersionsInUseAreNeverEvicted) {
  const int64_t one = Bytes("a0");
  auto cache = MakeCache(one + one / 2);
  ASSERT_TRUE(cache->Load("a", "a0").ok());
  auto pinned = cache->Acquire("a");
  auto loaded = cache->Load("b", "a1");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kResourceExhausted) << loaded.status();
  EXPECT_NE(loaded.status().message().find("in use"), std::string::npos) << loaded.status();
  EXPECT_TRUE(cache->Acquire("a").ok());
  EXPECT_EQ(evictions_, 0);
  pinned->reset();
  EXPECT_TRUE(cache->Load("b", "a1").ok());
  EXPECT_EQ(evictions_, 1);
  // Larger than the whole budget.
  auto small = MakeCache(one / 2);
  EXPECT_EQ(small->Load("a", "a0").status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(AdapterCacheTest, CorruptOrMissingAdaptersFailClearlyAndChangeNothing) {
  auto cache = MakeCache(int64_t{1} << 30);
  ASSERT_TRUE(cache->Load("x", "a0").ok());
  auto missing = cache->Load("y", "nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);

  // Bytes change between Describe and Fetch: the digest no longer matches.
  class Corrupting : public AdapterSource {
   public:
    Corrupting(DirectoryAdapterSource* inner, std::string path)
        : inner_(inner), path_(std::move(path)) {}
    absl::StatusOr<AdapterDescription> Describe(const std::string& id) override {
      auto d = inner_->Describe(id);
      auto bytes = io::ReadFile(path_);
      (*bytes)[bytes->size() - 1] ^= 1;
      EXPECT_TRUE(io::WriteFileAtomically(path_, *bytes).ok());
      return d;
    }
    absl::StatusOr<FetchedAdapter> Fetch(const AdapterDescription& d) override {
      return inner_->Fetch(d);
    }

   private:
    DirectoryAdapterSource* inner_;
    std::string path_;
  } corrupting(source_.get(), root_ + "/a1/adapter.safetensors");
  AdapterCache other(serving_.get(), &corrupting, AdapterCacheOptions{});
  auto corrupt = other.Load("y", "a1");
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kDataLoss) << corrupt.status();
  EXPECT_EQ(other.used_bytes(), 0);
  EXPECT_TRUE(other.List().empty());

  // The first cache still serves what it had.
  EXPECT_TRUE(cache->Acquire("x").ok());
  EXPECT_EQ(cache->List().size(), 1u);
}

TEST_F(AdapterCacheTest, AnotherBaseModelIsRefusedBeforeDownloading) {
  class Described : public DirectoryAdapterSource {
   public:
    using DirectoryAdapterSource::DirectoryAdapterSource;
    absl::StatusOr<AdapterDescription> Describe(const std::string& id) override {
      auto d = DirectoryAdapterSource::Describe(id);
      d->base_model_digest = "b2";
      return d;
    }
  } source(root_);
  AdapterCacheOptions options;
  options.base_model_digest = "b1";
  AdapterCache cache(serving_.get(), &source, options);
  EXPECT_EQ(cache.Load("x", "a0").status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace qwha::serve

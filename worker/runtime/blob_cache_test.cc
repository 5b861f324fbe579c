#include "worker/runtime/blob_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"
#include "worker/runtime/local_files.h"

namespace qwha::runtime {
namespace {

std::string TempDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/blob_cache_" + name;
  EXPECT_TRUE(io::RemoveTree(dir).ok());
  EXPECT_TRUE(MakeDirs(dir).ok());
  return dir;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

qwha::v1::FileInfo Info(const std::string& name, const std::string& data) {
  qwha::v1::FileInfo f;
  f.set_name(name);
  f.set_size(static_cast<int64_t>(data.size()));
  f.set_sha256(io::Sha256Hex(data));
  return f;
}

// Serves `data` from the requested offset in pieces of `piece` bytes, and
// fails with Unavailable after `fail_after` bytes (-1: never).
BlobReader Serve(const std::string& data, size_t piece, int64_t fail_after = -1,
                 std::vector<int64_t>* offsets = nullptr) {
  return [=](int64_t offset, const BlobSink& sink) -> absl::Status {
    if (offsets != nullptr) offsets->push_back(offset);
    int64_t sent = 0;
    for (size_t at = static_cast<size_t>(offset); at < data.size(); at += piece) {
      if (fail_after >= 0 && sent >= fail_after) return absl::UnavailableError("connection reset");
      std::string_view chunk(data.data() + at, std::min(piece, data.size() - at));
      if (absl::Status s = sink(chunk); !s.ok()) return s;
      sent += static_cast<int64_t>(chunk.size());
    }
    return absl::OkStatus();
  };
}

TEST(BlobCacheTest, FetchesVerifiesAndReuses) {
  BlobCache cache(TempDir("fetch") + "/blobs");
  const std::string data = RandomBytes(300000, 1);
  const auto info = Info("model.safetensors", data);
  int64_t fetched = 0;
  auto path = cache.Fetch(info, Serve(data, 65536), &fetched);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, cache.PathOf(info.sha256()));
  EXPECT_EQ(fetched, 300000);
  EXPECT_EQ(*io::ReadFile(*path), data);
  EXPECT_TRUE(cache.Contains(info.sha256(), info.size()));
  EXPECT_FALSE(PathExists(*path + ".partial"));
  // A second fetch reuses the blob without reading.
  bool called = false;
  auto again = cache.Fetch(info, [&](int64_t, const BlobSink&) {
    called = true;
    return absl::OkStatus();
  });
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(called);
}

TEST(BlobCacheTest, RejectsAWrongDigestAndKeepsNothing) {
  BlobCache cache(TempDir("digest") + "/blobs");
  const std::string data = RandomBytes(5000, 2);
  auto info = Info("x", data);
  std::string corrupt = data;
  corrupt[1234] ^= 1;
  auto path = cache.Fetch(info, Serve(corrupt, 1000));
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kDataLoss) << path.status();
  EXPECT_FALSE(cache.Contains(info.sha256(), info.size()));
  EXPECT_FALSE(PathExists(cache.PathOf(info.sha256()) + ".partial"));
  // More bytes than announced are rejected as well.
  auto longer = cache.Fetch(info, Serve(data + "extra", 1000));
  EXPECT_EQ(longer.status().code(), absl::StatusCode::kDataLoss) << longer.status();
  // So are malformed digests.
  info.set_sha256("not-a-digest");
  EXPECT_EQ(cache.Fetch(info, Serve(data, 1000)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BlobCacheTest, ResumesAnInterruptedFetchFromItsOffset) {
  BlobCache cache(TempDir("resume") + "/blobs");
  const std::string data = RandomBytes(10000, 3);
  const auto info = Info("x", data);
  std::vector<int64_t> offsets;
  int64_t fetched = 0;
  auto first = cache.Fetch(info, Serve(data, 1000, /*fail_after=*/3000, &offsets), &fetched);
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable) << first.status();
  EXPECT_EQ(fetched, 3000);
  auto second = cache.Fetch(info, Serve(data, 1000, -1, &offsets), &fetched);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 3000}));
  EXPECT_EQ(fetched, 10000);
  EXPECT_EQ(*io::ReadFile(*second), data);
  // A stream that ends early is Unavailable (retry resumes), not corruption.
  BlobCache other(TempDir("short") + "/blobs");
  auto short_read = other.Fetch(info, Serve(data.substr(0, 4000), 1000));
  EXPECT_EQ(short_read.status().code(), absl::StatusCode::kUnavailable);
}

TEST(BlobCacheTest, ConcurrentFetchersOfOneBlobBothSucceed) {
  BlobCache cache(TempDir("concurrent") + "/blobs");
  const std::string data = RandomBytes(200000, 4);
  const auto info = Info("x", data);
  absl::Status results[2];
  std::thread threads[2];
  for (int i = 0; i < 2; ++i) {
    threads[i] = std::thread([&, i] { results[i] = cache.Fetch(info, Serve(data, 777)).status(); });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(results[0].ok()) << results[0];
  EXPECT_TRUE(results[1].ok()) << results[1];
  EXPECT_EQ(*io::ReadFile(cache.PathOf(info.sha256())), data);
}

TEST(MaterializeTest, BuildsTheModelDirectoryFromCachedBlobs) {
  const std::string root = TempDir("materialize");
  BlobCache cache(root + "/blobs");
  const std::string config = "{\"model_type\":\"llama\"}", weights = RandomBytes(4096, 5);
  std::vector<qwha::v1::FileInfo> files = {Info("config.json", config),
                                           Info("weights/model.safetensors", weights)};
  ASSERT_TRUE(cache.Fetch(files[0], Serve(config, 100)).ok());
  ASSERT_TRUE(cache.Fetch(files[1], Serve(weights, 1000)).ok());
  const std::string digest = io::Sha256OfFileSet(
      {{"weights/model.safetensors", files[1].sha256()}, {"config.json", files[0].sha256()}});
  auto dir = MaterializeFileSet(cache, files, digest, root + "/models/" + digest);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*io::ReadFile(*dir + "/config.json"), config);
  EXPECT_EQ(*io::ReadFile(*dir + "/weights/model.safetensors"), weights);
  struct stat a, b;
  ASSERT_EQ(::stat((*dir + "/config.json").c_str(), &a), 0);
  ASSERT_EQ(::stat(cache.PathOf(files[0].sha256()).c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);  // a hard link, not a copy
  // Reused as is the second time.
  EXPECT_EQ(*MaterializeFileSet(cache, files, digest, *dir), *dir);
}

TEST(MaterializeTest, DigestMismatchMissingBlobAndUnsafeNamesAreErrors) {
  const std::string root = TempDir("materialize_errors");
  BlobCache cache(root + "/blobs");
  const std::string data = "abc";
  std::vector<qwha::v1::FileInfo> files = {Info("config.json", data)};
  ASSERT_TRUE(cache.Fetch(files[0], Serve(data, 10)).ok());

  const std::string wrong = io::Sha256Hex("another model");
  auto mismatch = MaterializeFileSet(cache, files, wrong, root + "/models/" + wrong);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument) << mismatch.status();
  EXPECT_FALSE(PathExists(root + "/models/" + wrong));

  std::vector<qwha::v1::FileInfo> missing = {Info("tokenizer.json", "not cached")};
  auto not_found = MaterializeFileSet(cache, missing, "", root + "/models/m");
  EXPECT_EQ(not_found.status().code(), absl::StatusCode::kNotFound) << not_found.status();
  EXPECT_NE(not_found.status().message().find("tokenizer.json"), std::string::npos);

  std::vector<qwha::v1::FileInfo> wrong_size = files;
  wrong_size[0].set_size(99);
  EXPECT_EQ(MaterializeFileSet(cache, wrong_size, "", root + "/models/s").status().code(),
            absl::StatusCode::kDataLoss);

  for (const char* name : {"", "/etc/passwd", "../x", "a/../../x", "a//b", "./a"}) {
    std::vector<qwha::v1::FileInfo> bad = files;
    bad[0].set_name(name);
    EXPECT_EQ(MaterializeFileSet(cache, bad, "", root + "/models/b").status().code(),
              absl::StatusCode::kInvalidArgument)
        << name;
  }
  std::vector<qwha::v1::FileInfo> duplicate = {files[0], files[0]};
  EXPECT_EQ(MaterializeFileSet(cache, duplicate, "", root + "/models/d").status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Sets path's modification time `age` ago.
void Age(const std::string& path, std::chrono::seconds age) {
  const auto when = std::chrono::system_clock::now() - age;
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()).count();
  struct timespec times[2];
  times[0].tv_sec = times[1].tv_sec = static_cast<time_t>(ns / 1000000000);
  times[0].tv_nsec = times[1].tv_nsec = static_cast<long>(ns % 1000000000);
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

int64_t MtimeAge(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
             .count() -
         static_cast<int64_t>(st.st_mtim.tv_sec);
}

// Pruning: blobs and materialized directories, least recently used first,
// hard links counted once, the budget honoured; recently used entries, a
// directory under an InUseLock and partial downloads stay; uses (a Fetch that
// finds the blob, a MaterializeFileSet that reuses the directory) count as
// recent.
TEST(PruneTest, RemovesTheLeastRecentlyUsedUntilTheRestFits) {
  const std::string root = TempDir("prune");
  BlobCache cache(root + "/blobs");
  const std::string a = RandomBytes(1000, 11), b = RandomBytes(2000, 12), c = RandomBytes(4000, 13);
  const auto ia = Info("a.bin", a), ib = Info("b.bin", b), ic = Info("c.bin", c);
  const std::vector<std::pair<qwha::v1::FileInfo, std::string>> blobs = {{ia, a}, {ib, b}, {ic, c}};
  for (const auto& [info, data] : blobs) ASSERT_TRUE(cache.Fetch(info, Serve(data, 512)).ok());
  // The model directory links b (so b's bytes count once); a download in progress.
  auto model = MaterializeFileSet(cache, {ib}, "", root + "/models/m1");
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE(io::WriteFileAtomically(cache.PathOf(io::Sha256Hex("x")) + ".partial", "xyz").ok());
  // Oldest first: c's blob, then the model directory, then b's blob, then a's.
  Age(cache.PathOf(ic.sha256()), std::chrono::hours(4));
  Age(*model, std::chrono::hours(3));
  Age(cache.PathOf(ib.sha256()), std::chrono::hours(2));
  Age(cache.PathOf(ia.sha256()), std::chrono::hours(1));
  const std::vector<std::string> dirs = {root + "/models", root + "/datasets"};

  // Within budget: nothing goes.
  auto kept = PruneWorkCache(cache, dirs, 7000, std::chrono::minutes(10));
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->bytes_before, 7000);
  EXPECT_EQ(kept->removed_blobs + kept->removed_dirs, 0);

  // 3000 bytes: c goes (4000 freed -> 3000), nothing more.
  auto first = PruneWorkCache(cache, dirs, 3000, std::chrono::minutes(10));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->removed_blobs, 1);
  EXPECT_EQ(first->bytes_after, 3000);
  EXPECT_FALSE(cache.Contains(ic.sha256(), ic.size()));
  EXPECT_TRUE(cache.Contains(ib.sha256(), ib.size()));

  // 1500 bytes with the model directory in use: it stays, so b's bytes stay
  // with it even once b's blob goes, and a must go too.
  {
    auto lock = InUseLock::Take(*model);
    ASSERT_TRUE(lock.ok()) << lock.status();
    auto held = PruneWorkCache(cache, dirs, 1500, std::chrono::minutes(10));
    ASSERT_TRUE(held.ok()) << held.status();
    EXPECT_EQ(held->removed_dirs, 0);
    EXPECT_EQ(held->removed_blobs, 2);
    EXPECT_EQ(held->bytes_after, 2000);  // b, through the model directory's link
    EXPECT_TRUE(PathExists(*model + "/b.bin"));
    EXPECT_EQ(*io::ReadFile(*model + "/b.bin"), b);
  }
  // Released: the directory goes, and with it b's last link.
  auto released = PruneWorkCache(cache, dirs, 0, std::chrono::minutes(10));
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->removed_dirs, 1);
  EXPECT_EQ(released->bytes_after, 0);
  EXPECT_FALSE(PathExists(*model));
  EXPECT_TRUE(PathExists(cache.PathOf(io::Sha256Hex("x")) + ".partial"));

  // Recent uses are spared: a fresh fetch, and an old blob fetched again
  // (the Fetch that finds it makes it recent).
  ASSERT_TRUE(cache.Fetch(ia, Serve(a, 512)).ok());
  ASSERT_TRUE(cache.Fetch(ib, Serve(b, 512)).ok());
  Age(cache.PathOf(ia.sha256()), std::chrono::hours(5));
  Age(cache.PathOf(ib.sha256()), std::chrono::hours(5));
  ASSERT_TRUE(cache.Fetch(ia, Serve("", 512)).ok());  // found: no read
  EXPECT_LT(MtimeAge(cache.PathOf(ia.sha256())), 60);
  auto spared = PruneWorkCache(cache, dirs, 0, std::chrono::minutes(10));
  ASSERT_TRUE(spared.ok()) << spared.status();
  EXPECT_EQ(spared->removed_blobs, 1);  // b only
  EXPECT_TRUE(cache.Contains(ia.sha256(), ia.size()));
  EXPECT_FALSE(cache.Contains(ib.sha256(), ib.size()));
  // A reused directory is recent again.
  auto again = MaterializeFileSet(cache, {ia}, "", root + "/datasets/d1");
  ASSERT_TRUE(again.ok()) << again.status();
  Age(*again, std::chrono::hours(5));
  ASSERT_TRUE(MaterializeFileSet(cache, {ia}, "", *again).ok());
  EXPECT_LT(MtimeAge(*again), 60);
  // An empty cache prunes to nothing without errors.
  BlobCache empty(root + "/none");
  auto none = PruneWorkCache(empty, {root + "/missing"}, 0, std::chrono::minutes(10));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->bytes_before, 0);
}

// The quantized-base cache (<cache dir>/<model digest>/<key>/files, written
// by worker/pipeline/base_cache.cc) pruned with the inputs: its entries are
// units under ChildDirectories(cache dir), least recently used first, never
// one being built (<key>.tmp.*) or one a reader holds (io::InUseLock).
TEST(PruneTest, QuantizedBaseEntriesArePrunedLikeInputs) {
  const std::string root = TempDir("prune-bases");
  BlobCache cache(root + "/blobs");
  const std::string cache_dir = root + "/cache";
  auto entry = [&](const std::string& digest, const std::string& key, int64_t bytes) {
    const std::string dir = cache_dir + "/" + digest + "/" + key;
    std::filesystem::create_directories(dir);
    EXPECT_TRUE(io::WriteFileAtomically(dir + "/manifest.json", "{}").ok());
    EXPECT_TRUE(io::WriteFileAtomically(dir + "/w.quant.safetensors",
                                        RandomBytes(static_cast<size_t>(bytes) - 2, 7))
                    .ok());
    return dir;
  };
  const std::string old_a = entry("d1", "rtn-b4-g64-a", 1000);
  const std::string held = entry("d1", "rtn-b2-g64-b", 2000);
  const std::string recent = entry("d2", "gptq-b4-g128-c", 4000);
  const std::string building = entry("d2", "rtn-b3-g64-d.tmp.77.5", 8000);
  Age(old_a, std::chrono::hours(3));
  Age(held, std::chrono::hours(4));
  Age(recent, std::chrono::hours(1));
  Age(building, std::chrono::hours(5));
  const std::vector<std::string> roots = ChildDirectories(cache_dir);
  EXPECT_EQ(roots, (std::vector<std::string>{cache_dir + "/d1", cache_dir + "/d2"}));
  EXPECT_TRUE(ChildDirectories(root + "/missing").empty());

  auto lock = InUseLock::Take(held);
  ASSERT_TRUE(lock.ok()) << lock.status();
  // 6000 bytes: the oldest, `held`, is in use, so the next oldest goes.
  auto pruned = PruneWorkCache(cache, roots, 6000, std::chrono::minutes(10));
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(pruned->bytes_before, 7000);  // the entry being built is not counted
  EXPECT_EQ(pruned->removed_dirs, 1);
  EXPECT_EQ(pruned->bytes_after, 6000);
  EXPECT_FALSE(PathExists(old_a));
  EXPECT_TRUE(PathExists(held + "/w.quant.safetensors"));
  EXPECT_TRUE(PathExists(recent + "/manifest.json"));
  EXPECT_TRUE(PathExists(building + "/manifest.json"));
  // Released: it goes too (oldest), the recent one stays within 4500.
  lock = absl::InternalError("released");
  auto released =
      PruneWorkCache(cache, ChildDirectories(cache_dir), 4500, std::chrono::minutes(10));
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->removed_dirs, 1);
  EXPECT_FALSE(PathExists(held));
  EXPECT_FALSE(PathExists(held + ".inuse"));
  EXPECT_TRUE(PathExists(recent + "/manifest.json"));
}

}  // namespace
}  // namespace qwha::runtime

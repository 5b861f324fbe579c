// The worker's local content-addressed blob cache, and the directories built
// from it:
//
//   <root>/<sha256>            a verified blob (read-only, never modified)
//   <root>/<sha256>.partial    a download in progress (resumed from its length)
//
// A blob enters the cache only after its sha256 and size matched (written to
// .partial, fsynced, renamed, directory fsynced), so a present blob is
// trusted without re-hashing. Several worker processes may share one cache:
// a download holds an flock on its .partial file, and a second fetcher of the
// same blob waits and then finds it complete.
//
// Every use of a blob (a Fetch that finds it) or of a materialized directory
// (a MaterializeFileSet that reuses it) sets its modification time to now, so
// that PruneWorkCache removes the least recently used first; a job holds an
// InUseLock on each directory it reads, which pruning never removes.
//
// Thread safety: a BlobCache is immutable; Fetch, MaterializeFileSet and
// PruneWorkCache may be called from several threads and processes at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qwha/v1/registry.pb.h"
#include "worker/io/in_use_lock.h"

namespace qwha::runtime {

// Receives the next piece of a blob's bytes; a non-OK return stops the read.
using BlobSink = std::function<absl::Status(std::string_view data)>;
// Streams the blob's bytes from `offset` to its end into `sink` (e.g. one
// ReadBlob call). Returns OK when the stream ended normally.
using BlobReader = std::function<absl::Status(int64_t offset, const BlobSink& sink)>;

class BlobCache {
 public:
  // A cache rooted at `root` (created on first Fetch).
  explicit BlobCache(std::string root) : root_(std::move(root)) {}

  const std::string& root() const { return root_; }
  // <root>/<sha256>, whether or not it is there.
  std::string PathOf(const std::string& sha256) const;
  // True iff the blob is in the cache with `size` bytes.
  bool Contains(const std::string& sha256, int64_t size) const;

  // Makes the blob `file.sha256()` of `file.size()` bytes available and
  // returns its path. A cached blob is reused without calling `read`;
  // otherwise `read` is called once, from the length of a .partial file left
  // by an earlier attempt. `*fetched` (if not null) is increased by the bytes
  // received. Errors: InvalidArgument for a malformed digest or negative size;
  // DataLoss if the bytes do not match the digest or exceed the size (the
  // partial download is discarded); Unavailable if the stream ended short
  // (the partial download is kept, so a retry resumes); the reader's error as
  // is (partial kept); Internal naming the path for local I/O errors.
  absl::StatusOr<std::string> Fetch(const qwha::v1::FileInfo& file, const BlobReader& read,
                                    int64_t* fetched = nullptr) const;

 private:
  std::string root_;
};

// OK iff `name` is a safe relative path inside a directory: not empty, not
// absolute, no "." or ".." component, no empty component, no NUL or '\\'.
absl::Status CheckRelativeName(const std::string& name);

// Builds directory `dir` holding every file of `files` under its name (sub-
// directories as the names say) as a hard link to its cached blob (a copy
// where linking fails, e.g. across file systems). If `expected_digest` is not
// empty it must equal io::Sha256OfFileSet over the (name, sha256) pairs.
// The directory appears complete or not at all (built as "<dir>.tmp.<pid>",
// then renamed); an existing `dir` is reused as is. Errors: InvalidArgument
// for a digest mismatch, an unsafe or duplicate name; NotFound naming the
// file whose blob is not cached; DataLoss if a cached blob's size differs
// from the FileInfo; Internal naming the path for I/O errors.
absl::StatusOr<std::string> MaterializeFileSet(const BlobCache& cache,
                                               const std::vector<qwha::v1::FileInfo>& files,
                                               const std::string& expected_digest,
                                               const std::string& dir);

// A job holds an io::InUseLock on each materialized directory it reads
// (worker/io/in_use_lock.h): PruneWorkCache leaves it alone.
using io::InUseLock;

struct PruneStats {
  int64_t removed_blobs = 0;
  int64_t removed_dirs = 0;
  int64_t bytes_before = 0;  // the cached inputs' bytes, each file counted once
  int64_t bytes_after = 0;
};

// Keeps a worker's cached inputs within `max_bytes`: the blobs under
// cache.root() and the directories materialized from them directly under
// each of `dir_roots` (<work>/models, <work>/datasets), every file counted
// once (a materialized file is a hard link to its blob, so its bytes are
// freed when the last of the two goes). Removes the least recently used
// first (modification time) until the rest fit, never what was used less
// than `min_idle` ago (another process may be between fetching and linking
// it), a directory under an InUseLock, a download in progress (.partial) or
// a directory being built (.tmp.*); a directory is renamed away before it is
// removed, so that one removed halfway is never taken for a complete one.
// Entries that vanish meanwhile are skipped.
// Errors: Internal naming the path for an I/O error.
absl::StatusOr<PruneStats> PruneWorkCache(const BlobCache& cache,
                                          const std::vector<std::string>& dir_roots,
                                          int64_t max_bytes, std::chrono::seconds min_idle);

// The directories directly under `dir` (not those being built, *.tmp.*), as
// PruneWorkCache roots: the quantized-base cache's <cache dir>/<model digest>
// directories, whose entries (one per quantization key) are pruned like
// materialized inputs. Empty if `dir` is missing.
std::vector<std::string> ChildDirectories(const std::string& dir);

}  // namespace qwha::runtime

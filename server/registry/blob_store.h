// Content-addressed files: every blob lives at <root>/<aa>/<sha256> where aa
// is the digest's first two hex digits. A blob becomes visible only complete
// and verified: writers stream into <root>/tmp/, fsync, check the digest,
// then rename into place and fsync the directory. Blobs are immutable.
//
// Thread safety: BlobStore is safe for concurrent use; each BlobWriter
// belongs to one thread. Concurrent writers of the same content both succeed
// (the second rename replaces an identical file).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/io/sha256.h"

namespace qwha::registry {

struct BlobInfo {
  std::string sha256;
  int64_t size = 0;
};

class BlobWriter {
 public:
  ~BlobWriter();  // discards the temp file unless Commit() succeeded
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  // Appends. InvalidArgument when the blob would exceed the writer's limit
  // (the message names `what` and the limit); Internal on I/O errors.
  absl::Status Append(std::string_view data);
  int64_t size() const { return size_; }

  // Finishes: if `expected_sha256` / `expected_size` are given (non-empty /
  // ≥ 0) they must match, else DataLoss naming `what`. Durable when OK.
  absl::StatusOr<BlobInfo> Commit(const std::string& expected_sha256 = "",
                                  int64_t expected_size = -1);

 private:
  friend class BlobStore;
  BlobWriter() = default;
  std::string root_, temp_path_, what_;
  int fd_ = -1;
  int64_t size_ = 0, limit_ = 0;
  io::Sha256Stream digest_;
  bool committed_ = false;
};

class BlobStore {
 public:
  // Creates root (and root/tmp) if needed and removes stale temp files.
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(const std::string& root);

  // A writer for one new blob of at most `limit` bytes; `what` names it in
  // errors (e.g. "dataset train.jsonl").
  absl::StatusOr<std::unique_ptr<BlobWriter>> NewWriter(const std::string& what, int64_t limit);

  // Copies an existing file into the store, verifying nothing but its own
  // digest (computed while copying).
  absl::StatusOr<BlobInfo> ImportFile(const std::string& path);

  // Path of a stored blob, NotFound if absent. Callers read it directly.
  absl::StatusOr<std::string> PathOf(const std::string& sha256) const;
  bool Contains(const std::string& sha256) const;

  // Reads up to `length` bytes at `offset` (short at the end).
  absl::StatusOr<std::string> Read(const std::string& sha256, int64_t offset, int64_t length) const;

  // Removes a blob (NotFound is OK). The store keeps no reference counts:
  // callers delete only blobs no metadata row names.
  absl::Status Remove(const std::string& sha256);

  // Bytes under root (stored blobs only).
  int64_t TotalBytes() const;

  const std::string& root() const { return root_; }

 private:
  BlobStore() = default;
  std::string FinalPath(const std::string& sha256) const;
  std::string root_;
};

}  // namespace qwha::registry

// Marks on cached directories for least-recently-used pruning
// (runtime::PruneWorkCache): when a directory was last used (its modification
// time), and whether a process is reading it now (a shared flock on
// "<dir>.inuse", from any process; pruning takes the exclusive lock before it
// removes the directory, and leaves it alone while any holder remains).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace qwha::io {

// Sets the modification time of `path` to now: a use, for LRU pruning. Best
// effort (a path that vanished is left alone).
void MarkUsed(const std::string& path);

// A shared flock on "<dir>.inuse" (created if missing), held while the
// directory `dir` is read. Move-only; the destructor releases it.
class InUseLock {
 public:
  // NotFound if the directory that would hold the lock file is missing;
  // PermissionDenied or Internal naming the path if the lock file cannot be
  // created or locked.
  static absl::StatusOr<InUseLock> Take(const std::string& dir);
  InUseLock(InUseLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  InUseLock& operator=(InUseLock&& other) noexcept;
  InUseLock(const InUseLock&) = delete;
  InUseLock& operator=(const InUseLock&) = delete;
  ~InUseLock();

 private:
  explicit InUseLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace qwha::io

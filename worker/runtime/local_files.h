// Small POSIX file helpers of the worker runtime (directory creation, links,
// listings). They avoid std::filesystem on purpose: the libtorch.so of
// PyTorch wheels exports its own std::filesystem symbols (worker/io/atomic_file.h).
//
// Thread safety: all functions may be called concurrently; errors are Status
// values naming the path and the errno text (NotFound for ENOENT, Internal
// otherwise).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::runtime {

// The Status for errno `err` of operation `what` on `path`.
absl::Status ErrnoStatus(int err, const std::string& what, const std::string& path);

// mkdir -p `path` (mode 0755). OK if it already exists as a directory.
absl::Status MakeDirs(const std::string& path);

// fsyncs directory `dir` so a rename or link inside it survives a crash.
absl::Status SyncDirectory(const std::string& dir);

// Hard-links `from` to `to` (creating to's parent directories); copies the
// bytes (fsynced) where linking is not possible. An existing `to` is replaced.
absl::Status LinkOrCopy(const std::string& from, const std::string& to);

// Every regular file below `dir`, as paths relative to it ("a/b.json"),
// sorted; directories whose relative path is in `skip_dirs` are not entered.
// Symbolic links and other non-regular entries are ignored. NotFound if `dir`
// does not exist.
absl::StatusOr<std::vector<std::string>> ListFilesRecursive(
    const std::string& dir, const std::vector<std::string>& skip_dirs = {});

// The parent directory of `path` ("." if it has none).
std::string DirName(const std::string& path);

// True iff `path` exists (any type).
bool PathExists(const std::string& path);

}  // namespace qwha::runtime

// Durable whole-file writes, whole-file reads, and tree removal.
//
// Thread safety: both functions are safe to call concurrently; concurrent
// writers of one path each produce a complete file and the last rename wins.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::io {

// Replaces the file at `path` with `data` so that after a crash the path holds
// either the old content or the new one, never a mix: writes
// "<path>.tmp.<pid>.<random>" in the same directory, fsyncs it, renames it over
// `path` and fsyncs the directory. On error the temp file is removed and the
// Status (Internal / NotFound / PermissionDenied) names the path and errno text.
absl::Status WriteFileAtomically(const std::string& path, std::string_view data);

// "<what> <path>: <errno text>" as NotFound (ENOENT, ENOTDIR),
// PermissionDenied (EACCES, EPERM, EROFS) or Internal.
absl::Status ErrnoStatus(int err, const std::string& what, const std::string& path);

// Returns the whole content of `path`; NotFound / PermissionDenied / Internal
// naming the path and errno text otherwise.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Removes `path` and, if it is a directory, everything below it (symbolic
// links are removed, not followed). OK if `path` does not exist; otherwise
// Internal naming the entry that could not be removed.
//
// Use this instead of std::filesystem::remove_all: the libtorch.so of PyTorch
// wheels exports its own std::filesystem symbols, and remove_all resolved
// there crashes on non-empty directories (seen with PyTorch 2.11 on the GPU
// machine).
absl::Status RemoveTree(const std::string& path);

}  // namespace qwha::io

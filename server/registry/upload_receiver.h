// One upload (UploadModel or UploadDataset) as it arrives: the header
// declares every file with its size (and optionally sha256), then data
// messages append to declared files, in order within a file, files in any
// interleaving. Bytes go to uncommitted blob writers (temp files), so nothing
// is visible until Commit(); dropping the receiver discards everything.
//
// Errors are InvalidArgument naming the field or file: a malformed header
// (`name`, a file name, a repeated file, a negative size, a malformed
// sha256), declared sizes over the limit (names the file and the limit), data
// for an undeclared file, more bytes than declared, fewer at the end, or a
// sha256 that does not match.
//
// Thread safety: one receiver per upload, used by one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qwha/v1/registry.pb.h"
#include "server/registry/blob_store.h"

namespace qwha::registry {

// Names of models, datasets and files: non-empty, at most 200 bytes, no NUL,
// not starting with '/', no ".." path component. InvalidArgument naming
// `field` and the value otherwise.
absl::Status ValidateName(std::string_view field, std::string_view name);

class UploadReceiver {
 public:
  // Called with every appended piece of a file, in order (e.g. to validate a
  // dataset while it streams); an error ends the upload with that error.
  using Observer = std::function<absl::Status(const std::string& file, std::string_view data)>;

  // `kind` ("model", "dataset") names the upload in errors; `limit` bounds
  // the total bytes of all files; `max_files` the number of files.
  UploadReceiver(BlobStore* blobs, std::string kind, int64_t limit, int max_files);
  UploadReceiver(const UploadReceiver&) = delete;
  UploadReceiver& operator=(const UploadReceiver&) = delete;

  void set_observer(Observer observer) { observer_ = std::move(observer); }

  // The first message; checks names, sizes and digests as described above.
  absl::Status Header(const v1::UploadHeader& header);
  // Any later message (a second header is InvalidArgument naming `header`).
  absl::Status Message(const v1::UploadChunk& chunk);
  // After the last message: every file has its declared size.
  absl::Status CheckComplete();

  // Commits every blob, verifying declared sha256s; returns the files in
  // header order. Call with a BlobWriteGuard held. On error `committed` holds
  // the digests already committed (to be removed if unreferenced).
  absl::StatusOr<std::vector<v1::FileInfo>> Commit(std::vector<std::string>* committed);

  bool has_header() const { return has_header_; }
  const v1::UploadHeader& header() const { return header_; }
  int64_t received_bytes() const { return received_; }

 private:
  struct File {
    int64_t declared = 0;
    std::string sha256;  // lower-case; empty if not declared
    std::unique_ptr<BlobWriter> writer;
  };
  absl::StatusOr<File*> Writable(const std::string& name);

  BlobStore* blobs_;
  std::string kind_;
  int64_t limit_;
  int max_files_;
  Observer observer_;
  bool has_header_ = false;
  v1::UploadHeader header_;
  std::map<std::string, File> files_;
  int64_t received_ = 0;
};

}  // namespace qwha::registry

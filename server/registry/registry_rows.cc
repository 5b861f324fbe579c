#include "server/registry/registry_rows.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "worker/io/sha256.h"

namespace qwha::registry::internal {

google::protobuf::Timestamp ToTimestamp(double seconds) {
  google::protobuf::Timestamp t;
  int64_t whole = static_cast<int64_t>(std::floor(seconds));
  int64_t millis = std::llround((seconds - static_cast<double>(whole)) * 1000.0);
  if (millis >= 1000) ++whole, millis -= 1000;
  t.set_seconds(whole);
  t.set_nanos(static_cast<int32_t>(millis * 1000000));
  return t;
}

absl::Status CheckFiles(const std::string& what,
                        const google::protobuf::RepeatedPtrField<v1::FileInfo>& files,
                        const BlobStore& blobs) {
  if (files.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": no files"));
  std::set<std::string> names;
  for (const v1::FileInfo& f : files) {
    if (f.name().empty() || !names.insert(f.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": file name '", f.name(), "' is empty or repeated"));
    }
    if (!io::IsSha256Hex(f.sha256()) || f.size() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " file ", f.name(), ": malformed sha256 or size"));
    }
    if (!blobs.Contains(f.sha256())) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, " file ", f.name(), ": blob ", f.sha256(), " is not stored"));
    }
  }
  return absl::OkStatus();
}

std::string FileSetDigest(const google::protobuf::RepeatedPtrField<v1::FileInfo>& files) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const v1::FileInfo& f : files) pairs.emplace_back(f.name(), f.sha256());
  return io::Sha256OfFileSet(std::move(pairs));
}

absl::Status RecordBlobs(store::Transaction& tx,
                         const google::protobuf::RepeatedPtrField<v1::FileInfo>& files,
                         double now) {
  for (const v1::FileInfo& f : files) {
    absl::Status s =
        tx.Exec("INSERT OR IGNORE INTO blobs(sha256, size, created_at) VALUES(?, ?, ?)",
                {f.sha256(), f.size(), now});
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace qwha::registry::internal

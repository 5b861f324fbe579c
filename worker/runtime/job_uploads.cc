#include "worker/runtime/job_uploads.h"

#include <iostream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"
#include "worker/runtime/local_files.h"

namespace qwha::runtime {
namespace {

using Clock = std::chrono::steady_clock;

// Leftovers of atomic writes ("x.tmp.<pid>.<random>", "step-5.tmp/…").
bool IsTemporary(const std::string& name) {
  return absl::StrContains(name, ".tmp.") || absl::StrContains(name, ".tmp/") ||
         absl::EndsWith(name, ".tmp") || absl::StrContains(name, ".old/");
}

}  // namespace

JobUploader::JobUploader(SchedulerClient& client, WorkerMetrics& metrics, std::string job_id,
                         std::string lease_id, std::function<bool()> abort)
    : client_(client),
      metrics_(metrics),
      job_id_(std::move(job_id)),
      lease_id_(std::move(lease_id)),
      abort_(std::move(abort)) {}

absl::Status JobUploader::Retry(const std::function<absl::Status()>& call, const char* method,
                                std::chrono::milliseconds patience) {
  const auto deadline = Clock::now() + patience;
  Backoff backoff;
  for (;;) {
    absl::Status st = call();
    if (st.ok()) return st;
    metrics_.SchedulerError(method);
    if (!IsTransient(st) || Clock::now() >= deadline) return st;
    const auto wait = backoff.Next();
    std::cerr << "qwha-worker: job " << job_id_ << ": " << st.message() << "; retrying in "
              << wait.count() << " ms\n";
    for (auto until = Clock::now() + wait; Clock::now() < until;) {
      if (abort_ && abort_()) return absl::CancelledError(absl::StrCat(method, ": aborted"));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

absl::StatusOr<v1::FileInfo> JobUploader::UploadOne(v1::UploadFileRequest::Header::Kind kind,
                                                    const std::string& checkpoint,
                                                    const std::string& name,
                                                    const std::string& path,
                                                    Clock::time_point deadline) {
  absl::StatusOr<std::pair<std::string, int64_t>> digest = io::Sha256File(path);
  if (!digest.ok()) return digest.status();
  v1::UploadFileRequest::Header header;
  header.set_job_id(job_id_);
  header.set_lease_id(lease_id_);
  header.set_kind(kind);
  header.set_checkpoint(checkpoint);
  header.mutable_file()->set_name(name);
  header.mutable_file()->set_size(digest->second);
  header.mutable_file()->set_sha256(digest->first);
  v1::FileInfo uploaded = header.file();
  absl::Status st = Retry(
      [&]() -> absl::Status {
        int64_t sent = 0;
        absl::StatusOr<v1::UploadFileResponse> response = client_.UploadFile(header, path, &sent);
        metrics_.AddUploadedBytes(sent);
        if (!response.ok()) return response.status();
        if (response->has_file() && !response->file().sha256().empty()) {
          uploaded = response->file();
        }
        return absl::OkStatus();
      },
      "UploadFile", std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
  if (!st.ok()) return st;
  return uploaded;
}

absl::StatusOr<std::string> JobUploader::UploadNewCheckpoint(const std::string& root,
                                                             const std::string& last_uploaded,
                                                             std::chrono::milliseconds patience) {
  absl::StatusOr<std::string> latest = io::ReadFile(root + "/latest");
  if (!latest.ok()) return last_uploaded;  // no checkpoint yet
  const std::string set(absl::StripAsciiWhitespace(*latest));
  if (set.empty() || set == last_uploaded) return last_uploaded;
  const std::string dir = root + "/" + set;
  if (!PathExists(dir + "/trainer_state.json")) return last_uploaded;  // not complete yet
  absl::StatusOr<std::vector<std::string>> names = ListFilesRecursive(dir);
  if (!names.ok()) return names.status();
  const auto deadline = Clock::now() + patience;
  v1::CommitCheckpointRequest commit;
  commit.set_job_id(job_id_);
  commit.set_lease_id(lease_id_);
  commit.set_checkpoint(set);
  for (const std::string& name : *names) {
    if (IsTemporary(name)) continue;
    absl::StatusOr<v1::FileInfo> file =
        UploadOne(v1::UploadFileRequest::Header::CHECKPOINT, set, name, dir + "/" + name, deadline);
    if (!file.ok()) return file.status();
    *commit.add_files() = *file;
  }
  absl::Status st =
      Retry([&] { return client_.CommitCheckpoint(commit).status(); }, "CommitCheckpoint",
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
  if (!st.ok()) return st;
  return set;
}

absl::StatusOr<std::vector<v1::FileInfo>> JobUploader::UploadResults(
    const std::string& out_dir, std::chrono::milliseconds patience) {
  absl::StatusOr<std::vector<std::string>> names = ListFilesRecursive(out_dir, {"checkpoints"});
  if (!names.ok()) return names.status();
  const auto deadline = Clock::now() + patience;
  std::vector<v1::FileInfo> files;
  for (const std::string& name : *names) {
    if (IsTemporary(name)) continue;
    absl::StatusOr<v1::FileInfo> file =
        UploadOne(v1::UploadFileRequest::Header::RESULT, "", name, out_dir + "/" + name, deadline);
    if (!file.ok()) return file.status();
    files.push_back(*file);
  }
  return files;
}

}  // namespace qwha::runtime

#include "worker/runtime/job_inputs.h"

#include <iostream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"
#include "worker/runtime/local_files.h"

namespace qwha::runtime {
namespace {

using Clock = std::chrono::steady_clock;

// Sleeps `wait` in short slices; false if abort() became true meanwhile.
bool SleepUnlessAborted(std::chrono::milliseconds wait, const std::function<bool()>& abort) {
  const auto until = Clock::now() + wait;
  while (Clock::now() < until) {
    if (abort && abort()) return false;
    std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(
        std::chrono::milliseconds(100),
        std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now())));
  }
  return !(abort && abort());
}

class BlobFetcher {
 public:
  BlobFetcher(const v1::AcquireJobResponse& job, const BlobCache& cache, SchedulerClient& client,
              WorkerMetrics& metrics, const FetchOptions& options)
      : job_(job), cache_(cache), client_(client), metrics_(metrics), options_(options) {}

  // The cached path of `file`, fetching it if needed (see PrepareJobInputs).
  absl::StatusOr<std::string> Fetch(const v1::FileInfo& file) {
    auto read = [&](int64_t offset, const BlobSink& sink) {
      v1::ReadBlobRequest request;
      request.set_job_id(job_.job().id());
      request.set_lease_id(job_.lease_id());
      request.set_sha256(file.sha256());
      request.set_offset(offset);
      return client_.ReadBlob(request, sink);
    };
    Backoff backoff;
    int data_loss = 0;
    auto last_progress = Clock::now();
    for (;;) {
      int64_t fetched = 0;
      absl::StatusOr<std::string> path = cache_.Fetch(file, read, &fetched);
      metrics_.AddFetchedBytes(fetched);
      if (path.ok()) return path;
      const absl::Status& st = path.status();
      metrics_.SchedulerError("ReadBlob");
      if (fetched > 0) {
        last_progress = Clock::now();
        backoff.Reset();
      }
      if (st.code() == absl::StatusCode::kDataLoss) {
        if (++data_loss >= 2) return st;
      } else if (!IsTransient(st)) {
        return st;  // FailedPrecondition (lease), NotFound, InvalidArgument, local I/O
      } else if (Clock::now() - last_progress > options_.stall_timeout) {
        return absl::Status(
            st.code(), absl::StrCat("no progress fetching ", file.name(), " for ",
                                    options_.stall_timeout.count() / 1000, " s: ", st.message()));
      }
      const auto wait = backoff.Next();
      std::cerr << "qwha-worker: job " << job_.job().id() << ": fetching " << file.name() << ": "
                << st.message() << "; retrying in " << wait.count() << " ms\n";
      if (!SleepUnlessAborted(wait, options_.abort)) {
        return absl::CancelledError("fetching inputs: aborted");
      }
    }
  }

 private:
  const v1::AcquireJobResponse& job_;
  const BlobCache& cache_;
  SchedulerClient& client_;
  WorkerMetrics& metrics_;
  const FetchOptions& options_;
};

absl::StatusOr<std::string> PrepareDataset(const v1::Dataset& dataset, const char* field,
                                           const std::string& work_dir, const BlobCache& cache,
                                           BlobFetcher& fetcher) {
  v1::FileInfo file = dataset.file();
  if (file.name().empty()) file.set_name("data.jsonl");
  if (absl::Status st = CheckRelativeName(file.name()); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", st.message()));
  }
  absl::StatusOr<std::string> blob = fetcher.Fetch(file);
  if (!blob.ok()) return blob.status();
  absl::StatusOr<std::string> dir =
      MaterializeFileSet(cache, {file}, "", work_dir + "/datasets/" + file.sha256());
  if (!dir.ok()) return dir.status();
  return *dir + "/" + file.name();
}

}  // namespace

absl::StatusOr<JobInputs> PrepareJobInputs(const v1::AcquireJobResponse& job,
                                           const std::string& work_dir, const std::string& out_dir,
                                           const BlobCache& cache, SchedulerClient& client,
                                           WorkerMetrics& metrics, const FetchOptions& options) {
  if (job.base_model().files().empty()) {
    return absl::InvalidArgumentError("base_model: the assignment names no model files");
  }
  if (job.train_dataset().file().sha256().empty()) {
    return absl::InvalidArgumentError("train_dataset: the assignment names no file");
  }
  BlobFetcher fetcher(job, cache, client, metrics, options);
  JobInputs inputs;

  // The base model: every file, then one directory per model digest.
  std::vector<v1::FileInfo> model_files(job.base_model().files().begin(),
                                        job.base_model().files().end());
  std::string digest = job.base_model().digest();
  if (digest.empty()) {
    std::vector<std::pair<std::string, std::string>> pairs;
    for (const auto& f : model_files) pairs.emplace_back(f.name(), f.sha256());
    digest = io::Sha256OfFileSet(pairs);
  }
  if (!io::IsSha256Hex(digest)) {
    return absl::InvalidArgumentError(absl::StrCat("base_model.digest: malformed '", digest, "'"));
  }
  for (const auto& f : model_files) {
    if (absl::Status st = CheckRelativeName(f.name()); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("base_model.files: ", st.message()));
    }
    absl::StatusOr<std::string> blob = fetcher.Fetch(f);
    if (!blob.ok()) return blob.status();
  }
  absl::StatusOr<std::string> model_dir =
      MaterializeFileSet(cache, model_files, digest, work_dir + "/models/" + digest);
  if (!model_dir.ok()) {
    return absl::Status(model_dir.status().code(),
                        absl::StrCat("base_model: ", model_dir.status().message()));
  }
  inputs.model_dir = *model_dir;

  absl::StatusOr<std::string> train =
      PrepareDataset(job.train_dataset(), "train_dataset", work_dir, cache, fetcher);
  if (!train.ok()) return train.status();
  inputs.train_data = *train;
  if (job.has_eval_dataset() && !job.eval_dataset().file().sha256().empty()) {
    absl::StatusOr<std::string> eval =
        PrepareDataset(job.eval_dataset(), "eval_dataset", work_dir, cache, fetcher);
    if (!eval.ok()) return eval.status();
    inputs.eval_data = *eval;
  }

  // The resume point: out_dir/checkpoints/<set>/… and `latest` naming it.
  if (!job.checkpoint_files().empty()) {
    const std::string set =
        job.job().resume_checkpoint().empty() ? "resume" : job.job().resume_checkpoint();
    if (absl::Status st = CheckRelativeName(set); !st.ok() || set.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("job.resume_checkpoint: not a directory name '", set, "'"));
    }
    const std::string root = out_dir + "/checkpoints";
    for (const auto& f : job.checkpoint_files()) {
      if (absl::Status st = CheckRelativeName(f.name()); !st.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("checkpoint_files: ", st.message()));
      }
      absl::StatusOr<std::string> blob = fetcher.Fetch(f);
      if (!blob.ok()) return blob.status();
      if (absl::Status st = LinkOrCopy(*blob, root + "/" + set + "/" + f.name()); !st.ok()) {
        return st;
      }
    }
    if (absl::Status st = io::WriteFileAtomically(root + "/latest", set); !st.ok()) return st;
    inputs.resume = true;
  }
  return inputs;
}

}  // namespace qwha::runtime

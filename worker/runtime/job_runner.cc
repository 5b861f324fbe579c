#include "worker/runtime/job_runner.h"

#include <signal.h>

#include <cstdio>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "worker/io/atomic_file.h"
#include "worker/runtime/child_process.h"
#include "worker/runtime/child_protocol.h"
#include "worker/runtime/job_inputs.h"
#include "worker/runtime/job_uploads.h"
#include "worker/runtime/local_files.h"

namespace qwha::runtime {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kCheckpointPatience(30000);

std::string PhaseLabel(v1::Phase phase) {
  return phase == v1::PHASE_UNSPECIFIED ? "loading" : absl::AsciiStrToLower(v1::Phase_Name(phase));
}

bool IsInputError(absl::StatusCode code) {
  return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound;
}

}  // namespace

// The state of one job while it runs.
class JobRunner::Job {
 public:
  Job(JobRunner& runner, const v1::AcquireJobResponse& assignment)
      : r_(runner),
        assignment_(assignment),
        id_(assignment.job().id()),
        dir_(runner.config_.work_dir + "/jobs/" + assignment.job().id()),
        out_(dir_ + "/out"),
        uploader_(runner.client_, runner.metrics_, id_, assignment.lease_id(),
                  [this] { return r_.session_.lease_lost() || r_.stop_.load(); }) {}

  std::string Run() {
    std::string outcome = RunToEnd();
    if (!r_.config_.keep_job_dirs) io::RemoveTree(dir_).IgnoreError();
    return outcome;
  }

 private:
  void Log(const std::string& line) {
    std::cerr << "qwha-worker: job " << id_ << ": " << line << "\n";
  }

  bool Aborted() const {
    return r_.session_.lease_lost() || r_.session_.cancel_requested() || r_.stop_.load();
  }

  // Sends `progress_` now. Lease lost → MarkLeaseLost; cancel → RequestCancel.
  void Report(const std::string& log) {
    if (r_.session_.lease_lost()) return;
    v1::ReportProgressRequest request;
    request.set_job_id(id_);
    request.set_lease_id(assignment_.lease_id());
    *request.mutable_progress() = progress_;
    request.set_log(log);
    last_report_ = Clock::now();
    report_pending_ = false;
    absl::StatusOr<v1::ReportProgressResponse> response = r_.client_.ReportProgress(request);
    if (!response.ok()) {
      r_.metrics_.SchedulerError("ReportProgress");
      if (IsLeaseLost(response.status())) r_.session_.MarkLeaseLost();
      report_pending_ = IsTransient(response.status());
      return;
    }
    if (response->cancel()) r_.session_.RequestCancel();
    // Checkpoints appear while training; the last one (written when training
    // ends) still matters if evaluation fails, not once results upload.
    const bool checkpoints =
        progress_.phase() == v1::TRAINING || progress_.phase() == v1::EVALUATING;
    if (checkpoints && !Aborted()) UploadCheckpoint();
  }

  void EnterPhase(v1::Phase phase, const std::string& detail) {
    progress_.set_phase(phase);
    progress_.set_detail(detail);
    r_.metrics_.SetPhase(PhaseLabel(phase));
    const std::string line = absl::StrCat(PhaseLabel(phase), detail.empty() ? "" : ": ", detail);
    Log(line);
    Report(line);
  }

  void UploadCheckpoint() {
    absl::StatusOr<std::string> set =
        uploader_.UploadNewCheckpoint(out_ + "/checkpoints", last_checkpoint_, kCheckpointPatience);
    if (!set.ok()) {
      // Not a verdict on the lease (e.g. a set pruned locally mid-upload is
      // NotFound): heartbeats and progress reports decide that.
      Log(absl::StrCat("checkpoint upload failed (retried at the next report): ",
                       set.status().message()));
      return;
    }
    if (*set != last_checkpoint_) Log("checkpoint " + *set + " uploaded");
    last_checkpoint_ = *set;
  }

  void OnProgress(const train::Progress& p) {
    r_.metrics_.SetTraining(p);
    const v1::Progress proto = ProgressToProto(p);
    progress_.set_step(proto.step());
    progress_.set_total_steps(proto.total_steps());
    progress_.set_learning_rate(proto.learning_rate());
    progress_.set_tokens_per_second(proto.tokens_per_second());
    progress_.set_eta_seconds(proto.eta_seconds());
    progress_.set_eval_loss(proto.eval_loss());
    if (p.phase != "eval") progress_.set_loss(proto.loss());
    report_pending_ = true;
    char line[200];
    if (p.phase == "eval") {
      std::snprintf(line, sizeof(line), "step %lld/%lld eval loss %.4f",
                    static_cast<long long>(p.step), static_cast<long long>(p.total_steps),
                    p.eval_loss);
      Log(line);
    } else if (Clock::now() - last_log_ >= r_.config_.log_interval || p.step == p.total_steps) {
      last_log_ = Clock::now();
      std::snprintf(line, sizeof(line), "step %lld/%lld loss %.4f lr %.3g %.0f tok/s ETA %s",
                    static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.loss,
                    p.lr, p.tokens_per_second, train::FormatDuration(p.eta_seconds).c_str());
      Log(line);
    }
  }

  void OnEvent(const ChildEvent& e) {
    switch (e.type) {
      case ChildEvent::Type::kPhase: {
        const v1::Phase phase = RecipePhaseToProto(e.phase);
        EnterPhase(phase == v1::PHASE_UNSPECIFIED ? progress_.phase() : phase,
                   e.phase == "exporting" ? "exporting " + e.detail : e.detail);
        break;
      }
      case ChildEvent::Type::kProgress:
        OnProgress(e.progress);
        break;
      case ChildEvent::Type::kWarning:
        Log("warning: " + e.detail);
        break;
      case ChildEvent::Type::kDone:
        done_ = true;
        break;
      case ChildEvent::Type::kError:
        error_ = e;
        break;
    }
  }

  std::string RunToEnd();
  std::string RunChild(const std::vector<std::string>& argv);
  std::string Finish();
  std::string Fail(const std::string& error, bool retryable, bool cancelled);

  JobRunner& r_;
  const v1::AcquireJobResponse& assignment_;
  const std::string id_;
  const std::string dir_;
  const std::string out_;
  JobUploader uploader_;
  v1::Progress progress_;
  Clock::time_point last_report_{};
  Clock::time_point last_log_{};
  bool report_pending_ = false;
  std::string last_checkpoint_;
  bool done_ = false;
  std::optional<ChildEvent> error_;
  ExitStatus exit_;
  // The materialized input directories this job reads, kept from pruning.
  std::vector<InUseLock> in_use_;
};

std::string JobRunner::Job::RunToEnd() {
  r_.session_.BeginJob(id_, assignment_.lease_id());
  Log(absl::StrCat("assigned (lease ", assignment_.lease_id(), ", attempt ",
                   assignment_.job().attempts(),
                   assignment_.checkpoint_files().empty()
                       ? ""
                       : ", resuming from " + assignment_.job().resume_checkpoint(),
                   ")"));
  progress_.set_eta_seconds(-1);
  progress_.set_eval_loss(std::numeric_limits<double>::quiet_NaN());
  if (absl::Status st = io::RemoveTree(dir_); !st.ok()) return Fail(st.ToString(), true, false);
  if (absl::Status st = MakeDirs(out_); !st.ok()) return Fail(st.ToString(), true, false);

  EnterPhase(v1::LOADING, "fetching inputs");
  FetchOptions fetch;
  fetch.abort = [this] { return Aborted(); };
  absl::StatusOr<JobInputs> inputs = PrepareJobInputs(assignment_, r_.config_.work_dir, out_,
                                                      r_.cache_, r_.client_, r_.metrics_, fetch);
  if (!inputs.ok()) {
    if (r_.session_.lease_lost() ||
        inputs.status().code() == absl::StatusCode::kFailedPrecondition) {
      return "lost";
    }
    if (r_.session_.cancel_requested()) return Fail("cancelled while fetching inputs", false, true);
    return Fail(absl::StrCat("loading: fetching inputs: ", inputs.status().message()),
                !IsInputError(inputs.status().code()), false);
  }
  // Other workers sharing the work dir must not prune what this job reads.
  for (const std::string& dir :
       {inputs->model_dir, DirName(inputs->train_data),
        inputs->eval_data.empty() ? std::string() : DirName(inputs->eval_data)}) {
    if (dir.empty()) continue;
    absl::StatusOr<InUseLock> lock = InUseLock::Take(dir);
    if (lock.ok()) {
      in_use_.push_back(*std::move(lock));
    } else {
      Log(absl::StrCat("cannot mark ", dir, " in use: ", lock.status().message()));
    }
  }
  const std::string job_file = dir_ + "/job.binpb";
  if (absl::Status st =
          io::WriteFileAtomically(job_file, assignment_.job().spec().SerializeAsString());
      !st.ok()) {
    return Fail(absl::StrCat("loading: ", st.message()), true, false);
  }
  std::vector<std::string> argv = {r_.config_.self_exe,
                                   "run-job",
                                   "--job",
                                   job_file,
                                   "--out",
                                   out_,
                                   "--model",
                                   inputs->model_dir,
                                   "--train",
                                   inputs->train_data,
                                   "--device",
                                   r_.config_.device};
  if (!inputs->eval_data.empty()) argv.insert(argv.end(), {"--eval", inputs->eval_data});
  if (!r_.config_.cache_dir.empty()) argv.insert(argv.end(), {"--cache-dir", r_.config_.cache_dir});
  if (inputs->resume) argv.push_back("--resume");
  return RunChild(argv);
}

std::string JobRunner::Job::RunChild(const std::vector<std::string>& argv) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(argv);
  if (!child.ok()) return Fail(absl::StrCat("loading: ", child.status().message()), true, false);
  r_.session_.SetChild(child->get());        // from here a cancel or lost lease signals it directly
  std::optional<Clock::time_point> kill_at;  // set once SIGTERM went out
  std::vector<std::string> lines;
  bool open = true;
  while (open || (*child)->running()) {
    if (open) {
      lines.clear();
      open = (*child)->ReadLines(std::chrono::milliseconds(100), &lines);
      for (const std::string& line : lines) {
        absl::StatusOr<ChildEvent> event = DecodeChildEvent(line);
        if (event.ok()) OnEvent(*event);
      }
    } else if ((*child)->WaitFor(std::chrono::milliseconds(100))) {
      break;
    }
    if ((r_.session_.cancel_requested() || r_.stop_.load()) && !kill_at) {
      (*child)->Signal(SIGTERM);
      kill_at = Clock::now() + r_.config_.kill_grace;
    }
    if (r_.session_.lease_lost() || (kill_at && Clock::now() >= *kill_at)) {
      (*child)->Signal(SIGKILL);
    }
    if (report_pending_ && !r_.session_.lease_lost() &&
        Clock::now() - last_report_ >= r_.config_.progress_interval) {
      Report("");
    }
  }
  exit_ = (*child)->Wait();
  r_.session_.SetChild(nullptr);
  return Finish();
}

std::string JobRunner::Job::Finish() {
  const std::string phase = PhaseLabel(progress_.phase());
  if (r_.session_.lease_lost()) {
    Log("lease lost; the run-job process ended with " + exit_.ToString());
    return "lost";
  }
  if (r_.session_.cancel_requested()) {
    Log("cancelled (" + exit_.ToString() + ")");
    return Fail("cancelled by request", false, true);
  }
  if (r_.stop_.load() && !(exit_.success() && done_)) {
    return Fail(phase + ": the worker is shutting down", true, false);
  }
  if (error_) {
    return Fail(absl::StrCat(error_->phase.empty() ? phase : error_->phase, ": ", error_->detail),
                !IsInputError(error_->code), false);
  }
  if (!exit_.success() || !done_) {
    return Fail(absl::StrCat(phase, ": the run-job process ended with ", exit_.ToString(),
                             done_ ? "" : " without a result"),
                true, false);
  }
  if (report_pending_) Report("");
  EnterPhase(v1::UPLOADING, "uploading results");
  absl::StatusOr<std::vector<v1::FileInfo>> files =
      uploader_.UploadResults(out_, r_.config_.final_patience);
  if (!files.ok()) {
    if (r_.session_.lease_lost() || IsLeaseLost(files.status())) return "lost";
    return Fail(absl::StrCat("uploading: ", files.status().message()), true, false);
  }
  v1::CompleteJobRequest request;
  request.set_job_id(id_);
  request.set_lease_id(assignment_.lease_id());
  for (const auto& f : *files) *request.add_files() = f;
  absl::StatusOr<std::string> metrics_json = io::ReadFile(out_ + "/metrics.json");
  if (metrics_json.ok()) request.set_metrics_json(*metrics_json);
  std::string adapter_id;
  absl::Status st = uploader_.Retry(
      [&]() -> absl::Status {
        absl::StatusOr<v1::CompleteJobResponse> response = r_.client_.CompleteJob(request);
        if (response.ok()) adapter_id = response->adapter_id();
        return response.status();
      },
      "CompleteJob", r_.config_.final_patience);
  if (!st.ok()) {
    Log(absl::StrCat("CompleteJob failed: ", st.message()));
    return IsLeaseLost(st) ? "lost" : "failed";
  }
  Log(absl::StrCat("succeeded: ", files->size(), " files uploaded, adapter ", adapter_id));
  return "succeeded";
}

std::string JobRunner::Job::Fail(const std::string& error, bool retryable, bool cancelled) {
  if (!cancelled)
    Log(absl::StrCat("failed (", retryable ? "retryable" : "not retryable", "): ", error));
  v1::FailJobRequest request;
  request.set_job_id(id_);
  request.set_lease_id(assignment_.lease_id());
  request.set_error(error);
  request.set_retryable(retryable && !cancelled);
  request.set_cancelled(cancelled);
  absl::Status st = uploader_.Retry([&] { return r_.client_.FailJob(request).status(); }, "FailJob",
                                    r_.config_.final_patience);
  if (!st.ok()) {
    Log(absl::StrCat("FailJob failed: ", st.message()));
    if (IsLeaseLost(st)) return "lost";
  }
  return cancelled ? "cancelled" : "failed";
}

JobRunner::JobRunner(RunnerConfig config, SchedulerClient& client, WorkerSession& session,
                     WorkerMetrics& metrics, const std::atomic<bool>& stop)
    : config_(std::move(config)),
      client_(client),
      session_(session),
      metrics_(metrics),
      stop_(stop),
      cache_(config_.work_dir + "/blobs") {}

std::string JobRunner::Run(const v1::AcquireJobResponse& assignment) {
  std::string outcome = Job(*this, assignment).Run();
  PruneInputs();
  session_.EndJob();
  metrics_.JobEnded(outcome);
  metrics_.SetPhase("idle");
  metrics_.ClearTraining();
  std::cerr << "qwha-worker: job " << assignment.job().id() << ": " << outcome << "\n";
  return outcome;
}

void JobRunner::PruneInputs() {
  if (config_.cache_max_bytes <= 0) return;
  // Fetched inputs, and the quantized bases (<cache dir>/<model digest>/<key>).
  std::vector<std::string> roots = {config_.work_dir + "/models", config_.work_dir + "/datasets"};
  if (!config_.cache_dir.empty()) {
    for (std::string& dir : ChildDirectories(config_.cache_dir)) roots.push_back(std::move(dir));
  }
  absl::StatusOr<PruneStats> pruned =
      PruneWorkCache(cache_, roots, config_.cache_max_bytes, config_.cache_min_idle);
  if (!pruned.ok()) {
    std::cerr << "qwha-worker: pruning the input cache: " << pruned.status() << "\n";
    return;
  }
  if (pruned->removed_blobs + pruned->removed_dirs > 0) {
    std::cerr << "qwha-worker: cache over " << config_.cache_max_bytes << " bytes: removed "
              << pruned->removed_blobs << " blobs and " << pruned->removed_dirs << " directories, "
              << pruned->bytes_before << " -> " << pruned->bytes_after << " bytes\n";
  }
}

}  // namespace qwha::runtime

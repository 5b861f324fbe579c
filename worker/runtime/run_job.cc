#include "worker/runtime/run_job.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "qwha/v1/job.pb.h"
#include "worker/io/atomic_file.h"
#include "worker/pipeline/recipe.h"
#include "worker/runtime/child_protocol.h"
#include "worker/runtime/device_info.h"
#include "worker/runtime/job_options.h"

namespace qwha::runtime {
namespace {

// Writes whole lines to the event fd; callable from any thread.
class EventWriter {
 public:
  explicit EventWriter(int fd) : fd_(fd) {}

  void Write(const ChildEvent& event) {
    const std::string line = EncodeChildEvent(event) + "\n";
    std::lock_guard<std::mutex> lock(mu_);
    size_t done = 0;
    while (done < line.size()) {
      ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // the parent is gone; PR_SET_PDEATHSIG ends us
      done += static_cast<size_t>(n);
    }
  }

 private:
  std::mutex mu_;
  int fd_;
};

int ExitStatusFor(absl::StatusCode code) {
  return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ? 2 : 1;
}

int Fail(EventWriter& events, const std::string& phase, const absl::Status& status) {
  ChildEvent e;
  e.type = ChildEvent::Type::kError;
  e.phase = phase;
  e.code = status.code();
  e.detail = std::string(status.message());
  events.Write(e);
  std::cerr << "run-job: " << (phase.empty() ? "" : phase + ": ") << status.message() << "\n";
  return ExitStatusFor(status.code());
}

}  // namespace

absl::StatusOr<RunJobArgs> ParseRunJobArgs(const std::vector<std::string>& args) {
  RunJobArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    if (flag == "--resume") {
      out.resume = true;
      continue;
    }
    std::string* target = flag == "--job"         ? &out.job_file
                          : flag == "--out"       ? &out.out_dir
                          : flag == "--model"     ? &out.model_dir
                          : flag == "--train"     ? &out.train_data
                          : flag == "--eval"      ? &out.eval_data
                          : flag == "--device"    ? &out.device
                          : flag == "--cache-dir" ? &out.cache_dir
                                                  : nullptr;
    if (target == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("run-job: unknown flag '", flag, "'"));
    }
    if (i + 1 >= args.size()) {
      return absl::InvalidArgumentError(absl::StrCat("run-job: ", flag, ": missing value"));
    }
    *target = args[++i];
  }
  for (const auto& [flag, value] :
       {std::pair<const char*, const std::string*>{"--job", &out.job_file},
        {"--out", &out.out_dir},
        {"--model", &out.model_dir},
        {"--train", &out.train_data}}) {
    if (value->empty()) {
      return absl::InvalidArgumentError(absl::StrCat("run-job: ", flag, ": required"));
    }
  }
  return out;
}

int RunJob(const RunJobArgs& args, int event_fd) {
  EventWriter events(event_fd);
  absl::StatusOr<std::string> bytes = io::ReadFile(args.job_file);
  if (!bytes.ok()) return Fail(events, "loading", bytes.status());
  qwha::v1::JobSpec spec;
  if (!spec.ParseFromString(*bytes)) {
    return Fail(
        events, "loading",
        absl::InvalidArgumentError(absl::StrCat(args.job_file, ": not a binary qwha.v1.JobSpec")));
  }
  absl::StatusOr<torch::Device> device = ParseDevice(args.device);
  if (!device.ok()) return Fail(events, "loading", device.status());
  JobPaths paths;
  paths.model_dir = args.model_dir;
  paths.train_data = args.train_data;
  paths.eval_data = args.eval_data;
  paths.output_dir = args.out_dir;
  paths.cache_dir = args.cache_dir;
  paths.resume = args.resume;
  absl::StatusOr<pipeline::RecipeOptions> options = JobSpecToRecipeOptions(spec, paths, *device);
  if (!options.ok()) return Fail(events, "loading", options.status());

  std::string phase;  // written by the recipe's thread only
  auto on_phase = [&](const std::string& name, const std::string& detail) {
    phase = name;
    ChildEvent e;
    e.type = ChildEvent::Type::kPhase;
    e.phase = name;
    e.detail = detail;
    events.Write(e);
  };
  auto on_progress = [&](const train::Progress& progress) {
    ChildEvent e;
    e.type = ChildEvent::Type::kProgress;
    e.progress = progress;
    events.Write(e);
  };
  absl::StatusOr<pipeline::RecipeResult> result =
      pipeline::RunRecipe(*options, on_phase, on_progress);
  if (!result.ok()) return Fail(events, phase.empty() ? "loading" : phase, result.status());
  for (const std::string& warning : result->warnings) {
    ChildEvent e;
    e.type = ChildEvent::Type::kWarning;
    e.detail = warning;
    events.Write(e);
  }
  ChildEvent done;
  done.type = ChildEvent::Type::kDone;
  done.detail = args.out_dir;
  events.Write(done);
  return 0;
}

int RunJobMain(const std::vector<std::string>& args) {
  // The event stream gets the original stdout; fd 1 becomes stderr, so stray
  // prints from libraries cannot interleave with events.
  std::fflush(stdout);
  const int event_fd = ::dup(STDOUT_FILENO);
  if (event_fd < 0 || ::dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
    std::cerr << "run-job: cannot set up the event stream\n";
    return 1;
  }
  absl::StatusOr<RunJobArgs> parsed = ParseRunJobArgs(args);
  if (!parsed.ok()) {
    EventWriter events(event_fd);
    return Fail(events, "", parsed.status());
  }
  const int status = RunJob(*parsed, event_fd);
  ::close(event_fd);
  return status;
}

}  // namespace qwha::runtime

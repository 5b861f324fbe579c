// The run-job child: runs one job's recipe and reports on its stdout in the
// protocol of child_protocol.h. The worker starts it as
//
//   qwha-worker run-job --job DIR/job.binpb --out DIR/out --model MODEL_DIR
//       --train TRAIN.jsonl [--eval EVAL.jsonl] [--device cpu|cuda[:N]]
//       [--cache-dir DIR] [--resume]
//
// where job.binpb is a binary qwha.v1.JobSpec. Running it by hand (same
// arguments) reproduces a job without any service.
//
// Exit status: 0 success ("done" event); 2 invalid input — the job spec or
// the recipe said InvalidArgument or NotFound ("error" event); 1 any other
// failure ("error" event). Killed by a signal: no final event.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qwha::runtime {

struct RunJobArgs {
  std::string job_file;  // binary qwha.v1.JobSpec
  std::string out_dir;
  std::string model_dir;
  std::string train_data;
  std::string eval_data;  // empty: none
  std::string device = "cpu";
  std::string cache_dir;  // empty: no quantized-base cache
  bool resume = false;
};

// Parses the arguments after "run-job". InvalidArgument naming the flag for
// an unknown flag, a missing value or a missing required flag.
absl::StatusOr<RunJobArgs> ParseRunJobArgs(const std::vector<std::string>& args);

// Runs the job and writes its events to `event_fd` (one line each, written
// whole; the fd is borrowed). Returns the exit status described above.
int RunJob(const RunJobArgs& args, int event_fd);

// The "run-job" subcommand: moves stdout aside as the event stream (what else
// writes to stdout goes to stderr), parses `args` and calls RunJob.
int RunJobMain(const std::vector<std::string>& args);

}  // namespace qwha::runtime

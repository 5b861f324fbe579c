// The protocol between the worker (parent) and its run-job child: one JSON
// object per line on the child's stdout, in this order:
//
//   {"event":"phase","phase":"loading","detail":"/w/models/ab12…"}
//   {"event":"progress","phase":"train","step":3,"total_steps":100,"epoch":0,
//    "loss":2.31,"lr":0.01,"grad_norm":0.8,"tokens_per_second":1520.5,
//    "eta_seconds":41.2,"eval_loss":null}
//   {"event":"warning","detail":"cache not written: …"}
//   … then exactly one of
//   {"event":"done","detail":"<output dir>"}                         exit status 0
//   {"event":"error","phase":"training","code":"INVALID_ARGUMENT",
//    "detail":"train: …"}                                             exit status 2 or 1
//
// Phases are the recipe's names (pipeline::PhaseCallback). Non-finite numbers
// are written as null. A child killed by a signal writes no final event; the
// parent reads the exit status. Lines that are not such objects are ignored
// by the parent (a library printing to stdout cannot corrupt the stream).
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qwha/v1/job.pb.h"
#include "worker/train/progress.h"

namespace qwha::runtime {

struct ChildEvent {
  enum class Type { kPhase, kProgress, kWarning, kDone, kError };
  Type type = Type::kPhase;
  std::string phase;   // kPhase: the phase entered; kError: the phase that failed
  std::string detail;  // kPhase detail, kWarning/kError message, kDone output dir
  absl::StatusCode code = absl::StatusCode::kOk;  // kError only
  train::Progress progress;                       // kProgress only
};

// One line of JSON, without the trailing newline.
std::string EncodeChildEvent(const ChildEvent& event);

// Parses one line (a trailing '\r' or '\n' is ignored). InvalidArgument for
// anything that is not an event object.
absl::StatusOr<ChildEvent> DecodeChildEvent(std::string_view line);

// The job phase of a recipe phase name: "loading" → LOADING, …,
// "evaluating" → EVALUATING; "exporting" (writing the outputs that are then
// uploaded) → UPLOADING. PHASE_UNSPECIFIED for an unknown name.
qwha::v1::Phase RecipePhaseToProto(const std::string& phase);

// The proto form of a training progress report (phase TRAINING; an unknown
// ETA becomes -1; detail "eval" after an evaluation).
qwha::v1::Progress ProgressToProto(const train::Progress& progress);

// "INVALID_ARGUMENT" etc. and back; unknown names give kUnknown.
std::string StatusCodeName(absl::StatusCode code);
absl::StatusCode StatusCodeFromName(std::string_view name);

}  // namespace qwha::runtime

// How `qwhactl watch` shows a job's events.
//   terminal:  state changes and log lines scroll; one progress line (phase,
//              bar, step/total, loss, lr, tok/s, ETA) is redrawn in place.
//   plain:     one line per state change and log line; progress lines at a
//              phase change, at the last step, and otherwise at most one per
//              10 s of event time — suitable for log files and CI.
//   json:      every event as one line of protobuf JSON.
//
// Thread safety: not thread-safe; feed events from one thread.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "qwha/v1/job.pb.h"

namespace qwha::client {

class WatchView {
 public:
  enum class Mode { kTerminal, kPlain, kJson };

  // Writes to `out`, which must outlive the view. `width`: terminal columns.
  WatchView(std::ostream& out, Mode mode, int width);

  void OnEvent(const qwha::v1::JobEvent& event);
  // Removes the progress line (terminal) and prints the outcome of `job`:
  // "Job j-1 SUCCEEDED: adapter a-2", "... FAILED: <error>", ...
  void Finish(const qwha::v1::Job& job);

 private:
  void PrintLine(const std::string& line);  // above the progress line
  void DrawProgress();

  std::ostream& out_;
  Mode mode_;
  int width_;
  qwha::v1::Progress progress_;
  bool progress_shown_ = false;  // terminal: a progress line is on screen
  qwha::v1::JobState state_ = qwha::v1::JOB_STATE_UNSPECIFIED;
  qwha::v1::Phase printed_phase_ = qwha::v1::PHASE_UNSPECIFIED;  // plain
  int64_t printed_at_seconds_ = 0;  // plain: event time of the last progress line
};

// Exit code of `qwhactl watch` for a finished job: 0 SUCCEEDED, 1 FAILED,
// 2 CANCELLED; 1 for anything else.
int ExitCodeForJob(const qwha::v1::Job& job);

}  // namespace qwha::client

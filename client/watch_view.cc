#include "client/watch_view.h"

#include "absl/strings/str_cat.h"
#include "client/render.h"

namespace qwha::client {
namespace {

constexpr int64_t kPlainProgressEverySeconds = 10;

std::string TimeOf(const qwha::v1::JobEvent& event) {
  std::string time = LocalTime(event.time());
  return time.size() > 11 ? time.substr(11) : time;  // HH:MM:SS
}

std::string StateLine(const qwha::v1::JobEvent& event) {
  const qwha::v1::Job& job = event.job();
  std::string line = absl::StrCat(TimeOf(event), "  ", StateName(job.state()));
  if (job.state() == qwha::v1::ASSIGNED || job.state() == qwha::v1::RUNNING) {
    if (!job.worker_id().empty()) absl::StrAppend(&line, "  worker ", job.worker_id());
    if (job.attempts() > 1) absl::StrAppend(&line, "  attempt ", job.attempts());
  }
  if (!job.error().empty()) absl::StrAppend(&line, "  ", job.error());
  if (!event.message().empty()) absl::StrAppend(&line, "  ", event.message());
  return line;
}

}  // namespace

WatchView::WatchView(std::ostream& out, Mode mode, int width)
    : out_(out), mode_(mode), width_(width > 0 ? width : 80) {}

void WatchView::PrintLine(const std::string& line) {
  if (mode_ == Mode::kTerminal && progress_shown_) out_ << "\r\x1b[K";
  out_ << line << "\n";
  if (mode_ == Mode::kTerminal && progress_shown_) DrawProgress();
  out_.flush();
}

void WatchView::DrawProgress() {
  out_ << "\r\x1b[K" << ProgressLine(progress_, width_ - 1);
  out_.flush();
  progress_shown_ = true;
}

void WatchView::OnEvent(const qwha::v1::JobEvent& event) {
  if (mode_ == Mode::kJson) {
    auto json = ToJson(event, /*pretty=*/false);
    out_ << (json.ok() ? *json : std::string(json.status().message())) << "\n";
    out_.flush();
    return;
  }
  switch (event.type()) {
    case qwha::v1::JobEvent::STATE: {
      qwha::v1::JobState state = event.job().state();
      if (state == state_ && event.message().empty()) break;  // e.g. the first event again
      state_ = state;
      progress_ = event.job().progress();
      bool running = state == qwha::v1::RUNNING;
      if (mode_ == Mode::kTerminal && progress_shown_ && !running) {
        out_ << "\r\x1b[K";
        progress_shown_ = false;
      }
      PrintLine(StateLine(event));
      if (mode_ == Mode::kTerminal && running && !progress_shown_) DrawProgress();
      break;
    }
    case qwha::v1::JobEvent::PROGRESS: {
      progress_ = event.job().progress();
      if (mode_ == Mode::kTerminal) {
        DrawProgress();
        break;
      }
      const int64_t now = event.time().seconds();
      const bool last_step =
          progress_.total_steps() > 0 && progress_.step() >= progress_.total_steps();
      if (progress_.phase() != printed_phase_ || last_step || now == 0 ||
          now - printed_at_seconds_ >= kPlainProgressEverySeconds) {
        printed_phase_ = progress_.phase();
        printed_at_seconds_ = now;
        PrintLine(absl::StrCat(TimeOf(event), "  ", ProgressLine(progress_, 200)));
      }
      break;
    }
    case qwha::v1::JobEvent::LOG:
      PrintLine(absl::StrCat(TimeOf(event), "  ", event.message()));
      break;
    default:
      break;
  }
}

void WatchView::Finish(const qwha::v1::Job& job) {
  if (mode_ == Mode::kJson) return;
  if (mode_ == Mode::kTerminal && progress_shown_) {
    out_ << "\r\x1b[K";
    progress_shown_ = false;
  }
  std::string line = absl::StrCat("Job ", job.id(), " ", StateName(job.state()));
  if (job.state() == qwha::v1::SUCCEEDED && !job.adapter_id().empty()) {
    absl::StrAppend(&line, ": adapter ", job.adapter_id());
  } else if (!job.error().empty()) {
    absl::StrAppend(&line, ": ", job.error());
  }
  out_ << line << "\n";
  out_.flush();
}

int ExitCodeForJob(const qwha::v1::Job& job) {
  switch (job.state()) {
    case qwha::v1::SUCCEEDED:
      return 0;
    case qwha::v1::CANCELLED:
      return 2;
    default:
      return 1;
  }
}

}  // namespace qwha::client

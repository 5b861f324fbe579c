#include "client/render.h"

#include <time.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"

namespace qwha::client {

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) {
    widths[c] = headers_[c].size();
    for (const auto& row : rows_) widths[c] = std::max(widths[c], row[c].size());
  }
  auto print_row = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t c = 0; c < cells.size(); ++c) {
      absl::StrAppend(&line, cells[c]);
      if (c + 1 < cells.size()) line.append(widths[c] + 2 - cells[c].size(), ' ');
    }
    out << line << "\n";
  };
  print_row(headers_);
  for (const auto& row : rows_) print_row(row);
}

std::string HumanBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes);
  int unit = -1;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat(value < 10 ? "%.1f %s" : "%.0f %s", value, units[unit]);
}

std::string HumanDuration(double seconds) {
  if (!(seconds >= 0) || std::isinf(seconds)) return "?";
  int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s % 86400 / 3600);
}

std::string HumanCount(double value) {
  if (!std::isfinite(value)) return "?";
  if (std::fabs(value) < 1000) return absl::StrFormat("%.0f", value);
  if (std::fabs(value) < 1e6) return absl::StrFormat("%.1fk", value / 1e3);
  if (std::fabs(value) < 1e9) return absl::StrFormat("%.1fM", value / 1e6);
  return absl::StrFormat("%.1fG", value / 1e9);
}

std::string Age(const google::protobuf::Timestamp& time,
                std::chrono::system_clock::time_point now) {
  if (time.seconds() == 0 && time.nanos() == 0) return "-";
  int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  int64_t s = std::max<int64_t>(0, now_s - time.seconds());
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m");
  if (s < 86400) return absl::StrCat(s / 3600, "h");
  return absl::StrCat(s / 86400, "d");
}

std::string LocalTime(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0 && time.nanos() == 0) return "-";
  time_t seconds = static_cast<time_t>(time.seconds());
  struct tm local;
  localtime_r(&seconds, &local);
  char text[32];
  strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S", &local);
  return text;
}

std::string StateName(qwha::v1::JobState state) {
  const std::string& name = qwha::v1::JobState_Name(state);
  return name.empty() ? absl::StrCat("STATE_", static_cast<int>(state)) : name;
}

std::string PhaseName(qwha::v1::Phase phase) {
  if (phase == qwha::v1::PHASE_UNSPECIFIED) return "";
  const std::string& name = qwha::v1::Phase_Name(phase);
  return name.empty() ? absl::StrCat("PHASE_", static_cast<int>(phase)) : name;
}

bool ParseState(const std::string& text, qwha::v1::JobState* state) {
  return qwha::v1::JobState_Parse(absl::AsciiStrToUpper(text), state) &&
         *state != qwha::v1::JOB_STATE_UNSPECIFIED;
}

std::string ProgressSummary(const qwha::v1::Job& job) {
  if (job.state() != qwha::v1::RUNNING) return "";
  const qwha::v1::Progress& p = job.progress();
  std::string summary = PhaseName(p.phase());
  if (p.phase() == qwha::v1::TRAINING && p.total_steps() > 0) {
    absl::StrAppend(&summary, " ", p.step(), "/", p.total_steps());
  }
  return summary;
}

std::string ProgressLine(const qwha::v1::Progress& progress, int width) {
  width = std::max(width, 40);
  std::string phase = PhaseName(progress.phase());
  if (phase.empty()) phase = "STARTING";
  if (progress.total_steps() <= 0) {
    std::string line =
        progress.detail().empty() ? phase : absl::StrCat(phase, "  ", progress.detail());
    return line.substr(0, static_cast<size_t>(width));
  }
  // The numbers first; the bar takes the room that is left (10..40 columns).
  std::string numbers = absl::StrCat(progress.step(), "/", progress.total_steps());
  if (progress.phase() == qwha::v1::TRAINING || progress.loss() != 0) {
    absl::StrAppend(&numbers, absl::StrFormat("  loss %.4f", progress.loss()));
  }
  if (std::isfinite(progress.eval_loss()) && progress.eval_loss() != 0) {
    absl::StrAppend(&numbers, absl::StrFormat("  eval %.4f", progress.eval_loss()));
  }
  if (progress.learning_rate() != 0) {
    absl::StrAppend(&numbers, absl::StrFormat("  lr %.2e", progress.learning_rate()));
  }
  if (progress.tokens_per_second() > 0) {
    absl::StrAppend(&numbers, "  ", HumanCount(progress.tokens_per_second()), " tok/s");
  }
  absl::StrAppend(&numbers, "  ETA ", HumanDuration(progress.eta_seconds()));
  int room = width - static_cast<int>(phase.size() + numbers.size()) - 4;
  if (room < 10) return absl::StrCat(phase, " ", numbers).substr(0, static_cast<size_t>(width));
  int bar_width = std::min(room, 40);
  double fraction = std::clamp(
      static_cast<double>(progress.step()) / static_cast<double>(progress.total_steps()), 0.0, 1.0);
  int filled = static_cast<int>(fraction * bar_width);
  std::string bar(static_cast<size_t>(filled), '=');
  if (filled < bar_width) {
    bar += '>';
    bar.append(static_cast<size_t>(bar_width - filled - 1), ' ');
  }
  return absl::StrCat(phase, " [", bar, "] ", numbers);
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot print ", message.GetTypeName(), " as JSON: ", status.ToString()));
  }
  return json;
}

}  // namespace qwha::client

namespace qwha::client {

void PrintFields(std::ostream& out,
                 const std::vector<std::pair<std::string, std::string>>& fields) {
  size_t width = 0;
  for (const auto& [key, value] : fields) {
    if (!value.empty()) width = std::max(width, key.size());
  }
  for (const auto& [key, value] : fields) {
    if (value.empty()) continue;
    out << key << ":" << std::string(width + 2 - key.size(), ' ') << value << "\n";
  }
}

}  // namespace qwha::client

// Text output of qwhactl: aligned tables, human-readable numbers and times,
// one-line job progress, and protobuf JSON.
//
// Thread safety: pure functions; a Table is not shared between threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "qwha/v1/job.pb.h"

namespace qwha::client {

// Columns padded to their widest cell, two spaces apart.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);
  void AddRow(std::vector<std::string> cells);  // missing cells print empty
  size_t rows() const { return rows_.size(); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "512 B", "1.5 KiB", "3.2 GiB".
std::string HumanBytes(int64_t bytes);
// "45s", "2m05s", "1h02m", "3d04h"; "?" for negative (unknown).
std::string HumanDuration(double seconds);
// "950", "3.4k", "1.2M".
std::string HumanCount(double value);
// Time since `time` in the largest unit: "42s", "5m", "3h", "2d"; "-" if unset.
std::string Age(const google::protobuf::Timestamp& time, std::chrono::system_clock::time_point now);
// "2024-05-01 12:00:03" in local time; "-" if unset.
std::string LocalTime(const google::protobuf::Timestamp& time);

// "QUEUED", "RUNNING", ... (the enum value names).
std::string StateName(qwha::v1::JobState state);
std::string PhaseName(qwha::v1::Phase phase);
// Parses a state name, case-insensitively ("running", "SUCCEEDED").
bool ParseState(const std::string& text, qwha::v1::JobState* state);
// A short progress cell for listings: "TRAINING 40/100", "QUANTIZING", "".
std::string ProgressSummary(const qwha::v1::Job& job);

// One progress line of at most `width` columns (≥ 40):
// "TRAINING [=====>    ] 120/200 loss 1.2345 lr 1.00e-02 3.4k tok/s ETA 2m05s".
// Without total steps, the phase and its detail.
std::string ProgressLine(const qwha::v1::Progress& progress, int width);

// The message as protobuf JSON with the .proto field names (snake_case, as
// in job files) and default values printed; indented when `pretty`.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message, bool pretty);

}  // namespace qwha::client

namespace qwha::client {

// Prints "Key:  value" lines with the values aligned; pairs with an empty
// value are skipped.
void PrintFields(std::ostream& out, const std::vector<std::pair<std::string, std::string>>& fields);

}  // namespace qwha::client

// Learning-rate schedules: linear warmup, then constant, linear decay or
// cosine decay to min_lr_ratio · lr.
//
// Steps count optimizer updates from 1: LearningRate(s) is the rate of the
// s-th update. With W = warmup_steps and T = total_steps:
//
//   s ≤ W:  lr · s / W                                      (linear warmup)
//   s > W:  p = min(1, (s − W) / (T − W)),  r = min_lr_ratio
//           constant:  lr
//           linear:    lr · (1 − (1 − r) · p)
//           cosine:    lr · (r + (1 − r) · (1 + cos(π p)) / 2)
//
// so the last warmup update runs at the full rate and update T at
// r · lr (decays reach their floor exactly at T and stay there). s ≤ 0 gives 0.
//
// Thread safety: immutable after Create; LearningRate may be called
// concurrently.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::train {

enum class ScheduleType { kConstant, kLinear, kCosine };

// Parses "constant", "linear", "cosine"; InvalidArgument naming the value.
absl::StatusOr<ScheduleType> ParseScheduleType(const std::string& name);
const char* ScheduleTypeName(ScheduleType type);

// The shape of the schedule; the peak rate and the horizon come from the run.
struct ScheduleOptions {
  ScheduleType type = ScheduleType::kCosine;
  int64_t warmup_steps = 0;  // W, in [0, total_steps]
  double min_lr_ratio = 0;   // r in [0, 1]; ignored by kConstant
};

class LearningRateSchedule {
 public:
  // The schedule of peak rate `lr` (finite, >= 0) over `total_steps` (T >= 1)
  // updates. InvalidArgument naming the field otherwise.
  static absl::StatusOr<LearningRateSchedule> Create(const ScheduleOptions& options, double lr,
                                                     int64_t total_steps);

  // The rate of update `step` (1-based), as in the header comment.
  double LearningRate(int64_t step) const;

  const ScheduleOptions& options() const { return options_; }
  double lr() const { return lr_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  LearningRateSchedule(const ScheduleOptions& options, double lr, int64_t total_steps)
      : options_(options), lr_(lr), total_steps_(total_steps) {}

  ScheduleOptions options_;
  double lr_;
  int64_t total_steps_;
};

}  // namespace qwha::train

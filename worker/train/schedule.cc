#include "worker/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace qwha::train {

absl::StatusOr<ScheduleType> ParseScheduleType(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "constant") return ScheduleType::kConstant;
  if (n == "linear") return ScheduleType::kLinear;
  if (n == "cosine") return ScheduleType::kCosine;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown schedule \"", name, "\" (expected constant, linear or cosine)"));
}

const char* ScheduleTypeName(ScheduleType type) {
  switch (type) {
    case ScheduleType::kConstant:
      return "constant";
    case ScheduleType::kLinear:
      return "linear";
    case ScheduleType::kCosine:
      return "cosine";
  }
  return "unknown";
}

absl::StatusOr<LearningRateSchedule> LearningRateSchedule::Create(const ScheduleOptions& o,
                                                                  double lr, int64_t total_steps) {
  if (!(lr >= 0) || !std::isfinite(lr)) {
    return absl::InvalidArgumentError(absl::StrCat("lr must be finite and >= 0, got ", lr));
  }
  if (total_steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat("total steps must be >= 1, got ", total_steps));
  }
  if (o.warmup_steps < 0 || o.warmup_steps > total_steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "warmup_steps must be in [0, total steps = ", total_steps, "], got ", o.warmup_steps));
  }
  if (!(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_lr_ratio must be in [0, 1], got ", o.min_lr_ratio));
  }
  return LearningRateSchedule(o, lr, total_steps);
}

double LearningRateSchedule::LearningRate(int64_t step) const {
  const ScheduleOptions& o = options_;
  if (step <= 0) return 0.0;
  if (step <= o.warmup_steps) {
    return lr_ * static_cast<double>(step) / static_cast<double>(o.warmup_steps);
  }
  if (o.type == ScheduleType::kConstant) return lr_;
  const int64_t decay_steps = total_steps_ - o.warmup_steps;
  const double progress = decay_steps <= 0
                              ? 1.0
                              : std::min(1.0, static_cast<double>(step - o.warmup_steps) /
                                                  static_cast<double>(decay_steps));
  const double r = o.min_lr_ratio;
  if (o.type == ScheduleType::kLinear) return lr_ * (1.0 - (1.0 - r) * progress);
  return lr_ * (r + (1.0 - r) * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace qwha::train

#include "worker/train/schedule.h"

#include <gtest/gtest.h>

#include <cmath>

namespace qwha::train {
namespace {

LearningRateSchedule Make(ScheduleType type, int64_t warmup, double min_ratio, double lr,
                          int64_t total) {
  ScheduleOptions o;
  o.type = type;
  o.warmup_steps = warmup;
  o.min_lr_ratio = min_ratio;
  auto s = LearningRateSchedule::Create(o, lr, total);
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

TEST(ScheduleTest, LinearWarmupThenCosine) {
  // lr 0.5, W = 2, T = 10, floor 0.1 · lr.
  const LearningRateSchedule s = Make(ScheduleType::kCosine, 2, 0.1, 0.5, 10);
  EXPECT_EQ(s.LearningRate(0), 0.0);
  EXPECT_EQ(s.LearningRate(-3), 0.0);
  EXPECT_DOUBLE_EQ(s.LearningRate(1), 0.25);
  EXPECT_DOUBLE_EQ(s.LearningRate(2), 0.5);
  // p = 1/8: 0.5 · (0.1 + 0.9 · (1 + cos(π/8)) / 2), cos(π/8) = 0.92387953251128674
  EXPECT_DOUBLE_EQ(s.LearningRate(3), 0.5 * (0.1 + 0.45 * 1.92387953251128674));
  EXPECT_NEAR(s.LearningRate(6), 0.275, 1e-15);  // p = 1/2
  // p = 3/4: cos(3π/4) = −√2/2
  EXPECT_NEAR(s.LearningRate(8), 0.5 * (0.1 + 0.45 * (1 - 0.70710678118654752)), 1e-15);
  EXPECT_DOUBLE_EQ(s.LearningRate(10), 0.05);
  EXPECT_DOUBLE_EQ(s.LearningRate(11), 0.05);  // stays at the floor
  EXPECT_DOUBLE_EQ(s.LearningRate(1000), 0.05);
  // Monotone decay after warmup.
  for (int64_t t = 3; t <= 10; ++t) EXPECT_LT(s.LearningRate(t), s.LearningRate(t - 1)) << t;
}

TEST(ScheduleTest, LinearDecay) {
  const LearningRateSchedule s = Make(ScheduleType::kLinear, 2, 0.1, 0.5, 10);
  EXPECT_DOUBLE_EQ(s.LearningRate(1), 0.25);
  EXPECT_DOUBLE_EQ(s.LearningRate(2), 0.5);
  EXPECT_DOUBLE_EQ(s.LearningRate(4), 0.3875);  // 0.5 · (1 − 0.9 · 1/4)
  EXPECT_DOUBLE_EQ(s.LearningRate(6), 0.275);   // 0.5 · (1 − 0.9 · 1/2)
  EXPECT_DOUBLE_EQ(s.LearningRate(10), 0.05);
  EXPECT_DOUBLE_EQ(s.LearningRate(20), 0.05);
  // To zero without warmup: T = 4 → 3/4, 1/2, 1/4, 0 of lr.
  const LearningRateSchedule z = Make(ScheduleType::kLinear, 0, 0.0, 2.0, 4);
  EXPECT_DOUBLE_EQ(z.LearningRate(1), 1.5);
  EXPECT_DOUBLE_EQ(z.LearningRate(2), 1.0);
  EXPECT_DOUBLE_EQ(z.LearningRate(3), 0.5);
  EXPECT_DOUBLE_EQ(z.LearningRate(4), 0.0);
}

TEST(ScheduleTest, ConstantWithWarmup) {
  const LearningRateSchedule s = Make(ScheduleType::kConstant, 4, 0.5, 1e-3, 10);
  EXPECT_DOUBLE_EQ(s.LearningRate(1), 2.5e-4);
  EXPECT_DOUBLE_EQ(s.LearningRate(3), 7.5e-4);
  EXPECT_DOUBLE_EQ(s.LearningRate(4), 1e-3);
  EXPECT_DOUBLE_EQ(s.LearningRate(5), 1e-3);
  EXPECT_DOUBLE_EQ(s.LearningRate(10), 1e-3);  // min_lr_ratio is ignored
  EXPECT_DOUBLE_EQ(s.LearningRate(50), 1e-3);
}

TEST(ScheduleTest, EdgeCases) {
  // Cosine without warmup over one step: the single update is at the floor.
  EXPECT_DOUBLE_EQ(Make(ScheduleType::kCosine, 0, 0.2, 1.0, 1).LearningRate(1), 0.2);
  // Warmup over the whole run: the last update has the full rate.
  const LearningRateSchedule w = Make(ScheduleType::kCosine, 5, 0.0, 1.0, 5);
  EXPECT_DOUBLE_EQ(w.LearningRate(5), 1.0);
  EXPECT_DOUBLE_EQ(w.LearningRate(6), 0.0);
  EXPECT_EQ(w.lr(), 1.0);
  EXPECT_EQ(w.total_steps(), 5);
}

TEST(ScheduleTest, CreateValidates) {
  ScheduleOptions o;
  EXPECT_EQ(LearningRateSchedule::Create(o, -1, 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(LearningRateSchedule::Create(o, std::nan(""), 10).ok());
  EXPECT_FALSE(LearningRateSchedule::Create(o, 1e-3, 0).ok());
  o.warmup_steps = 11;
  EXPECT_FALSE(LearningRateSchedule::Create(o, 1e-3, 10).ok());
  o.warmup_steps = -1;
  EXPECT_FALSE(LearningRateSchedule::Create(o, 1e-3, 10).ok());
  o.warmup_steps = 0;
  o.min_lr_ratio = 1.5;
  auto bad = LearningRateSchedule::Create(o, 1e-3, 10);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("min_lr_ratio"), std::string::npos);
}

TEST(ScheduleTest, ParsesNames) {
  for (ScheduleType t : {ScheduleType::kConstant, ScheduleType::kLinear, ScheduleType::kCosine}) {
    auto parsed = ParseScheduleType(ScheduleTypeName(t));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_EQ(*ParseScheduleType("Cosine"), ScheduleType::kCosine);
  EXPECT_EQ(ParseScheduleType("step").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qwha::train

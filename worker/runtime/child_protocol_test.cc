#include "worker/runtime/child_protocol.h"

#include <gtest/gtest.h>

#include <cmath>

namespace qwha::runtime {
namespace {

TEST(ChildProtocolTest, ProgressRoundTripsWithNonFiniteValuesAsNull) {
  ChildEvent e;
  e.type = ChildEvent::Type::kProgress;
  e.progress.phase = "train";
  e.progress.step = 7;
  e.progress.total_steps = 20;
  e.progress.epoch = 1;
  e.progress.loss = 2.5;
  e.progress.lr = 1e-3;
  e.progress.grad_norm = 0.75;
  e.progress.tokens_per_second = 1234.5;
  // eta and eval_loss stay NaN
  const std::string line = EncodeChildEvent(e);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_NE(line.find("\"eval_loss\":null"), std::string::npos) << line;
  auto d = DecodeChildEvent(line + "\n");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->type, ChildEvent::Type::kProgress);
  EXPECT_EQ(d->progress.phase, "train");
  EXPECT_EQ(d->progress.step, 7);
  EXPECT_EQ(d->progress.total_steps, 20);
  EXPECT_EQ(d->progress.epoch, 1);
  EXPECT_DOUBLE_EQ(d->progress.loss, 2.5);
  EXPECT_DOUBLE_EQ(d->progress.lr, 1e-3);
  EXPECT_DOUBLE_EQ(d->progress.grad_norm, 0.75);
  EXPECT_DOUBLE_EQ(d->progress.tokens_per_second, 1234.5);
  EXPECT_TRUE(std::isnan(d->progress.eta_seconds));
  EXPECT_TRUE(std::isnan(d->progress.eval_loss));

  v1::Progress p = ProgressToProto(d->progress);
  EXPECT_EQ(p.phase(), v1::TRAINING);
  EXPECT_EQ(p.step(), 7);
  EXPECT_EQ(p.eta_seconds(), -1);
  EXPECT_TRUE(std::isnan(p.eval_loss()));
}

TEST(ChildProtocolTest, PhaseWarningDoneAndErrorRoundTrip) {
  ChildEvent phase{ChildEvent::Type::kPhase, "quantizing", "2-bit rtn"};
  auto d = DecodeChildEvent(EncodeChildEvent(phase));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->type, ChildEvent::Type::kPhase);
  EXPECT_EQ(d->phase, "quantizing");
  EXPECT_EQ(d->detail, "2-bit rtn");

  ChildEvent error{ChildEvent::Type::kError, "training", "train: step 3: \"bad\"\nline",
                   absl::StatusCode::kInvalidArgument};
  d = DecodeChildEvent(EncodeChildEvent(error));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->type, ChildEvent::Type::kError);
  EXPECT_EQ(d->phase, "training");
  EXPECT_EQ(d->detail, error.detail);
  EXPECT_EQ(d->code, absl::StatusCode::kInvalidArgument);

  for (auto type : {ChildEvent::Type::kWarning, ChildEvent::Type::kDone}) {
    ChildEvent e{type, "", "text"};
    d = DecodeChildEvent(EncodeChildEvent(e));
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->type, type);
    EXPECT_EQ(d->detail, "text");
  }
}

TEST(ChildProtocolTest, RejectsLinesThatAreNotEvents) {
  for (const char* line : {"", "hello", "[1,2]", "{\"event\":\"bogus\"}", "{\"x\":1}", "{"}) {
    EXPECT_FALSE(DecodeChildEvent(line).ok()) << line;
  }
  // An error without a known code still decodes, as Unknown.
  auto d = DecodeChildEvent(R"({"event":"error","code":"WHAT","detail":"x"})");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->code, absl::StatusCode::kUnknown);
}

TEST(ChildProtocolTest, RecipePhasesMapToJobPhases) {
  EXPECT_EQ(RecipePhaseToProto("loading"), v1::LOADING);
  EXPECT_EQ(RecipePhaseToProto("calibrating"), v1::CALIBRATING);
  EXPECT_EQ(RecipePhaseToProto("quantizing"), v1::QUANTIZING);
  EXPECT_EQ(RecipePhaseToProto("initializing"), v1::INITIALIZING);
  EXPECT_EQ(RecipePhaseToProto("training"), v1::TRAINING);
  EXPECT_EQ(RecipePhaseToProto("evaluating"), v1::EVALUATING);
  EXPECT_EQ(RecipePhaseToProto("exporting"), v1::UPLOADING);
  EXPECT_EQ(RecipePhaseToProto("dancing"), v1::PHASE_UNSPECIFIED);
  EXPECT_EQ(StatusCodeFromName(StatusCodeName(absl::StatusCode::kNotFound)),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace qwha::runtime

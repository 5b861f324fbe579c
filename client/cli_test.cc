// qwhactl end to end against the in-process fake scheduler: what is sent,
// what is printed, and the exit codes.
#include "client/cli.h"

#include <sys/stat.h>

#include <cstdlib>
#include <sstream>

#include "client/fake_scheduler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/io/atomic_file.h"

namespace qwha::client {
namespace {

using qwha::v1::JobEvent;
using ::testing::HasSubstr;
using testing::MakeEvent;
using ::testing::Not;

struct CliRun {
  int code;
  std::string out;
  std::string err;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_TRUE(io::RemoveTree(dir_).ok());
    ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
    environment_.env["QWHA_ADDRESS"] = server_.address();
    environment_.env["HOME"] = dir_;  // no config file
  }
  CliRun Qwhactl(std::vector<std::string> args) {
    std::ostringstream out, err;
    int code = RunQwhactl(args, environment_, out, err);
    return {code, out.str(), err.str()};
  }
  // A job that runs two training steps and ends in `final_state`.
  void ScriptJob(const std::string& id, qwha::v1::JobState final_state) {
    server_.jobs.SetEvents(id, {MakeEvent(id, 1, JobEvent::STATE, qwha::v1::QUEUED),
                                MakeEvent(id, 2, JobEvent::STATE, qwha::v1::RUNNING),
                                MakeEvent(id, 3, JobEvent::PROGRESS, qwha::v1::RUNNING, 1, 2),
                                MakeEvent(id, 4, JobEvent::PROGRESS, qwha::v1::RUNNING, 2, 2),
                                MakeEvent(id, 5, JobEvent::STATE, final_state)});
  }

  testing::FakeScheduler server_;
  CliEnvironment environment_;
  std::string dir_;
};

TEST_F(CliTest, SubmitMergesFileAndFlagsFlagsWinning) {
  const std::string path = dir_ + "/job.yaml";
  ASSERT_TRUE(io::WriteFileAtomically(path,
                                      "base_model_id: m-file\n"
                                      "train_dataset_id: d-file\n"
                                      "quantization: {bits: 4, method: gptq}\n"
                                      "training: {max_steps: 10, warmup_steps: 3}\n"
                                      "labels: {team: nlp, run: a}\n")
                  .ok());
  environment_.env["QWHA_TOKEN"] = "t0k";
  CliRun run = Qwhactl({"submit",
                        "--file",
                        path,
                        "--bits",
                        "2",
                        "--max-steps",
                        "500",
                        "--lr",
                        "0.02",
                        "--target-modules",
                        "q_proj, v_proj",
                        "--label",
                        "run=b",
                        "--priority",
                        "-3",
                        "--name",
                        "exp",
                        "--idempotency-key",
                        "k-1",
                        "--load-on-inference-servers"});
  ASSERT_EQ(run.code, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("Submitted job j-1 (QUEUED)"));
  ASSERT_EQ(server_.jobs.submitted.size(), 1u);
  const auto& request = server_.jobs.submitted[0];
  const auto& spec = request.spec();
  EXPECT_EQ(request.idempotency_key(), "k-1");
  EXPECT_EQ(spec.base_model_id(), "m-file");
  EXPECT_EQ(spec.quantization().bits(), 2);         // flag
  EXPECT_EQ(spec.quantization().method(), "gptq");  // file
  EXPECT_EQ(spec.training().max_steps(), 500);      // flag
  EXPECT_EQ(spec.training().warmup_steps(), 3);     // file
  EXPECT_DOUBLE_EQ(spec.training().learning_rate(), 0.02);
  ASSERT_EQ(spec.adapter().target_modules_size(), 2);
  EXPECT_EQ(spec.adapter().target_modules(1), "v_proj");
  EXPECT_EQ(spec.labels().at("team"), "nlp");
  EXPECT_EQ(spec.labels().at("run"), "b");
  EXPECT_EQ(spec.priority(), -3);
  EXPECT_EQ(spec.name(), "exp");
  EXPECT_TRUE(spec.load_on_inference_servers());
}

TEST_F(CliTest, ServerRejectionExitsFive) {
  CliRun run = Qwhactl({"submit", "--model", "missing", "--train-dataset", "d"});
  EXPECT_EQ(run.code, kExitInvalid);
  EXPECT_THAT(run.err, HasSubstr("spec.base_model_id: no model \"missing\""));
}

TEST_F(CliTest, UnknownIdExitsFour) {
  CliRun run = Qwhactl({"get", "j-404"});
  EXPECT_EQ(run.code, kExitNotFound);
  EXPECT_THAT(run.err, HasSubstr("job j-404"));
  EXPECT_EQ(Qwhactl({"adapters", "get", "a-404"}).code, kExitNotFound);
}

TEST_F(CliTest, UnreachableSchedulerExitsSixNamingTheAddress) {
  CliRun run = Qwhactl({"--address", "127.0.0.1:1", "list"});
  EXPECT_EQ(run.code, kExitUnavailable);
  EXPECT_THAT(run.err, HasSubstr("cannot reach the scheduler at 127.0.0.1:1 (from --address)"));
}

TEST_F(CliTest, WatchExitCodesFollowTheOutcome) {
  ScriptJob("j-ok", qwha::v1::SUCCEEDED);
  ScriptJob("j-bad", qwha::v1::FAILED);
  ScriptJob("j-stop", qwha::v1::CANCELLED);
  CliRun ok = Qwhactl({"watch", "j-ok"});
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("RUNNING"));
  EXPECT_THAT(ok.out, HasSubstr("TRAINING ["));
  EXPECT_THAT(ok.out, HasSubstr("2/2"));
  EXPECT_THAT(ok.out, HasSubstr("Job j-ok SUCCEEDED: adapter a-1"));
  EXPECT_THAT(ok.out, Not(HasSubstr("\x1b[K")));  // plain lines when not a terminal
  CliRun bad = Qwhactl({"watch", "j-bad"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_THAT(bad.out, HasSubstr("Job j-bad FAILED: CUDA out of memory"));
  EXPECT_EQ(Qwhactl({"watch", "j-stop"}).code, 2);
  EXPECT_EQ(Qwhactl({"watch", "j-404"}).code, kExitNotFound);
}

TEST_F(CliTest, WatchOnATerminalRedrawsOneProgressLine) {
  ScriptJob("j-ok", qwha::v1::SUCCEEDED);
  environment_.stdout_is_tty = true;
  environment_.terminal_width = 100;
  CliRun run = Qwhactl({"watch", "j-ok"});
  EXPECT_EQ(run.code, 0);
  EXPECT_THAT(run.out, HasSubstr("\r\x1b[KTRAINING ["));
  EXPECT_THAT(run.out, HasSubstr("loss 2.4800"));
  EXPECT_THAT(run.out, HasSubstr("12.3k tok/s"));
  EXPECT_THAT(run.out, HasSubstr("ETA 0s"));
  // The final state clears the progress line before it is printed.
  EXPECT_THAT(run.out, HasSubstr("ETA 0s\r\x1b[K"));
  EXPECT_THAT(run.out, HasSubstr("SUCCEEDED\nJob j-ok SUCCEEDED: adapter a-1\n"));
}

TEST_F(CliTest, WatchAsJsonPrintsOneEventPerLine) {
  ScriptJob("j-ok", qwha::v1::SUCCEEDED);
  CliRun run = Qwhactl({"watch", "j-ok", "-o", "json"});
  EXPECT_EQ(run.code, 0);
  std::istringstream lines(run.out);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    auto event = nlohmann::json::parse(line);
    EXPECT_EQ(event["sequence"].get<std::string>(), std::to_string(++count));  // int64 as string
  }
  EXPECT_EQ(count, 5);
}

TEST_F(CliTest, SubmitWithWatchExitsAsTheJob) {
  ScriptJob("j-1", qwha::v1::CANCELLED);  // the id the fake gives the first submit
  CliRun run = Qwhactl({"submit", "--model", "m", "--train-dataset", "d", "--watch"});
  EXPECT_EQ(run.code, 2) << run.err;
  EXPECT_THAT(run.out, HasSubstr("Submitted job j-1"));
  EXPECT_THAT(run.out, HasSubstr("Job j-1 CANCELLED"));
}

TEST_F(CliTest, ListPrintsATableOrJson) {
  ScriptJob("j-7", qwha::v1::SUCCEEDED);
  CliRun table = Qwhactl({"list", "--state", "succeeded,failed", "--label", "team=nlp"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("ID   NAME  STATE"));
  EXPECT_THAT(table.out, HasSubstr("j-7"));
  ASSERT_EQ(server_.jobs.list_requests.size(), 1u);
  EXPECT_EQ(server_.jobs.list_requests[0].states_size(), 2);
  EXPECT_EQ(server_.jobs.list_requests[0].labels().at("team"), "nlp");
  EXPECT_EQ(server_.jobs.list_requests[0].page_size(), 50);

  CliRun json = Qwhactl({"list", "--output=json"});
  ASSERT_EQ(json.code, 0);
  auto parsed = nlohmann::json::parse(json.out);
  EXPECT_EQ(parsed["jobs"][0]["id"], "j-7");
  EXPECT_EQ(parsed["jobs"][0]["state"], "SUCCEEDED");
}

TEST_F(CliTest, PullDownloadsAndVerifies) {
  server_.registry.AddAdapter("a-1", {{"adapter.safetensors", std::string(5000, 'w')}});
  environment_.env["QWHA_TOKEN"] = "t0k";
  CliRun run = Qwhactl({"adapters", "pull", "a-1", "--dir", dir_ + "/out"});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("Pulled adapter a-1 (1 files"));
  EXPECT_EQ(*io::ReadFile(dir_ + "/out/adapter.safetensors"), std::string(5000, 'w'));
  EXPECT_EQ(server_.registry.authorization.back(), "Bearer t0k");
  server_.registry.SetAdvertisedSha256("a-1", "adapter.safetensors", std::string(64, '0'));
  CliRun corrupt = Qwhactl({"adapters", "pull", "a-1", "--dir", dir_ + "/out2"});
  EXPECT_EQ(corrupt.code, kExitFailed);
  EXPECT_THAT(corrupt.err, HasSubstr("is corrupt"));
}

TEST_F(CliTest, DatasetsPushChecksTheFileFirst) {
  const std::string bad = dir_ + "/bad.jsonl";
  ASSERT_TRUE(io::WriteFileAtomically(bad, "{\"text\": \"ok\"}\n{\"nope\": 1}\n").ok());
  CliRun rejected = Qwhactl({"datasets", "push", bad});
  EXPECT_EQ(rejected.code, kExitInvalid);
  EXPECT_THAT(rejected.err, HasSubstr("bad.jsonl:2"));
  EXPECT_TRUE(server_.registry.upload_header.name().empty());  // nothing uploaded

  const std::string good = dir_ + "/kjv.jsonl";
  ASSERT_TRUE(io::WriteFileAtomically(good, "{\"text\": \"In the beginning\"}\n").ok());
  CliRun pushed = Qwhactl({"datasets", "push", good});
  ASSERT_EQ(pushed.code, 0) << pushed.err;
  EXPECT_EQ(server_.registry.upload_header.name(), "kjv");  // name from the file
  EXPECT_THAT(pushed.out, HasSubstr("Uploaded dataset d-1 (kjv"));
  EXPECT_EQ(Qwhactl({"datasets", "push", dir_ + "/missing.jsonl"}).code, kExitNotFound);

  CliRun list = Qwhactl({"datasets", "list"});
  EXPECT_EQ(list.code, 0);
  EXPECT_THAT(list.out, HasSubstr("prompt_completion  1200     3.0 MiB"));
}

}  // namespace
}  // namespace qwha::client

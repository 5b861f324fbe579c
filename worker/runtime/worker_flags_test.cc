#include "worker/runtime/worker_flags.h"

#include <gtest/gtest.h>

namespace qwha::runtime {
namespace {

TEST(WorkerFlagsTest, ParsesEveryFlagInBothForms) {
  auto f = ParseWorkerFlags(
      {"--scheduler", "127.0.0.1:7070", "--work-dir=/w", "--name", "gpu0", "--device=cuda:1",
       "--http", "127.0.0.1:0", "--token", "t0k", "--cache-dir", "/c", "--poll-ms=250",
       "--keep-job-dirs", "--cache-max-gib", "7", "--tls-ca=/etc/qwha/ca.pem"},
      nullptr);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->scheduler, "127.0.0.1:7070");
  EXPECT_EQ(f->work_dir, "/w");
  EXPECT_EQ(f->name, "gpu0");
  EXPECT_EQ(f->device, "cuda:1");
  EXPECT_EQ(f->http, "127.0.0.1:0");
  EXPECT_EQ(f->token, "t0k");
  EXPECT_EQ(f->cache_dir, "/c");
  EXPECT_EQ(f->poll_ms, 250);
  EXPECT_TRUE(f->keep_job_dirs);
  EXPECT_EQ(f->cache_max_bytes, int64_t{7} << 30);
  EXPECT_EQ(f->tls_ca, "/etc/qwha/ca.pem");
  EXPECT_EQ(
      ParseWorkerFlags({"--scheduler", "h:1", "--work-dir", "/w", "--cache-max-gib=0"}, nullptr)
          ->cache_max_bytes,
      0);
}

TEST(WorkerFlagsTest, DefaultsAndTheTokenFromTheEnvironment) {
  auto f = ParseWorkerFlags({"--scheduler", "sched:7070", "--work-dir", "/w"}, "from-env");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->token, "from-env");
  EXPECT_EQ(f->cache_dir, "/w/cache");
  EXPECT_EQ(f->poll_ms, 5000);
  EXPECT_EQ(f->device, "");  // resolved by the binary (CUDA if available)
  EXPECT_EQ(f->http, "");
  EXPECT_FALSE(f->keep_job_dirs);
  EXPECT_EQ(f->cache_max_bytes, int64_t{100} << 30);
  auto flag_wins =
      ParseWorkerFlags({"--scheduler", "s:1", "--work-dir", "/w", "--token", "flag"}, "env");
  EXPECT_EQ(flag_wins->token, "flag");
}

TEST(WorkerFlagsTest, ErrorsNameTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--work-dir", "/w"}, "--scheduler"},
      {{"--scheduler", "nohostport", "--work-dir", "/w"}, "--scheduler"},
      {{"--scheduler", "h:0", "--work-dir", "/w"}, "--scheduler"},
      {{"--scheduler", "h:1"}, "--work-dir"},
      {{"--scheduler", "h:1", "--work-dir", "/w", "--poll-ms", "x"}, "--poll-ms"},
      {{"--scheduler", "h:1", "--work-dir", "/w", "--poll-ms", "0"}, "--poll-ms"},
      {{"--scheduler", "h:1", "--work-dir", "/w", "--poll-ms", "60000"}, "--poll-ms"},
      {{"--scheduler", "h:1", "--work-dir", "/w", "--device", "tpu"}, "--device"},
      {{"--scheduler", "h:1", "--work-dir", "/w", "--http", "localhost"}, "--http"},
      {{"--scheduler", "h:1", "--work-dir", "/w", "--name"}, "--name"},
      {{"--scheduler", "h:1", "--work-dir", "/w", "--frobnicate", "1"}, "--frobnicate"},
      {{"--scheduler", "h:1", "--work-dir", "/w", "--keep-job-dirs=yes"}, "--keep-job-dirs"},
      {{"--scheduler", "h:1", "--work-dir", "/w", "--cache-max-gib", "-1"}, "--cache-max-gib"},
      {{"--scheduler", "h:1", "--work-dir", "/w", "--cache-max-gib", "1.5"}, "--cache-max-gib"},
  };
  for (const auto& [args, flag] : cases) {
    auto f = ParseWorkerFlags(args, nullptr);
    ASSERT_FALSE(f.ok()) << flag;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(f.status().message().find(flag), std::string::npos) << f.status();
  }
}

}  // namespace
}  // namespace qwha::runtime

#include "worker/runtime/child_process.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

namespace qwha::runtime {
namespace {

using std::chrono::milliseconds;

std::vector<std::string> ReadAll(ChildProcess& child) {
  std::vector<std::string> lines;
  while (child.ReadLines(milliseconds(1000), &lines)) {
  }
  return lines;
}

TEST(ChildProcessTest, DeliversStdoutLineByLineAndTheExitStatus) {
  auto child = ChildProcess::Start(
      {"/bin/sh", "-c", "echo one; printf 'two\\nthree'; echo oops >&2; exit 3"});
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ(ReadAll(**child), (std::vector<std::string>{"one", "two", "three"}));
  ExitStatus status = (*child)->Wait();
  EXPECT_FALSE(status.signaled);
  EXPECT_EQ(status.code, 3);
  EXPECT_EQ(status.ToString(), "exit status 3");
  EXPECT_FALSE((*child)->running());
  (*child)->Signal(SIGKILL);  // after reaping: a no-op, never a recycled pid
}

TEST(ChildProcessTest, ExecFailureIsExitStatus127) {
  auto child = ChildProcess::Start({"/nonexistent/binary"});
  ASSERT_TRUE(child.ok());
  EXPECT_EQ((*child)->Wait().code, 127);
}

TEST(ChildProcessTest, TerminateSendsSigtermThenSigkill) {
  auto polite = ChildProcess::Start({"/bin/sh", "-c", "exec sleep 30"});
  ASSERT_TRUE(polite.ok());
  ExitStatus a = (*polite)->TerminateAndWait(milliseconds(3000));
  EXPECT_TRUE(a.signaled);
  EXPECT_EQ(a.signal, SIGTERM);

  // A child that ignores SIGTERM is killed after the grace period.
  auto stubborn = ChildProcess::Start({"/bin/sh", "-c", "trap '' TERM; echo ready; exec sleep 30"});
  ASSERT_TRUE(stubborn.ok());
  std::vector<std::string> lines;
  while (lines.empty()) ASSERT_TRUE((*stubborn)->ReadLines(milliseconds(1000), &lines));
  const auto start = std::chrono::steady_clock::now();
  ExitStatus b = (*stubborn)->TerminateAndWait(milliseconds(300));
  EXPECT_TRUE(b.signaled);
  EXPECT_EQ(b.signal, SIGKILL);
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(300));
}

TEST(ChildProcessTest, SignalFromAnotherThreadWhileTheOwnerWaits) {
  auto child = ChildProcess::Start({"/bin/sh", "-c", "exec sleep 30"});
  ASSERT_TRUE(child.ok());
  std::thread killer([&] {
    std::this_thread::sleep_for(milliseconds(100));
    (*child)->Signal(SIGKILL);
  });
  ExitStatus status = (*child)->Wait();
  killer.join();
  EXPECT_TRUE(status.signaled);
  EXPECT_EQ(status.signal, SIGKILL);
}

// PR_SET_PDEATHSIG: when the thread that started the child ends (as when the
// worker process dies), the child gets SIGKILL.
TEST(ChildProcessTest, ChildDiesWithTheThreadThatStartedIt) {
  std::unique_ptr<ChildProcess> child;
  std::thread starter([&] {
    auto started = ChildProcess::Start({"/bin/sh", "-c", "exec sleep 30"});
    ASSERT_TRUE(started.ok());
    child = *std::move(started);
  });
  starter.join();
  ASSERT_NE(child, nullptr);
  ASSERT_TRUE(child->WaitFor(milliseconds(5000)));
  ExitStatus status = child->Wait();
  EXPECT_TRUE(status.signaled);
  EXPECT_EQ(status.signal, SIGKILL);
}

}  // namespace
}  // namespace qwha::runtime

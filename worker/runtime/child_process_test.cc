#include "worker/runtime/child_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
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

// True while `pid` exists and is not a zombie.
bool Alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return false;
  const size_t paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] != 'Z';
}

// PR_SET_PDEATHSIG: a worker killed with SIGKILL takes its child with it.
TEST(ChildProcessTest, ChildDiesWhenItsParentIsKilled) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t middle = ::fork();
  ASSERT_GE(middle, 0);
  if (middle == 0) {  // plays the worker: starts a child, reports its pid, waits
    auto child = ChildProcess::Start({"/bin/sh", "-c", "exec sleep 30"});
    const pid_t pid = child.ok() ? (*child)->pid() : -1;
    if (::write(fds[1], &pid, sizeof(pid)) != sizeof(pid)) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  pid_t grandchild = -1;
  ASSERT_EQ(::read(fds[0], &grandchild, sizeof(grandchild)),
            static_cast<ssize_t>(sizeof(grandchild)));
  ::close(fds[0]);
  ::close(fds[1]);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(Alive(grandchild));
  ::kill(middle, SIGKILL);
  ::waitpid(middle, nullptr, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (Alive(grandchild) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_FALSE(Alive(grandchild)) << "the child outlived its killed parent";
  if (Alive(grandchild)) ::kill(grandchild, SIGKILL);
}

}  // namespace
}  // namespace qwha::runtime

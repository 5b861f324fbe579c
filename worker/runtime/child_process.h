// A child process started with fork + exec whose stdout comes back to the
// parent line by line. The child gets PR_SET_PDEATHSIG(SIGKILL), so it dies
// with the parent even on kill -9: a dead worker never leaves a training
// process behind.
//
// Caveat of PR_SET_PDEATHSIG: on some kernels the signal fires when the
// *thread* that forked exits, not only the process. Start children from a
// thread that lives as long as they may run (the worker uses its main thread).
//
// Thread safety: ReadLines, Wait and TerminateAndWait belong to one thread
// (the owner); Signal and running() may be called from any thread at any
// time, also while the owner waits. The pid is never signalled after it has
// been reaped (so a recycled pid is never hit).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qwha::runtime {

struct ExitStatus {
  bool signaled = false;  // killed by `signal` (else exited with `code`)
  int code = 0;
  int signal = 0;
  bool success() const { return !signaled && code == 0; }
  // "exit status 2" or "killed by signal 9 (Killed)".
  std::string ToString() const;
};

class ChildProcess {
 public:
  // Runs argv[0] (a path, not searched in PATH) with argv. stdin is
  // /dev/null, stdout a pipe read by ReadLines, stderr the parent's. Internal
  // naming the call if the pipe or fork fails; an exec failure shows as exit
  // status 127.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::vector<std::string>& argv);

  // Kills (SIGKILL) and reaps a child that is still running.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Appends the complete lines (without '\n') that are available to `lines`,
  // waiting up to `timeout` for the first. At end of stream a last partial
  // line is appended too. Returns false once the stream has ended and every
  // line was delivered.
  bool ReadLines(std::chrono::milliseconds timeout, std::vector<std::string>* lines);

  // Sends `signal` unless the child has been reaped. Thread-safe.
  void Signal(int signal);

  // Blocks until the child exits and reaps it (idempotent).
  ExitStatus Wait();

  // Waits up to `timeout` for the child to exit; true (and reaped) if it did.
  bool WaitFor(std::chrono::milliseconds timeout);

  // SIGTERM, then SIGKILL if it is still running after `grace`; reaps it.
  ExitStatus TerminateAndWait(std::chrono::milliseconds grace);

  pid_t pid() const { return pid_; }
  // False once the child has been reaped.
  bool running() const;

 private:
  ChildProcess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}
  // Reaps the child if it has exited (blocking if `block`); true if reaped.
  bool Reap(bool block);

  const pid_t pid_;
  int stdout_fd_;
  std::string pending_;  // bytes after the last '\n'
  mutable std::mutex mu_;
  bool reaped_ = false;  // guarded by mu_
  ExitStatus status_;    // valid once reaped_
};

}  // namespace qwha::runtime

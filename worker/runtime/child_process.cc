#include "worker/runtime/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace qwha::runtime {

std::string ExitStatus::ToString() const {
  if (signaled) return absl::StrCat("killed by signal ", signal, " (", strsignal(signal), ")");
  return absl::StrCat("exit status ", code);
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv) {
  if (argv.empty()) return absl::InvalidArgumentError("ChildProcess::Start: empty argv");
  // Everything the child needs is prepared before fork: between fork and exec
  // only async-signal-safe calls are allowed (the worker has other threads).
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    if (null_fd >= 0) ::close(null_fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(err)));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    if (::dup2(pipe_fds[1], STDOUT_FILENO) < 0) ::_exit(127);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  if (null_fd >= 0) ::close(null_fd);
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, pipe_fds[0]));
}

ChildProcess::~ChildProcess() {
  if (running()) {
    Signal(SIGKILL);
    Wait();
  }
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

bool ChildProcess::ReadLines(std::chrono::milliseconds timeout, std::vector<std::string>* lines) {
  if (stdout_fd_ < 0) return false;
  struct pollfd p = {stdout_fd_, POLLIN, 0};
  int ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (ready < 0 && errno == EINTR) return true;
  if (ready <= 0) return ready == 0;  // timeout: nothing yet
  char buffer[1 << 16];
  ssize_t n = ::read(stdout_fd_, buffer, sizeof(buffer));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) {  // end of stream (or an error, treated alike)
    const bool partial_line = !pending_.empty();
    if (partial_line) lines->push_back(pending_);
    pending_.clear();
    ::close(stdout_fd_);
    stdout_fd_ = -1;
    return partial_line;  // true: one more call reports the end
  }
  pending_.append(buffer, static_cast<size_t>(n));
  size_t start = 0;
  for (size_t nl; (nl = pending_.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines->push_back(pending_.substr(start, nl - start));
  }
  pending_.erase(0, start);
  return true;
}

void ChildProcess::Signal(int signal) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!reaped_) ::kill(pid_, signal);
}

bool ChildProcess::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !reaped_;
}

bool ChildProcess::Reap(bool block) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (reaped_) return true;
  }
  // Wait without reaping, so that Signal (under mu_) never sees a recycled pid.
  siginfo_t info;
  std::memset(&info, 0, sizeof(info));
  int rc;
  do {
    rc = ::waitid(P_PID, pid_, &info, WEXITED | WNOWAIT | (block ? 0 : WNOHANG));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 || info.si_pid == 0) return false;
  std::lock_guard<std::mutex> lock(mu_);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  status_.signaled = WIFSIGNALED(status);
  status_.signal = status_.signaled ? WTERMSIG(status) : 0;
  status_.code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
  reaped_ = true;
  return true;
}

ExitStatus ChildProcess::Wait() {
  Reap(/*block=*/true);
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

bool ChildProcess::WaitFor(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!Reap(/*block=*/false)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

ExitStatus ChildProcess::TerminateAndWait(std::chrono::milliseconds grace) {
  Signal(SIGTERM);
  if (!WaitFor(grace)) Signal(SIGKILL);
  return Wait();
}

}  // namespace qwha::runtime

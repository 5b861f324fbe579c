#include "worker/io/in_use_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "worker/io/atomic_file.h"

namespace qwha::io {

void MarkUsed(const std::string& path) { ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0); }

absl::StatusOr<InUseLock> InUseLock::Take(const std::string& dir) {
  const std::string path = dir + ".inuse";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  while (::flock(fd, LOCK_SH) != 0) {
    if (errno != EINTR) {
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, "lock", path);
    }
  }
  return InUseLock(fd);
}

InUseLock& InUseLock::operator=(InUseLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

InUseLock::~InUseLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace qwha::io

#include "worker/runtime/local_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qwha::runtime {

absl::Status ErrnoStatus(int err, const std::string& what, const std::string& path) {
  std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(message);
  return absl::InternalError(message);
}

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

absl::Status MakeDirs(const std::string& path) {
  if (path.empty()) return absl::OkStatus();
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::OkStatus();
    return ErrnoStatus(ENOTDIR, "mkdir", path);
  }
  const std::string parent = DirName(path);
  if (parent != path && parent != "." && parent != "/") {
    if (absl::Status s = MakeDirs(parent); !s.ok()) return s;
  }
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return ErrnoStatus(errno, "mkdir", path);
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open directory", dir);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus(err, "fsync directory", dir);
  return absl::OkStatus();
}

namespace {

absl::Status CopyFile(const std::string& from, const std::string& to) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return ErrnoStatus(errno, "open", from);
  const std::string tmp = absl::StrCat(to, ".tmp.", ::getpid());
  const int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    const int err = errno;
    ::close(in);
    return ErrnoStatus(err, "create", tmp);
  }
  absl::Status status;
  char buffer[1 << 16];
  for (;;) {
    ssize_t n = ::read(in, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      status = ErrnoStatus(errno, "read", from);
      break;
    }
    if (n == 0) break;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(out, buffer + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        status = ErrnoStatus(errno, "write", tmp);
        break;
      }
      done += w;
    }
    if (!status.ok()) break;
  }
  if (status.ok() && ::fsync(out) != 0) status = ErrnoStatus(errno, "fsync", tmp);
  ::close(in);
  ::close(out);
  if (status.ok() && ::rename(tmp.c_str(), to.c_str()) != 0) {
    status = ErrnoStatus(errno, "rename to", to);
  }
  if (!status.ok()) ::unlink(tmp.c_str());
  return status;
}

absl::Status ListInto(const std::string& root, const std::string& relative,
                      const std::vector<std::string>& skip_dirs, std::vector<std::string>& out) {
  const std::string path = relative.empty() ? root : root + "/" + relative;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return ErrnoStatus(errno, "open directory", path);
  std::vector<std::string> names;
  while (struct dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  for (const std::string& name : names) {
    const std::string rel = relative.empty() ? name : relative + "/" + name;
    struct stat st;
    if (::lstat((root + "/" + rel).c_str(), &st) != 0) continue;  // removed meanwhile
    if (S_ISREG(st.st_mode)) {
      out.push_back(rel);
    } else if (S_ISDIR(st.st_mode) &&
               std::find(skip_dirs.begin(), skip_dirs.end(), rel) == skip_dirs.end()) {
      if (absl::Status s = ListInto(root, rel, skip_dirs, out); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LinkOrCopy(const std::string& from, const std::string& to) {
  if (absl::Status s = MakeDirs(DirName(to)); !s.ok()) return s;
  ::unlink(to.c_str());
  if (::link(from.c_str(), to.c_str()) == 0) return absl::OkStatus();
  if (errno == ENOENT) return ErrnoStatus(errno, "link", from);
  return CopyFile(from, to);
}

absl::StatusOr<std::vector<std::string>> ListFilesRecursive(
    const std::string& dir, const std::vector<std::string>& skip_dirs) {
  std::vector<std::string> out;
  if (absl::Status s = ListInto(dir, "", skip_dirs, out); !s.ok()) return s;
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace qwha::runtime

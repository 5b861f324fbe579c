#include "server/registry/blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "worker/io/atomic_file.h"

namespace qwha::registry {
namespace {

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return Errno("mkdir", path);
  return absl::OkStatus();
}

absl::Status SyncDir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("open", path);
  int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : Errno("fsync", path);
}

}  // namespace

BlobWriter::~BlobWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

absl::Status BlobWriter::Append(std::string_view data) {
  if (size_ + static_cast<int64_t>(data.size()) > limit_) {
    return absl::InvalidArgumentError(
        absl::StrCat(what_, ": larger than the limit of ", limit_, " bytes"));
  }
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write", temp_path_);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  digest_.Update(data);
  size_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::StatusOr<BlobInfo> BlobWriter::Commit(const std::string& expected_sha256,
                                            int64_t expected_size) {
  if (committed_ || fd_ < 0) return absl::FailedPreconditionError("blob writer already finished");
  BlobInfo info{digest_.Finish(), size_};
  if (::fsync(fd_) != 0) return Errno("fsync", temp_path_);
  ::close(fd_);
  fd_ = -1;
  if (expected_size >= 0 && expected_size != info.size) {
    return absl::DataLossError(
        absl::StrCat(what_, ": received ", info.size, " bytes, the header said ", expected_size));
  }
  if (!expected_sha256.empty() && expected_sha256 != info.sha256) {
    return absl::DataLossError(absl::StrCat(what_, ": sha256 ", info.sha256,
                                            " does not match the declared ", expected_sha256));
  }
  std::string dir = absl::StrCat(root_, "/", info.sha256.substr(0, 2));
  if (absl::Status s = MakeDir(dir); !s.ok()) return s;
  std::string final_path = absl::StrCat(dir, "/", info.sha256);
  if (::rename(temp_path_.c_str(), final_path.c_str()) != 0) return Errno("rename", final_path);
  committed_ = true;
  if (absl::Status s = SyncDir(dir); !s.ok()) return s;
  return info;
}

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(const std::string& root) {
  for (const std::string& dir : {root, root + "/tmp"}) {
    if (absl::Status s = MakeDir(dir); !s.ok()) return s;
  }
  if (DIR* d = ::opendir((root + "/tmp").c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ::unlink(absl::StrCat(root, "/tmp/", e->d_name).c_str());
    }
    ::closedir(d);
  }
  std::unique_ptr<BlobStore> store(new BlobStore());
  store->root_ = root;
  return store;
}

absl::StatusOr<std::unique_ptr<BlobWriter>> BlobStore::NewWriter(const std::string& what,
                                                                 int64_t limit) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::unique_ptr<BlobWriter> writer(new BlobWriter());
  writer->root_ = root_;
  writer->what_ = what;
  writer->limit_ = limit;
  writer->temp_path_ = absl::StrCat(root_, "/tmp/", ::getpid(), "-", rng());
  writer->fd_ = ::open(writer->temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (writer->fd_ < 0) {
    std::string path = writer->temp_path_;
    writer->temp_path_.clear();
    return Errno("create", path);
  }
  return writer;
}

absl::StatusOr<BlobInfo> BlobStore::ImportFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return errno == ENOENT ? absl::NotFoundError(absl::StrCat(path, ": no such file"))
                           : Errno("open", path);
  }
  auto writer = NewWriter(path, INT64_MAX);
  if (!writer.ok()) {
    ::close(fd);
    return writer.status();
  }
  std::string buffer(1 << 20, '\0');
  while (true) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = Errno("read", path);
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    if (absl::Status s = (*writer)->Append(std::string_view(buffer.data(), n)); !s.ok()) {
      ::close(fd);
      return s;
    }
  }
  ::close(fd);
  return (*writer)->Commit();
}

std::string BlobStore::FinalPath(const std::string& sha256) const {
  return absl::StrCat(root_, "/", sha256.substr(0, 2), "/", sha256);
}

bool BlobStore::Contains(const std::string& sha256) const {
  struct stat st;
  return io::IsSha256Hex(sha256) && ::stat(FinalPath(sha256).c_str(), &st) == 0;
}

absl::StatusOr<std::string> BlobStore::PathOf(const std::string& sha256) const {
  if (!Contains(sha256)) return absl::NotFoundError(absl::StrCat("blob ", sha256, " not stored"));
  return FinalPath(sha256);
}

absl::StatusOr<std::string> BlobStore::Read(const std::string& sha256, int64_t offset,
                                            int64_t length) const {
  auto path = PathOf(sha256);
  if (!path.ok()) return path.status();
  int fd = ::open(path->c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("open", *path);
  std::string data(static_cast<size_t>(std::max<int64_t>(length, 0)), '\0');
  size_t got = 0;
  while (got < data.size()) {
    ssize_t n =
        ::pread(fd, data.data() + got, data.size() - got, offset + static_cast<int64_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  data.resize(got);
  return data;
}

absl::Status BlobStore::Remove(const std::string& sha256) {
  if (!io::IsSha256Hex(sha256)) return absl::InvalidArgumentError("sha256: not a digest");
  if (::unlink(FinalPath(sha256).c_str()) != 0 && errno != ENOENT) {
    return Errno("unlink", FinalPath(sha256));
  }
  return absl::OkStatus();
}

int64_t BlobStore::TotalBytes() const {
  int64_t total = 0;
  DIR* top = ::opendir(root_.c_str());
  if (!top) return 0;
  while (dirent* e = ::readdir(top)) {
    std::string name = e->d_name;
    if (name.size() != 2 || name == "..") continue;
    std::string dir = absl::StrCat(root_, "/", name);
    if (DIR* d = ::opendir(dir.c_str())) {
      while (dirent* f = ::readdir(d)) {
        struct stat st;
        if (f->d_name[0] != '.' && ::stat(absl::StrCat(dir, "/", f->d_name).c_str(), &st) == 0) {
          total += st.st_size;
        }
      }
      ::closedir(d);
    }
  }
  ::closedir(top);
  return total;
}

}  // namespace qwha::registry

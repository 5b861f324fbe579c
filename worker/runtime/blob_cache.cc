#include "worker/runtime/blob_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"
#include "worker/runtime/local_files.h"

namespace qwha::runtime {
namespace {

// An fd that closes itself (which also drops its flock).
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Opens and locks `path` (creating it), retrying until the locked file is the
// one `path` names (a previous holder may have renamed it away).
absl::StatusOr<std::unique_ptr<Fd>> OpenLocked(const std::string& path) {
  for (;;) {
    auto fd = std::make_unique<Fd>(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (fd->get() < 0) return ErrnoStatus(errno, "open", path);
    while (::flock(fd->get(), LOCK_EX) != 0) {
      if (errno != EINTR) return ErrnoStatus(errno, "lock", path);
    }
    struct stat locked, named;
    if (::fstat(fd->get(), &locked) != 0) return ErrnoStatus(errno, "stat", path);
    if (::stat(path.c_str(), &named) == 0 && named.st_ino == locked.st_ino &&
        named.st_dev == locked.st_dev) {
      return fd;
    }
  }
}

// Digest of the first `size` bytes already in the file.
absl::Status HashPrefix(int fd, int64_t size, io::Sha256Stream& hash, const std::string& path) {
  std::string buffer(1 << 20, '\0');
  for (int64_t done = 0; done < size;) {
    ssize_t n = ::pread(fd, buffer.data(), std::min<int64_t>(buffer.size(), size - done), done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoStatus(n < 0 ? errno : EIO, "read", path);
    hash.Update(std::string_view(buffer.data(), static_cast<size_t>(n)));
    done += n;
  }
  return absl::OkStatus();
}

}  // namespace

std::string BlobCache::PathOf(const std::string& sha256) const { return root_ + "/" + sha256; }

bool BlobCache::Contains(const std::string& sha256, int64_t size) const {
  struct stat st;
  return ::stat(PathOf(sha256).c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == size;
}

absl::StatusOr<std::string> BlobCache::Fetch(const qwha::v1::FileInfo& file, const BlobReader& read,
                                             int64_t* fetched) const {
  const std::string& sha = file.sha256();
  if (!io::IsSha256Hex(sha)) {
    return absl::InvalidArgumentError(
        absl::StrCat("blob of ", file.name(), ": malformed sha256 '", sha, "'"));
  }
  if (file.size() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("blob of ", file.name(), ": negative size"));
  }
  const std::string final_path = PathOf(sha);
  if (Contains(sha, file.size())) {
    io::MarkUsed(final_path);
    return final_path;
  }
  if (absl::Status s = MakeDirs(root_); !s.ok()) return s;

  const std::string partial = final_path + ".partial";
  absl::StatusOr<std::unique_ptr<Fd>> locked = OpenLocked(partial);
  if (!locked.ok()) return locked.status();
  const int fd = (*locked)->get();
  if (Contains(sha, file.size())) {  // another fetcher finished while we waited
    ::unlink(partial.c_str());
    return final_path;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat", partial);
  int64_t size = st.st_size;
  if (size > file.size()) {
    if (::ftruncate(fd, 0) != 0) return ErrnoStatus(errno, "truncate", partial);
    size = 0;
  }
  io::Sha256Stream hash;
  if (absl::Status s = HashPrefix(fd, size, hash, partial); !s.ok()) return s;

  auto discard = [&](const std::string& why) {
    ::unlink(partial.c_str());  // we hold its lock; a waiter re-opens the new path
    return absl::DataLossError(absl::StrCat("blob ", sha, " (", file.name(), "): ", why));
  };
  bool too_long = false;
  absl::Status write_error;
  absl::Status read_status = read(size, [&](std::string_view data) -> absl::Status {
    if (size + static_cast<int64_t>(data.size()) > file.size()) {
      too_long = true;
      return absl::DataLossError("more bytes than the blob's size");
    }
    for (size_t done = 0; done < data.size();) {
      ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, size);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return write_error = ErrnoStatus(errno, "write", partial);
      done += static_cast<size_t>(n);
      size += n;
      if (fetched != nullptr) *fetched += n;
    }
    hash.Update(data);
    return absl::OkStatus();
  });
  if (too_long) {
    return discard(absl::StrCat("the stream has more than ", file.size(), " bytes"));
  }
  if (!write_error.ok()) return write_error;
  if (!read_status.ok()) return read_status;
  if (size < file.size()) {
    return absl::UnavailableError(absl::StrCat("blob ", sha, " (", file.name(),
                                               "): stream ended at ", size, " of ", file.size(),
                                               " bytes"));
  }
  const std::string digest = hash.Finish();
  if (digest != sha) return discard(absl::StrCat("content has sha256 ", digest));
  if (::fsync(fd) != 0) return ErrnoStatus(errno, "fsync", partial);
  ::fchmod(fd, 0444);  // cached blobs are immutable; hard links share the inode
  if (::rename(partial.c_str(), final_path.c_str()) != 0) {
    return ErrnoStatus(errno, "rename to", final_path);
  }
  if (absl::Status s = SyncDirectory(root_); !s.ok()) return s;
  return final_path;
}

absl::Status CheckRelativeName(const std::string& name) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("file name '", name, "': ", why));
  };
  if (name.empty()) return bad("empty");
  if (name.front() == '/') return bad("absolute path");
  if (name.find('\0') != std::string::npos || name.find('\\') != std::string::npos) {
    return bad("contains NUL or '\\'");
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == "." || part == "..") return bad("empty, '.' or '..' component");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> MaterializeFileSet(const BlobCache& cache,
                                               const std::vector<qwha::v1::FileInfo>& files,
                                               const std::string& expected_digest,
                                               const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> pairs;
  std::set<std::string> names;
  for (const auto& f : files) {
    if (absl::Status s = CheckRelativeName(f.name()); !s.ok()) return s;
    if (!names.insert(f.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat("file name '", f.name(), "': duplicate"));
    }
    pairs.emplace_back(f.name(), f.sha256());
  }
  if (!expected_digest.empty()) {
    const std::string digest = io::Sha256OfFileSet(pairs);
    if (digest != expected_digest) {
      return absl::InvalidArgumentError(absl::StrCat(
          "file set digest ", digest, " does not match the expected ", expected_digest));
    }
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    io::MarkUsed(dir);
    return dir;
  }
  for (const auto& f : files) {
    const std::string blob = cache.PathOf(f.sha256());
    if (::stat(blob.c_str(), &st) != 0) {
      return absl::NotFoundError(
          absl::StrCat(f.name(), ": blob ", f.sha256(), " is not in the cache ", cache.root()));
    }
    if (st.st_size != f.size()) {
      return absl::DataLossError(absl::StrCat(f.name(), ": cached blob ", blob, " has ", st.st_size,
                                              " bytes, expected ", f.size()));
    }
  }
  const std::string tmp = absl::StrCat(dir, ".tmp.", ::getpid());
  if (absl::Status s = io::RemoveTree(tmp); !s.ok()) return s;
  for (const auto& f : files) {
    if (absl::Status s = LinkOrCopy(cache.PathOf(f.sha256()), tmp + "/" + f.name()); !s.ok()) {
      io::RemoveTree(tmp).IgnoreError();
      return s;
    }
  }
  if (absl::Status s = MakeDirs(tmp); !s.ok()) return s;  // an empty set
  if (absl::Status s = SyncDirectory(tmp); !s.ok()) return s;
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    const int err = errno;
    io::RemoveTree(tmp).IgnoreError();
    // Another process built the same directory first.
    if ((err == ENOTEMPTY || err == EEXIST) && ::stat(dir.c_str(), &st) == 0) return dir;
    return ErrnoStatus(err, "rename to", dir);
  }
  if (absl::Status s = SyncDirectory(DirName(dir)); !s.ok()) return s;
  return dir;
}

namespace {

namespace fs = std::filesystem;

using Inode = std::pair<dev_t, ino_t>;

// A blob or a materialized directory: what pruning removes as one.
struct CacheEntry {
  std::string path;
  bool dir = false;
  int64_t used_ns = 0;  // modification time
  std::vector<Inode> inodes;
};

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

bool IsSha256Name(const std::string& name) { return io::IsSha256Hex(name); }

}  // namespace

absl::StatusOr<PruneStats> PruneWorkCache(const BlobCache& cache,
                                          const std::vector<std::string>& dir_roots,
                                          int64_t max_bytes, std::chrono::seconds min_idle) {
  std::vector<CacheEntry> entries;
  std::map<Inode, std::pair<int64_t, int>> inodes;  // bytes, links among the entries
  auto add_file = [&](CacheEntry& e, const std::string& path) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;  // vanished, or a link
    const Inode id{st.st_dev, st.st_ino};
    auto& [bytes, links] = inodes[id];
    bytes = static_cast<int64_t>(st.st_size);
    ++links;
    e.inodes.push_back(id);
  };
  std::error_code ec;
  // Blobs: <root>/<sha256>.
  for (fs::directory_iterator it(cache.root(), ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!IsSha256Name(name)) continue;  // .partial downloads and anything else
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    CacheEntry e{it->path().string(), false, MtimeNs(st), {}};
    add_file(e, e.path);
    entries.push_back(std::move(e));
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::InternalError(absl::StrCat("prune: list ", cache.root(), ": ", ec.message()));
  }
  // Materialized directories: <dir root>/<name>/<files...>.
  for (const std::string& root : dir_roots) {
    ec.clear();
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.find(".tmp.") != std::string::npos) continue;  // being built
      struct stat st;
      if (::lstat(it->path().c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
      CacheEntry e{it->path().string(), true, MtimeNs(st), {}};
      std::error_code walk;
      for (fs::recursive_directory_iterator f(e.path, walk), fend; !walk && f != fend;
           f.increment(walk)) {
        add_file(e, f->path().string());
      }
      entries.push_back(std::move(e));
    }
    if (ec && ec != std::errc::no_such_file_or_directory) {
      return absl::InternalError(absl::StrCat("prune: list ", root, ": ", ec.message()));
    }
  }
  PruneStats stats;
  for (const auto& [id, v] : inodes) stats.bytes_before += v.first;
  stats.bytes_after = stats.bytes_before;
  std::sort(entries.begin(), entries.end(),
            [](const CacheEntry& a, const CacheEntry& b) { return a.used_ns < b.used_ns; });
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  const int64_t idle_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(min_idle).count();
  for (const CacheEntry& e : entries) {
    if (stats.bytes_after <= max_bytes) break;
    if (now_ns - e.used_ns < idle_ns) continue;
    if (e.dir) {
      // Only a directory no job holds: an exclusive lock on its .inuse file,
      // kept while the directory goes.
      const std::string lock_path = e.path + ".inuse";
      const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) return ErrnoStatus(errno, "open", lock_path);
      Fd lock(fd);
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) continue;  // in use
      // Renamed away first: a directory removed halfway must not look like
      // a complete one to the next MaterializeFileSet.
      const std::string doomed = absl::StrCat(e.path, ".tmp.prune.", ::getpid());
      if (::rename(e.path.c_str(), doomed.c_str()) != 0) {
        if (errno == ENOENT) continue;
        return ErrnoStatus(errno, "rename to", doomed);
      }
      ::unlink(lock_path.c_str());
      if (absl::Status s = io::RemoveTree(doomed); !s.ok()) return s;
      ++stats.removed_dirs;
    } else {
      if (::unlink(e.path.c_str()) != 0) {
        if (errno == ENOENT) continue;
        return ErrnoStatus(errno, "remove", e.path);
      }
      ++stats.removed_blobs;
    }
    for (const Inode& id : e.inodes) {
      auto& [bytes, links] = inodes[id];
      if (--links == 0) stats.bytes_after -= bytes;
    }
  }
  return stats;
}

std::vector<std::string> ChildDirectories(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().find(".tmp.") != std::string::npos) continue;
    struct stat st;
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      out.push_back(it->path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace qwha::runtime

// Client uploads (models, datasets) and resumable, verified adapter downloads.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/call_context.h"
#include "client/client.h"
#include "worker/io/sha256.h"

namespace qwha::client {
namespace {

using internal::FromGrpc;
using internal::MakeContext;

absl::Status ErrnoError(const std::string& what, const std::string& path, int error) {
  std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(error));
  if (error == ENOENT) return absl::NotFoundError(message);
  if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

// Size of `path`, -1 if it does not exist.
int64_t FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return st.st_size;
}

absl::Status FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return ErrnoError("cannot open", path, errno);
  int rc = ::fsync(fd);
  int error = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError("cannot fsync", path, error);
  return absl::OkStatus();
}

// Durably renames `from` over `to`: fsync the file, rename, fsync the folder.
absl::Status CommitFile(const std::string& from, const std::string& to) {
  if (auto status = FsyncPath(from, O_RDONLY); !status.ok()) return status;
  if (::rename(from.c_str(), to.c_str()) != 0) return ErrnoError("cannot rename to", to, errno);
  std::string dir = std::filesystem::path(to).parent_path().string();
  return FsyncPath(dir.empty() ? "." : dir, O_RDONLY | O_DIRECTORY);
}

bool Retryable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::ABORTED ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED ||
         code == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

// Writes all of `data` to `fd`.
absl::Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("cannot write", path, errno);
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// One file of an adapter: see Client::DownloadAdapterFile. `base` and `total`
// place this file's bytes within a larger progress count.
absl::Status DownloadOne(const ClientOptions& options, qwha::v1::RegistryService::Stub& stub,
                         const std::string& adapter_id, const qwha::v1::FileInfo& info,
                         const std::string& dest, const ProgressCallback& progress, int64_t base,
                         int64_t total) {
  auto report = [&](int64_t done) {
    if (progress) progress(base + done, total);
  };
  if (FileSize(dest) == info.size()) {
    auto existing = io::Sha256File(dest);
    if (existing.ok() && existing->first == info.sha256()) {
      report(info.size());
      return absl::OkStatus();
    }
  }
  const std::string part = dest + ".part";
  int64_t have = std::max<int64_t>(FileSize(part), 0);
  if (have > info.size()) {
    ::unlink(part.c_str());
    have = 0;
  }
  int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot open", part, errno);
  // One writer per .part (released when fd closes): two downloads appending
  // to one file would interleave their bytes.
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("another download to ", dest, " is in progress (", part, " is locked)"));
  }
  constexpr int kMaxTriesWithoutProgress = 5;
  int tries_without_progress = 0;
  absl::Status failure;
  while (have < info.size()) {
    const int64_t before = have;
    auto context = MakeContext(options, /*unary=*/false);
    qwha::v1::DownloadRequest request;
    request.set_adapter_id(adapter_id);
    request.set_file(info.name());
    request.set_offset(have);
    auto reader = stub.DownloadAdapter(context.get(), request);
    qwha::v1::Chunk chunk;
    absl::Status local;
    while (local.ok() && reader->Read(&chunk)) {
      if (chunk.has_file() &&
          (chunk.file().size() != info.size() || chunk.file().sha256() != info.sha256())) {
        local = absl::DataLossError(absl::StrCat("server sent ", info.name(), " as ",
                                                 chunk.file().size(), " bytes, sha256 ",
                                                 chunk.file().sha256(), "; the adapter lists ",
                                                 info.size(), " bytes, sha256 ", info.sha256()));
      } else if (chunk.offset() != have) {
        local =
            absl::DataLossError(absl::StrCat("server sent bytes of ", info.name(), " at offset ",
                                             chunk.offset(), ", expected ", have));
      } else if (have + static_cast<int64_t>(chunk.data().size()) > info.size()) {
        local = absl::DataLossError(
            absl::StrCat("server sent more than the ", info.size(), " bytes of ", info.name()));
      } else {
        local = WriteAll(fd, chunk.data(), part);
        if (local.ok()) {
          have += static_cast<int64_t>(chunk.data().size());
          report(have);
        }
      }
    }
    if (!local.ok()) context->TryCancel();
    grpc::Status status = reader->Finish();
    if (!local.ok()) {
      failure = local;
      break;
    }
    if (have == info.size()) break;
    if (!status.ok() && !Retryable(status.error_code())) {
      failure = FromGrpc(status);
      break;
    }
    failure = status.ok()
                  ? absl::UnavailableError(absl::StrCat(
                        "download of ", info.name(), " ended at byte ", have, " of ", info.size()))
                  : FromGrpc(status);
    tries_without_progress = have > before ? 0 : tries_without_progress + 1;
    if (tries_without_progress >= kMaxTriesWithoutProgress) break;
    if (tries_without_progress > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250 << tries_without_progress));
    }
    failure = absl::OkStatus();
  }
  ::close(fd);
  if (!failure.ok()) return failure;  // the .part stays for a later resume

  auto digest = io::Sha256File(part);
  if (!digest.ok()) return digest.status();
  if (digest->second != info.size() || digest->first != info.sha256()) {
    ::unlink(part.c_str());
    return absl::DataLossError(
        absl::StrCat("download of ", info.name(), " to ", dest, " is corrupt: expected ",
                     info.size(), " bytes with sha256 ", info.sha256(), ", got ", digest->second,
                     " bytes with sha256 ", digest->first, "; the partial file was removed"));
  }
  return CommitFile(part, dest);
}

// Refuses names that would escape the destination folder.
absl::Status CheckRelativeName(const std::string& name) {
  if (name.empty() || name[0] == '/') {
    return absl::DataLossError(absl::StrCat("refusing file name \"", name, "\" from the server"));
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return absl::DataLossError(absl::StrCat("refusing file name \"", name, "\" from the server"));
    }
  }
  return absl::OkStatus();
}

struct LocalFile {
  qwha::v1::FileInfo info;  // name relative to the upload, size, sha256
  std::string path;         // where it is read from
};

absl::StatusOr<LocalFile> DescribeFile(const std::string& path, const std::string& name) {
  auto digest = io::Sha256File(path);
  if (!digest.ok()) return digest.status();
  LocalFile file;
  file.info.set_name(name);
  file.info.set_size(digest->second);
  file.info.set_sha256(digest->first);
  file.path = path;
  return file;
}

// Streams the header and then every file's bytes in kChunkBytes pieces.
template <typename Response>
absl::StatusOr<Response> Upload(
    const ClientOptions& options, const std::string& name, const std::vector<LocalFile>& files,
    const ProgressCallback& progress,
    const std::function<std::unique_ptr<grpc::ClientWriter<qwha::v1::UploadChunk>>(
        grpc::ClientContext*, Response*)>& open) {
  int64_t total = 0;
  for (const LocalFile& file : files) total += file.info.size();
  auto context = MakeContext(options, /*unary=*/false);
  Response response;
  auto writer = open(context.get(), &response);
  qwha::v1::UploadChunk header;
  header.mutable_header()->set_name(name);
  for (const LocalFile& file : files) *header.mutable_header()->add_files() = file.info;
  bool stream_ok = writer->Write(header);
  absl::Status local;
  int64_t sent = 0;
  std::string buffer(kChunkBytes, '\0');
  for (const LocalFile& file : files) {
    if (!stream_ok || !local.ok()) break;
    std::ifstream in(file.path, std::ios::binary);
    if (!in) {
      local = absl::NotFoundError(absl::StrCat("cannot open ", file.path));
      break;
    }
    int64_t file_sent = 0;
    while (stream_ok && in) {
      in.read(buffer.data(), kChunkBytes);
      std::streamsize n = in.gcount();
      if (n <= 0) break;
      qwha::v1::UploadChunk chunk;
      chunk.mutable_data()->set_name(file.info.name());
      chunk.mutable_data()->set_data(buffer.data(), static_cast<size_t>(n));
      stream_ok = writer->Write(chunk);
      file_sent += n;
      sent += n;
      if (progress) progress(sent, total);
    }
    if (stream_ok && file_sent != file.info.size()) {
      local =
          absl::AbortedError(absl::StrCat(file.path, " changed while uploading (", file.info.size(),
                                          " bytes when hashed, ", file_sent, " read)"));
    }
  }
  if (!local.ok()) context->TryCancel();
  if (stream_ok) writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!local.ok()) return local;
  if (!status.ok()) return FromGrpc(status);
  return response;
}

// Regular files below `dir` (links followed), skipping names starting with '.'.
absl::StatusOr<std::vector<LocalFile>> ListModelFiles(std::string dir) {
  namespace fs = std::filesystem;
  while (dir.size() > 1 && dir.back() == '/')
    dir.pop_back();  // names relative to "dir", not "dir/"
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, " is not a directory"));
  }
  std::vector<std::pair<std::string, std::string>> found;  // (name, path)
  fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string leaf = it->path().filename().string();
    if (!leaf.empty() && leaf[0] == '.') {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    found.emplace_back(it->path().lexically_relative(dir).generic_string(), it->path().string());
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  if (found.empty()) return absl::InvalidArgumentError(absl::StrCat(dir, " holds no file"));
  std::sort(found.begin(), found.end());
  std::vector<LocalFile> files;
  for (const auto& [name, path] : found) {
    auto file = DescribeFile(path, name);
    if (!file.ok()) return file.status();
    files.push_back(*std::move(file));
  }
  return files;
}

}  // namespace

absl::Status Client::DownloadAdapterFile(const std::string& adapter_id, const std::string& file,
                                         const std::string& dest_path,
                                         const ProgressCallback& progress) {
  auto adapter = GetAdapter(adapter_id);
  if (!adapter.ok()) return adapter.status();
  for (const qwha::v1::FileInfo& info : adapter->files()) {
    if (info.name() != file) continue;
    return DownloadOne(options_, *stubs_->registry, adapter_id, info, dest_path, progress, 0,
                       info.size());
  }
  return absl::NotFoundError(absl::StrCat("adapter ", adapter_id, " has no file \"", file, "\""));
}

absl::StatusOr<qwha::v1::Adapter> Client::PullAdapter(const std::string& id, const std::string& dir,
                                                      const ProgressCallback& progress) {
  auto adapter = GetAdapter(id);
  if (!adapter.ok()) return adapter.status();
  int64_t total = 0;
  for (const qwha::v1::FileInfo& info : adapter->files()) {
    if (auto status = CheckRelativeName(info.name()); !status.ok()) return status;
    total += info.size();
  }
  int64_t base = 0;
  for (const qwha::v1::FileInfo& info : adapter->files()) {
    std::filesystem::path dest = std::filesystem::path(dir) / info.name();
    std::error_code ec;
    std::filesystem::create_directories(dest.parent_path(), ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("cannot create ", dest.parent_path().string(), ": ", ec.message()));
    }
    auto status =
        DownloadOne(options_, *stubs_->registry, id, info, dest.string(), progress, base, total);
    if (!status.ok()) return status;
    base += info.size();
  }
  return adapter;
}

absl::StatusOr<qwha::v1::BaseModel> Client::UploadModel(const std::string& dir,
                                                        const std::string& name,
                                                        const ProgressCallback& progress) {
  auto files = ListModelFiles(dir);
  if (!files.ok()) return files.status();
  auto& stub = *stubs_->registry;
  return Upload<qwha::v1::BaseModel>(
      options_, name, *files, progress,
      [&stub](grpc::ClientContext* context, qwha::v1::BaseModel* response) {
        return stub.UploadModel(context, response);
      });
}

absl::StatusOr<qwha::v1::Dataset> Client::UploadDataset(const std::string& path,
                                                        const std::string& name,
                                                        const ProgressCallback& progress) {
  auto file = DescribeFile(path, std::filesystem::path(path).filename().string());
  if (!file.ok()) return file.status();
  auto& stub = *stubs_->registry;
  return Upload<qwha::v1::Dataset>(
      options_, name, {*std::move(file)}, progress,
      [&stub](grpc::ClientContext* context, qwha::v1::Dataset* response) {
        return stub.UploadDataset(context, response);
      });
}

}  // namespace qwha::client

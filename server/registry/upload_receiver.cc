#include "server/registry/upload_receiver.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "worker/io/sha256.h"

namespace qwha::registry {
namespace {

constexpr size_t kMaxNameBytes = 200;

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

absl::Status ValidateName(std::string_view field, std::string_view name) {
  auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(Absl(field), " '", Absl(name.substr(0, kMaxNameBytes)), "': ", Absl(why)));
  };
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(Absl(field), ": required"));
  if (name.size() > kMaxNameBytes) return invalid("longer than 200 bytes");
  if (name.find('\0') != std::string_view::npos) return invalid("contains a NUL byte");
  if (name.front() == '/') return invalid("must not start with '/'");
  for (absl::string_view part : absl::StrSplit(Absl(name), '/')) {
    if (part == "..") return invalid("must not contain a '..' component");
  }
  return absl::OkStatus();
}

UploadReceiver::UploadReceiver(BlobStore* blobs, std::string kind, int64_t limit, int max_files)
    : blobs_(blobs), kind_(std::move(kind)), limit_(limit), max_files_(max_files) {}

absl::Status UploadReceiver::Header(const v1::UploadHeader& header) {
  if (has_header_) return absl::InvalidArgumentError("header: sent more than once");
  if (absl::Status s = ValidateName("name", header.name()); !s.ok()) return s;
  if (header.files().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.files: ", kind_, " ", header.name(), " declares no files"));
  }
  if (header.files_size() > max_files_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.files: ", header.files_size(), " files; a ", kind_, " has at most ", max_files_));
  }
  std::map<std::string, File> files;  // kept only if the whole header is valid
  int64_t total = 0;
  for (const v1::FileInfo& f : header.files()) {
    if (absl::Status s = ValidateName("file name", f.name()); !s.ok()) return s;
    if (files.count(f.name())) {
      return absl::InvalidArgumentError(absl::StrCat("file ", f.name(), ": declared twice"));
    }
    if (f.size() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("file ", f.name(), ": negative size"));
    }
    std::string sha = absl::AsciiStrToLower(f.sha256());
    if (!sha.empty() && !io::IsSha256Hex(sha)) {
      return absl::InvalidArgumentError(
          absl::StrCat("file ", f.name(), ": sha256 '", f.sha256(), "' is not 64 hex digits"));
    }
    total += f.size();
    if (f.size() > limit_ || total > limit_) {
      return absl::InvalidArgumentError(
          absl::StrCat("file ", f.name(), ": ", kind_, " ", header.name(), " would be ", total,
                       " bytes or more, over the limit of ", limit_, " bytes"));
    }
    files[f.name()].declared = f.size();
    files[f.name()].sha256 = std::move(sha);
  }
  files_ = std::move(files);
  header_ = header;
  has_header_ = true;
  return absl::OkStatus();
}

absl::StatusOr<UploadReceiver::File*> UploadReceiver::Writable(const std::string& name) {
  auto it = files_.find(name);
  if (it == files_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("data for file '", name, "', which the header does not declare"));
  }
  File& file = it->second;
  if (!file.writer) {
    auto writer =
        blobs_->NewWriter(absl::StrCat(kind_, " ", header_.name(), " file ", name), file.declared);
    if (!writer.ok()) return writer.status();
    file.writer = *std::move(writer);
  }
  return &file;
}

absl::Status UploadReceiver::Message(const v1::UploadChunk& chunk) {
  if (chunk.has_header() || !has_header_) {
    return chunk.has_header() ? Header(chunk.header())
                              : absl::InvalidArgumentError(
                                    "header: the first message must be "
                                    "the upload header");
  }
  const v1::FileData& data = chunk.data();
  auto file = Writable(data.name());
  if (!file.ok()) return file.status();
  const int64_t size = static_cast<int64_t>(data.data().size());
  if ((*file)->writer->size() + size > (*file)->declared) {
    return absl::InvalidArgumentError(absl::StrCat("file ", data.name(), ": more than the ",
                                                   (*file)->declared, " bytes declared"));
  }
  if (received_ + size > limit_) {  // unreachable while declared sizes are checked; kept as a guard
    return absl::InvalidArgumentError(
        absl::StrCat("file ", data.name(), ": over the limit of ", limit_, " bytes"));
  }
  if (absl::Status s = (*file)->writer->Append(data.data()); !s.ok()) return s;
  received_ += size;
  if (observer_) return observer_(data.name(), data.data());
  return absl::OkStatus();
}

absl::Status UploadReceiver::CheckComplete() {
  if (!has_header_) return absl::InvalidArgumentError("header: missing (the stream was empty)");
  for (const v1::FileInfo& f : header_.files()) {
    const File& file = files_.at(f.name());
    const int64_t got = file.writer ? file.writer->size() : 0;
    if (got != file.declared) {
      return absl::InvalidArgumentError(absl::StrCat(
          "file ", f.name(), ": received ", got, " bytes, the header declared ", file.declared));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::FileInfo>> UploadReceiver::Commit(
    std::vector<std::string>* committed) {
  if (absl::Status s = CheckComplete(); !s.ok()) return s;
  std::vector<v1::FileInfo> out;
  for (const v1::FileInfo& f : header_.files()) {
    auto file = Writable(f.name());  // an empty file has no writer yet
    if (!file.ok()) return file.status();
    auto info = (*file)->writer->Commit((*file)->sha256, (*file)->declared);
    if (!info.ok()) {
      // A mismatch is the client's mistake, not corruption here.
      if (info.status().code() == absl::StatusCode::kDataLoss) {
        return absl::InvalidArgumentError(info.status().message());
      }
      return info.status();
    }
    committed->push_back(info->sha256);
    v1::FileInfo& stored = out.emplace_back();
    stored.set_name(f.name());
    stored.set_size(info->size);
    stored.set_sha256(info->sha256);
  }
  return out;
}

}  // namespace qwha::registry

#include "worker/serve/registry_source.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/api/auth.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"

namespace qwha::serve {
namespace {

const char* const kServingFiles[] = {"adapter.safetensors", "adapter_config.json"};

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

}  // namespace

RegistryAdapterSource::RegistryAdapterSource(std::shared_ptr<grpc::Channel> channel,
                                             std::string token, std::string work_dir)
    : stub_(v1::RegistryService::NewStub(std::move(channel))),
      token_(std::move(token)),
      work_dir_(std::move(work_dir)) {}

std::unique_ptr<grpc::ClientContext> RegistryAdapterSource::Context() const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  api::AddToken(context.get(), token_);
  return context;
}

absl::StatusOr<AdapterDescription> RegistryAdapterSource::Describe(const std::string& adapter_id) {
  v1::GetAdapterRequest request;
  request.set_id(adapter_id);
  v1::Adapter adapter;
  auto context = Context();
  grpc::Status status = stub_->GetAdapter(context.get(), request, &adapter);
  if (!status.ok()) return FromGrpc(status, absl::StrCat("registry adapter '", adapter_id, "'"));
  std::vector<std::pair<std::string, std::string>> files;
  for (const v1::FileInfo& f : adapter.files()) files.emplace_back(f.name(), f.sha256());
  if (io::Sha256OfFileSet(files) != adapter.digest()) {
    return absl::DataLossError(absl::StrCat("registry adapter '", adapter_id,
                                            "': its file list does not hash to its digest ",
                                            adapter.digest()));
  }
  AdapterDescription out;
  out.adapter_id = adapter.id();
  out.digest = adapter.digest();
  out.adapter_type = adapter.adapter().type().empty() ? "qwha" : adapter.adapter().type();
  out.base_model_digest = adapter.base_model_digest();
  return out;
}

absl::StatusOr<FetchedAdapter> RegistryAdapterSource::Fetch(const AdapterDescription& description) {
  // The file list again, so sizes and sha256s come with the digest they hash to.
  v1::GetAdapterRequest get;
  get.set_id(description.adapter_id);
  v1::Adapter adapter;
  auto get_context = Context();
  grpc::Status status = stub_->GetAdapter(get_context.get(), get, &adapter);
  if (!status.ok())
    return FromGrpc(status, absl::StrCat("registry adapter '", description.adapter_id, "'"));
  if (adapter.digest() != description.digest) {
    return absl::DataLossError(absl::StrCat("registry adapter '", description.adapter_id,
                                            "' changed digest from ", description.digest, " to ",
                                            adapter.digest()));
  }
  static std::atomic<uint64_t> counter{0};
  const std::string dir =
      absl::StrCat(work_dir_, "/", description.adapter_id, ".", ::getpid(), ".", counter++);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  auto fail = [&](absl::Status st) {
    (void)io::RemoveTree(dir);
    return st;
  };
  for (const char* name : kServingFiles) {
    const v1::FileInfo* info = nullptr;
    for (const v1::FileInfo& f : adapter.files()) {
      if (f.name() == name) info = &f;
    }
    if (info == nullptr) {
      return fail(absl::NotFoundError(
          absl::StrCat("registry adapter '", description.adapter_id, "' has no file ", name)));
    }
    v1::DownloadRequest request;
    request.set_adapter_id(description.adapter_id);
    request.set_file(name);
    auto context = Context();
    auto reader = stub_->DownloadAdapter(context.get(), request);
    std::string data;
    v1::Chunk chunk;
    while (reader->Read(&chunk)) {
      if (chunk.offset() != static_cast<int64_t>(data.size()) ||
          data.size() > static_cast<size_t>(info->size())) {
        context->TryCancel();
        break;
      }
      data += chunk.data();
    }
    status = reader->Finish();
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
      return fail(FromGrpc(status, absl::StrCat("download ", description.adapter_id, "/", name)));
    }
    const std::string sha = io::Sha256Hex(data);
    if (static_cast<int64_t>(data.size()) != info->size() || sha != info->sha256()) {
      return fail(absl::DataLossError(
          absl::StrCat("adapter '", description.adapter_id, "' file ", name, ": got ", data.size(),
                       " bytes with sha256 ", sha, ", the registry records ", info->size(),
                       " bytes with sha256 ", info->sha256(),
                       " (corrupt blob or transfer); nothing was loaded")));
    }
    if (absl::Status st = io::WriteFileAtomically(dir + "/" + name, data); !st.ok())
      return fail(st);
  }
  return FetchedAdapter{dir, true};
}

}  // namespace qwha::serve

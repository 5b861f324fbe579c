#include "server/registry/test_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "server/store/schema.h"
#include "worker/io/atomic_file.h"

namespace qwha::registry::testing {

std::string DemoDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return srcdir != nullptr ? absl::StrCat(srcdir, "/qwha/tests/fixtures/demo")
                           : std::string("tests/fixtures/demo");
}

std::string FreshDir(const std::string& tag) {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/", tag, "_", ::getpid(), "_",
                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  EXPECT_TRUE(io::RemoveTree(dir).ok());
  EXPECT_EQ(::mkdir(dir.c_str(), 0755), 0) << dir;
  return dir;
}

RegistryHarness::RegistryHarness(RegistryOptions options)
    : dir_(FreshDir("registry")), metrics_(std::make_shared<prometheus::Registry>()) {
  auto blobs = BlobStore::Open(dir_ + "/blobs");
  EXPECT_TRUE(blobs.ok()) << blobs.status();
  blobs_ = *std::move(blobs);
  auto db = store::Db::Open(dir_ + "/store.db");
  EXPECT_TRUE(db.ok()) << db.status();
  db_ = *std::move(db);
  EXPECT_TRUE(store::EnsureSchema(*db_).ok());
  registry_ = std::make_unique<RegistryStore>(db_.get(), blobs_.get());
  auto auth = [](grpc::ServerContext* context) -> absl::Status {
    auto it = context->client_metadata().find("authorization");
    if (it == context->client_metadata().end() ||
        std::string(it->second.data(), it->second.size()) != absl::StrCat("Bearer ", kToken)) {
      return absl::UnauthenticatedError("authorization: missing or wrong bearer token");
    }
    return absl::OkStatus();
  };
  servers_ = std::make_unique<InferenceServerDirectory>(db_.get(), InferenceServerOptions());
  service_ = std::make_unique<RegistryServiceImpl>(registry_.get(), std::move(options), auth,
                                                   metrics_, servers_.get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  EXPECT_GT(port, 0);
  stub_ = v1::RegistryService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
}

RegistryHarness::~RegistryHarness() {
  if (server_) server_->Shutdown();
}

std::unique_ptr<grpc::ClientContext> RegistryHarness::Context(bool with_token) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (with_token) context->AddMetadata("authorization", absl::StrCat("Bearer ", kToken));
  return context;
}

absl::StatusOr<v1::Adapter> RegistryHarness::AddAdapter(
    const std::string& job_id, const std::map<std::string, std::string>& files) {
  v1::Adapter adapter;
  adapter.set_job_id(job_id);
  adapter.set_base_model_id("m-base");
  // The pattern for every writer: guard, commit blobs, commit the row.
  BlobWriteGuard guard = registry_->GuardBlobWrites();
  for (const auto& [name, content] : files) {
    auto writer = blobs_->NewWriter(name, INT64_MAX);
    if (!writer.ok()) return writer.status();
    if (absl::Status s = (*writer)->Append(content); !s.ok()) return s;
    auto info = (*writer)->Commit();
    if (!info.ok()) return info.status();
    v1::FileInfo* f = adapter.add_files();
    f->set_name(name);
    f->set_sha256(info->sha256);
    f->set_size(info->size);
  }
  auto tx = db_->Begin();
  if (!tx.ok()) return tx.status();
  auto inserted = registry_->InsertAdapter(**tx, adapter);
  if (!inserted.ok()) return inserted.status();
  if (absl::Status s = (*tx)->Commit(); !s.ok()) return s;
  return inserted;
}

}  // namespace qwha::registry::testing

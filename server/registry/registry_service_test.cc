// RegistryService over a real gRPC server: base models (by path and by
// upload) and datasets, on the demo model and fine-tuning set of
// tests/fixtures/demo. Every refused request must leave nothing behind: no
// row and no blob.
#include "server/registry/registry_service.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "server/registry/test_util.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"

namespace qwha::registry {
namespace {

using testing::DemoDir;
using testing::FreshDir;
using testing::RegistryHarness;
using testing::Upload;

const char* const kModelFiles[] = {"config.json", "generation_config.json", "model.safetensors",
                                   "tokenizer.json", "tokenizer_config.json"};

std::map<std::string, std::string> DemoModel() {
  std::map<std::string, std::string> files;
  for (const char* name : kModelFiles) {
    auto content = io::ReadFile(absl::StrCat(DemoDir(), "/model/", name));
    EXPECT_TRUE(content.ok()) << content.status();
    files[name] = *content;
  }
  return files;
}

void WriteDir(const std::string& dir, const std::map<std::string, std::string>& files) {
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << dir;
  for (const auto& [name, content] : files) {
    ASSERT_TRUE(io::WriteFileAtomically(absl::StrCat(dir, "/", name), content).ok());
  }
}

v1::UploadHeader HeaderFor(const std::string& name, const std::map<std::string, std::string>& files,
                           bool with_sha) {
  v1::UploadHeader header;
  header.set_name(name);
  for (const auto& [file, content] : files) {
    v1::FileInfo* f = header.add_files();
    f->set_name(file);
    f->set_size(static_cast<int64_t>(content.size()));
    if (with_sha) f->set_sha256(io::Sha256Hex(content));
  }
  return header;
}

void ExpectInvalid(const grpc::Status& status, const std::string& needle) {
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find(needle), std::string::npos) << status.error_message();
}

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = FreshDir("models");
    root_ = base_ + "/root";
    model_ = DemoModel();
    ASSERT_EQ(::mkdir(root_.c_str(), 0755), 0);
    WriteDir(root_ + "/tiny", model_);
    model_["notes.txt"] = "skipped";  // not a model file
    ASSERT_TRUE(io::WriteFileAtomically(root_ + "/tiny/notes.txt", "skipped").ok());
    WriteDir(base_ + "/outside", DemoModel());
    RegistryOptions options;
    options.model_root = root_;
    harness_ = std::make_unique<RegistryHarness>(options);
  }

  grpc::Status Register(const std::string& name, const std::string& path, v1::BaseModel* out) {
    v1::RegisterModelRequest request;
    request.set_name(name);
    request.set_path(path);
    return harness_->stub().RegisterModel(harness_->Context().get(), request, out);
  }

  void ExpectNothingStored() {
    v1::ListModelsResponse list;
    ASSERT_TRUE(harness_->stub().ListModels(harness_->Context().get(), {}, &list).ok());
    EXPECT_EQ(list.models_size(), 0);
    EXPECT_EQ(harness_->blobs().TotalBytes(), 0);
  }

  std::string base_, root_;
  std::map<std::string, std::string> model_;
  std::unique_ptr<RegistryHarness> harness_;
};

TEST_F(ModelTest, RegisterUnderRootImportsTheModelFiles) {
  v1::BaseModel model;
  grpc::Status status = Register("demo", "tiny", &model);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(model.name(), "demo");
  EXPECT_EQ(model.source_path().substr(model.source_path().size() - 10), "/root/tiny");
  ASSERT_EQ(model.files_size(), 5);  // notes.txt skipped
  std::vector<std::pair<std::string, std::string>> digests;
  for (const v1::FileInfo& f : model.files()) {
    const std::string& content = model_.at(f.name());
    EXPECT_EQ(f.sha256(), io::Sha256Hex(content)) << f.name();
    EXPECT_EQ(f.size(), static_cast<int64_t>(content.size()));
    EXPECT_EQ(*io::ReadFile(*harness_->blobs().PathOf(f.sha256())), content);
    digests.emplace_back(f.name(), f.sha256());
  }
  EXPECT_EQ(model.digest(), io::Sha256OfFileSet(digests));

  v1::BaseModel again;  // by absolute path: same content, same digest, new id
  ASSERT_TRUE(Register("demo-2", root_ + "/tiny/", &again).ok());
  EXPECT_EQ(again.digest(), model.digest());
  EXPECT_NE(again.id(), model.id());
  v1::GetModelRequest get;
  get.set_id(model.id());
  v1::BaseModel got;
  ASSERT_TRUE(harness_->stub().GetModel(harness_->Context().get(), get, &got).ok());
  EXPECT_EQ(got.SerializeAsString(), model.SerializeAsString());
  v1::ListModelsResponse list;
  ASSERT_TRUE(harness_->stub().ListModels(harness_->Context().get(), {}, &list).ok());
  ASSERT_EQ(list.models_size(), 2);
  EXPECT_EQ(list.models(0).id(), again.id());  // newest first

  // Deleting one keeps the shared blobs; deleting both removes them.
  for (const std::string& id : {model.id(), again.id()}) {
    v1::DeleteModelRequest del;
    del.set_id(id);
    v1::DeleteResponse done;
    ASSERT_TRUE(harness_->stub().DeleteModel(harness_->Context().get(), del, &done).ok());
    EXPECT_EQ(harness_->blobs().Contains(model.files(0).sha256()), id == model.id());
  }
  ExpectNothingStored();
}

TEST_F(ModelTest, PathsOutsideTheRootAreRefusedAndNothingIsStored) {
  ASSERT_EQ(::symlink((base_ + "/outside").c_str(), (root_ + "/escape").c_str()), 0);
  ASSERT_EQ(::mkdir((root_ + "/sneaky").c_str(), 0755), 0);
  ASSERT_TRUE(io::WriteFileAtomically(root_ + "/sneaky/config.json", "{}").ok());
  ASSERT_EQ(::symlink((base_ + "/outside/model.safetensors").c_str(),
                      (root_ + "/sneaky/model.safetensors").c_str()),
            0);
  v1::BaseModel model;
  for (const std::string& path :
       {base_ + "/outside", std::string("escape"), std::string("tiny/../../outside"),
        root_ + "/../outside", std::string("/etc")}) {
    ExpectInvalid(Register("m", path, &model), "path");
    ExpectInvalid(Register("m", path, &model), "outside the model root");
  }
  ExpectInvalid(Register("m", "sneaky", &model), "model.safetensors links outside");
  ExpectInvalid(Register("m", "missing", &model), "no such directory");
  ExpectInvalid(Register("m", "", &model), "path");
  ExpectInvalid(Register("", "tiny", &model), "name");
  ExpectInvalid(Register("../m", "tiny", &model), "name");
  ASSERT_TRUE(io::RemoveTree(root_ + "/tiny/config.json").ok());
  ExpectInvalid(Register("m", "tiny", &model), "config.json");
  ExpectNothingStored();

  // Unauthenticated calls stop at the hook.
  v1::RegisterModelRequest request;
  EXPECT_EQ(
      harness_->stub().RegisterModel(harness_->Context(false).get(), request, &model).error_code(),
      grpc::StatusCode::UNAUTHENTICATED);
  // A server without a model root refuses registration by path.
  RegistryServiceImpl no_root(&harness_->store(), RegistryOptions{}, nullptr);
  grpc::ServerContext context;
  request.set_name("m");
  request.set_path(root_ + "/tiny");
  EXPECT_EQ(no_root.RegisterModel(&context, &request, &model).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ModelTest, UploadModelVerifiesFilesAndRefusesBusyDeletes) {
  std::map<std::string, std::string> files = DemoModel();
  // grpc::ClientContext must outlive the call: keep one per upload.
  auto upload = [&](const v1::UploadHeader& header, const std::map<std::string, std::string>& data,
                    v1::BaseModel* response) {
    auto context = harness_->Context();
    return Upload([&](v1::BaseModel* r) { return harness_->stub().UploadModel(context.get(), r); },
                  header, data, response, 1 << 20);
  };
  v1::BaseModel model;
  std::map<std::string, std::string> no_config = files;
  no_config.erase("config.json");
  ExpectInvalid(upload(HeaderFor("m", no_config, false), no_config, &model), "config.json");
  std::map<std::string, std::string> wrong = files;
  wrong["model.safetensors"][1000] ^= 1;  // differs from the declared sha256
  ExpectInvalid(upload(HeaderFor("m", files, true), wrong, &model), "model.safetensors");
  std::map<std::string, std::string> short_data = files;
  short_data["tokenizer.json"].resize(100);
  ExpectInvalid(upload(HeaderFor("m", files, false), short_data, &model), "tokenizer.json");
  ExpectNothingStored();

  grpc::Status status = upload(HeaderFor("uploaded", files, true), files, &model);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(model.files_size(), 5);
  EXPECT_TRUE(model.source_path().empty());
  EXPECT_EQ(*io::ReadFile(*harness_->blobs().PathOf(io::Sha256Hex(files["model.safetensors"]))),
            files["model.safetensors"]);

  ASSERT_TRUE(harness_->db()
                  .Exec("INSERT INTO jobs(id, seq, spec, state, priority, base_model_id, "
                        "min_memory, require_gpu, max_attempts, timeout_seconds, created_at, "
                        "queued_at, updated_at) VALUES(?, 1, ?, 1, 0, ?, 0, 0, 3, 0, 0, 0, 0)",
                        {"j-1", "", model.id()})
                  .ok());
  v1::DeleteModelRequest del;
  del.set_id(model.id());
  v1::DeleteResponse done;
  grpc::Status busy = harness_->stub().DeleteModel(harness_->Context().get(), del, &done);
  EXPECT_EQ(busy.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << busy.error_message();
  EXPECT_NE(busy.error_message().find("j-1"), std::string::npos);
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto train = io::ReadFile(DemoDir() + "/data/train.jsonl");
    ASSERT_TRUE(train.ok()) << train.status();
    train_ = *train;
    RegistryOptions options;
    options.max_dataset_bytes = 400000;  // train.jsonl is 312279 bytes
    harness_ = std::make_unique<RegistryHarness>(options);
  }
  grpc::Status UploadDataset(const v1::UploadHeader& header, const std::string& content,
                             v1::Dataset* out) {
    auto context = harness_->Context();
    return Upload([&](v1::Dataset* r) { return harness_->stub().UploadDataset(context.get(), r); },
                  header, {{header.files(0).name(), content}}, out);
  }
  void ExpectNothingStored() {
    v1::ListDatasetsResponse list;
    ASSERT_TRUE(harness_->stub().ListDatasets(harness_->Context().get(), {}, &list).ok());
    EXPECT_EQ(list.datasets_size(), 0);
    EXPECT_EQ(harness_->blobs().TotalBytes(), 0);
  }
  std::string train_;
  std::unique_ptr<RegistryHarness> harness_;
};

TEST_F(DatasetTest, UploadValidatesCountsAndDetectsTheForm) {
  v1::Dataset dataset;
  grpc::Status status =
      UploadDataset(HeaderFor("kjv-train", {{"train.jsonl", train_}}, true), train_, &dataset);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(dataset.id().substr(0, 2), "d-");
  EXPECT_EQ(dataset.name(), "kjv-train");
  EXPECT_EQ(dataset.records(), 2000);
  EXPECT_EQ(dataset.format(), "prompt_completion");
  EXPECT_EQ(dataset.file().sha256(), io::Sha256Hex(train_));
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(harness_->stub().ListDatasets(harness_->Context().get(), {}, &list).ok());
  ASSERT_EQ(list.datasets_size(), 1);
  EXPECT_EQ(list.datasets(0).SerializeAsString(), dataset.SerializeAsString());

  v1::DeleteDatasetRequest del;
  del.set_id(dataset.id());
  v1::DeleteResponse done;
  ASSERT_TRUE(harness_->stub().DeleteDataset(harness_->Context().get(), del, &done).ok());
  EXPECT_EQ(harness_->stub().DeleteDataset(harness_->Context().get(), del, &done).error_code(),
            grpc::StatusCode::NOT_FOUND);
  ExpectNothingStored();
}

TEST_F(DatasetTest, MalformedOversizeAndMisdeclaredUploadsStoreNothing) {
  size_t at = 0;  // break line 1234
  for (int line = 1; line < 1234; ++line) at = train_.find('\n', at) + 1;
  std::string bad = train_.substr(0, at) + "{\"prompt\": \"x\"}\n" + train_.substr(at);
  v1::Dataset dataset;
  ExpectInvalid(UploadDataset(HeaderFor("bad", {{"train.jsonl", bad}}, false), bad, &dataset),
                "dataset bad line 1234: missing field \"completion\"");

  std::string big = train_ + train_;  // 624558 bytes > 400000
  grpc::Status over = UploadDataset(HeaderFor("big", {{"big.jsonl", big}}, false), big, &dataset);
  ExpectInvalid(over, "big.jsonl");
  ExpectInvalid(over, "limit of 400000 bytes");

  v1::UploadHeader lying = HeaderFor("lying", {{"train.jsonl", train_}}, false);
  lying.mutable_files(0)->set_size(1000);  // then sends all of it
  ExpectInvalid(UploadDataset(lying, train_, &dataset), "train.jsonl: more than the 1000 bytes");

  ExpectInvalid(
      UploadDataset(HeaderFor("two", {{"a.jsonl", "x"}, {"b.jsonl", "y"}}, false), "x", &dataset),
      "header.files");
  v1::UploadHeader wrong_sha = HeaderFor("sha", {{"train.jsonl", train_}}, true);
  wrong_sha.mutable_files(0)->set_sha256(io::Sha256Hex("something else"));
  ExpectInvalid(UploadDataset(wrong_sha, train_, &dataset), "train.jsonl");

  // No header at all.
  auto context = harness_->Context();
  auto writer = harness_->stub().UploadDataset(context.get(), &dataset);
  v1::UploadChunk data;
  data.mutable_data()->set_name("train.jsonl");
  data.mutable_data()->set_data("{\"text\": \"x\"}\n");
  writer->Write(data);
  writer->WritesDone();
  ExpectInvalid(writer->Finish(), "header");
  ExpectNothingStored();
}

TEST(InferenceServerTest, RegistrationIsValidatedUpsertedAndListedWithLiveness) {
  RegistryHarness h({});
  const std::string digest(64, 'a');
  auto call = [&](const std::string& address, const std::string& base,
                  v1::RegisterInferenceServerResponse* response = nullptr) {
    v1::RegisterInferenceServerRequest request;
    request.set_address(address);
    request.set_base_model_digest(base);
    request.mutable_quantization()->set_bits(2);
    v1::RegisterInferenceServerResponse ignored;
    return h.stub().RegisterInferenceServer(h.Context().get(), request,
                                            response ? response : &ignored);
  };
  struct Bad {
    std::string address, digest, field;
  };
  for (const Bad& bad : std::vector<Bad>{{"", digest, "address"},
                                         {"127.0.0.1", digest, "address"},
                                         {"127.0.0.1:0", digest, "address"},
                                         {"127.0.0.1:70000", digest, "address"},
                                         {":7430", digest, "address"},
                                         {"::1:7430", digest, "address"},
                                         {"host name:7430", digest, "address"},
                                         {"127.0.0.1:7430", "", "base_model_digest"},
                                         {"127.0.0.1:7430", "ABC", "base_model_digest"}}) {
    grpc::Status s = call(bad.address, bad.digest);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad.address;
    EXPECT_EQ(s.error_message().rfind(bad.field + ":", 0), 0u) << s.error_message();
  }
  v1::ListInferenceServersResponse none;
  ASSERT_TRUE(h.stub()
                  .ListInferenceServers(h.Context().get(), v1::ListInferenceServersRequest(), &none)
                  .ok());
  EXPECT_EQ(none.servers_size(), 0) << "a refused registration stored something";

  v1::RegisterInferenceServerResponse response;
  ASSERT_TRUE(call("127.0.0.1:7430", digest, &response).ok());
  EXPECT_EQ(response.heartbeat_seconds(), 10);
  EXPECT_EQ(response.ttl_seconds(), 30);
  ASSERT_TRUE(call("[::1]:7431", std::string(64, 'b')).ok());
  // Registering again is the heartbeat: one row per address, the new digest wins.
  ASSERT_TRUE(call("127.0.0.1:7430", digest).ok());
  v1::ListInferenceServersRequest of_a;
  of_a.set_base_model_digest(digest);
  v1::ListInferenceServersResponse listed;
  ASSERT_TRUE(h.stub().ListInferenceServers(h.Context().get(), of_a, &listed).ok());
  ASSERT_EQ(listed.servers_size(), 1);
  EXPECT_EQ(listed.servers(0).address(), "127.0.0.1:7430");
  EXPECT_EQ(listed.servers(0).quantization().bits(), 2);
  EXPECT_TRUE(listed.servers(0).live());

  // Past the TTL a server is listed but not live.
  ASSERT_TRUE(h.db()
                  .Exec("UPDATE inference_servers SET last_seen = last_seen - 31 WHERE address = ?",
                        {std::string("127.0.0.1:7430")})
                  .ok());
  auto live = h.servers().Live(digest);
  ASSERT_TRUE(live.ok());
  EXPECT_TRUE(live->empty());
  listed.Clear();
  ASSERT_TRUE(h.stub().ListInferenceServers(h.Context().get(), of_a, &listed).ok());
  ASSERT_EQ(listed.servers_size(), 1);
  EXPECT_FALSE(listed.servers(0).live());
  EXPECT_EQ(*h.servers().CountLive(), 1);

  // The token is checked like every other registry call.
  v1::RegisterInferenceServerRequest request;
  v1::RegisterInferenceServerResponse ignored;
  EXPECT_EQ(h.stub()
                .RegisterInferenceServer(h.Context(/*with_token=*/false).get(), request, &ignored)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace qwha::registry

// The fixture of serve_e2e_test: one scheduler, one worker and three trained
// adapters (two QWHA, one LoRA on the demo model) for the whole suite, a
// qwha-serve process per test, and helpers that drive it over gRPC.
// Thread safety: Generate, Load and List may be called from several threads
// of one test; the rest belongs to the test thread.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "qwha/v1/inference.grpc.pb.h"
#include "server/api/tls.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/merged_reference.h"

namespace qwha::e2e {

struct TrainedAdapters {
  std::string qwha1, qwha2, lora;
};

// One scheduler, worker and three finished jobs for the whole suite.
class ServeE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    harness_ = new Harness("serve");
    Harness& h = *harness_;
    ASSERT_TRUE(h.StartScheduler().ok());
    auto model = h.RegisterDemoModel();
    ASSERT_TRUE(model.ok()) << model.status();
    auto dataset = h.UploadDataset(Runfile("tests/fixtures/demo/data/train.jsonl"), "kjv");
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    ASSERT_TRUE(h.StartWorker("w1").ok());
    std::vector<std::pair<std::string, uint64_t>> specs = {{"qwha", 1}, {"qwha", 2}, {"lora", 1}};
    std::vector<std::string> jobs;
    for (const auto& [type, seed] : specs) {
      v1::JobSpec spec = h.SmallJob(*model, *dataset, 4);
      spec.mutable_adapter()->set_type(type);
      spec.mutable_training()->set_seed(seed);
      if (type == "lora") spec.mutable_training()->set_learning_rate(0.05);
      grpc::ClientContext context;
      v1::SubmitJobRequest request;
      *request.mutable_spec() = spec;
      v1::Job job;
      ASSERT_TRUE(h.jobs().SubmitJob(&context, request, &job).ok());
      jobs.push_back(job.id());
    }
    std::vector<std::string> ids;
    for (const std::string& id : jobs) {
      auto done = h.WaitFinished(id, 600);
      ASSERT_TRUE(done.ok()) << done.status();
      ASSERT_EQ(done->state(), v1::SUCCEEDED) << done->error();
      ids.push_back(done->adapter_id());
    }
    adapters_ = {ids[0], ids[1], ids[2]};
    model_id_ = *model;
    dataset_id_ = *dataset;
  }
  static void TearDownTestSuite() { delete harness_; }

  Harness& h() { return *harness_; }
  std::string ModelDir() { return h().dir() + "/models/demo"; }

  // Starts qwha-serve against the harness's registry (2-bit RTN, as SmallJob);
  // the fixture's stub trusts the PEM roots `tls_ca` ("": plaintext).
  void StartServer(const std::vector<std::string>& extra = {}, const std::string& tls_ca = "") {
    const std::string ports = h().dir() + "/serve.ports";
    ::unlink(ports.c_str());
    std::vector<std::string> argv = {Runfile("worker/serve/qwha-serve"),
                                     "--model",
                                     ModelDir(),
                                     "--bits",
                                     "2",
                                     "--group-size",
                                     "64",
                                     "--registry",
                                     h().address(),
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--http",
                                     "127.0.0.1:0",
                                     "--port-file",
                                     ports,
                                     "--max-batch",
                                     "8",
                                     "--max-seq-len",
                                     "512"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto process = Process::Start(argv, absl::StrCat(h().dir(), "/serve.", starts_++, ".log"));
    ASSERT_TRUE(process.ok());
    server_ = std::move(*process);
    for (int i = 0; i < 600 && grpc_port_ == 0; ++i) {
      std::ifstream in(ports);
      if (in >> grpc_port_ >> http_port_) break;
      ASSERT_TRUE(server_->Running()) << "qwha-serve exited; see " << server_->log_path();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_NE(grpc_port_, 0) << "qwha-serve did not start; see " << server_->log_path();
    auto credentials = api::ChannelCredentials(tls_ca);
    ASSERT_TRUE(credentials.ok()) << credentials.status();
    stub_ = v1::InferenceService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_), *credentials));
  }
  void TearDown() override {
    if (server_) {
      server_->Signal(SIGTERM);
      EXPECT_GE(server_->Wait(15000), 0) << "qwha-serve did not stop on SIGTERM";
    }
  }
  std::string Server() { return absl::StrCat("127.0.0.1:", grpc_port_); }

  grpc::Status Load(const std::string& id, const std::string& name,
                    v1::LoadedAdapter* out = nullptr) {
    grpc::ClientContext context;
    v1::LoadAdapterRequest request;
    request.set_adapter_id(id);
    request.set_name(name);
    v1::LoadedAdapter loaded;
    grpc::Status status = stub_->LoadAdapter(&context, request, out ? out : &loaded);
    return status;
  }

  v1::ListLoadedAdaptersResponse List() {
    grpc::ClientContext context;
    v1::ListLoadedAdaptersResponse response;
    EXPECT_TRUE(stub_->ListAdapters(&context, v1::ListLoadedAdaptersRequest(), &response).ok());
    return response;
  }

  struct Result {
    grpc::Status status;
    std::vector<int64_t> tokens;
    std::string text;
    std::set<std::string> digests;
    v1::GenerateResponse last;
  };
  Result Generate(const v1::GenerateRequest& request,
                  const std::function<void(const v1::GenerateResponse&)>& on_message = nullptr) {
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, request);
    Result r;
    v1::GenerateResponse message;
    while (reader->Read(&message)) {
      r.tokens.insert(r.tokens.end(), message.token_ids().begin(), message.token_ids().end());
      r.text += message.text();
      r.digests.insert(message.adapter_digest());
      r.last = message;
      if (on_message) on_message(message);
    }
    r.status = reader->Finish();
    return r;
  }

  // The registry's digest of an adapter.
  std::string Digest(const std::string& id) {
    grpc::ClientContext context;
    v1::GetAdapterRequest request;
    request.set_id(id);
    v1::Adapter adapter;
    EXPECT_TRUE(h().registry().GetAdapter(&context, request, &adapter).ok());
    return adapter.digest();
  }

  // Greedy tokens of the demo model, quantized as the job did, with the
  // adapter `id` (pulled with qwhactl) merged into the weights.
  std::vector<int64_t> MergedReference(const std::string& id, const std::vector<int64_t>& prompt,
                                       int64_t n) {
    const std::string dir = h().dir() + "/pulled/" + id;
    if (!std::ifstream(dir + "/adapter.safetensors")) {
      auto [code, out] = h().Qwhactl({"adapters", "pull", id, "--dir", dir});
      EXPECT_EQ(code, 0) << out;
    }
    auto tokens = MergedGreedy(ModelDir(), dir, 2, 64, prompt, n);
    EXPECT_TRUE(tokens.ok()) << tokens.status();
    return tokens.ok() ? *tokens : std::vector<int64_t>();
  }

  static v1::GenerateRequest Request(const std::vector<int64_t>& prompt, const std::string& adapter,
                                     int n) {
    v1::GenerateRequest r;
    for (int64_t t : prompt) r.add_prompt_token_ids(static_cast<int32_t>(t));
    r.set_adapter(adapter);
    r.set_max_new_tokens(n);
    r.set_ignore_eos(true);
    return r;
  }

  inline static Harness* harness_ = nullptr;
  inline static TrainedAdapters adapters_;
  inline static std::string model_id_, dataset_id_;  // the demo model and dataset
  std::unique_ptr<Process> server_;
  std::unique_ptr<v1::InferenceService::Stub> stub_;
  int grpc_port_ = 0, http_port_ = 0, starts_ = 0;
};

}  // namespace qwha::e2e

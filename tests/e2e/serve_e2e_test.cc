// Inference with hot-loaded adapters, end to end: the real qwha-scheduler and
// qwha-worker train three small adapters on the demo model (two QWHA, one
// LoRA); a real qwha-serve process pulls them from the scheduler's registry
// and serves them, driven over gRPC and qwhactl. Nothing is mocked. The
// reference for every generation is computed here, in process, from the
// pulled adapter files merged into the quantized weights. One test guards the
// API with a token; the last has the scheduler push a new adapter to a
// registered qwha-serve by itself.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "qwha/v1/inference.grpc.pb.h"
#include "server/http/http_get.h"
#include "tests/e2e/serve_fixture.h"
#include "worker/io/atomic_file.h"

namespace qwha::e2e {
namespace {

// Any ids of the demo vocabulary (0 is BOS); text prompts are tested via qwhactl.
const std::vector<int64_t> kPrompt = {0, 1201, 387, 9, 279, 1893, 62, 71, 1095};

TEST_F(ServeE2eTest, LoadedAdaptersGenerateWhatTheirMergedWeightsGenerate) {
  StartServer();
  v1::LoadedAdapter loaded;
  ASSERT_TRUE(Load(adapters_.qwha1, "q", &loaded).ok());
  EXPECT_EQ(loaded.digest(), Digest(adapters_.qwha1));
  EXPECT_FALSE(loaded.cache_hit());
  EXPECT_GT(loaded.memory_bytes(), 0);
  ASSERT_TRUE(Load(adapters_.lora, "l").ok());

  const auto base = Generate(Request(kPrompt, "", 24));
  ASSERT_TRUE(base.status.ok()) << base.status.error_message();
  for (const auto& [name, id] : {std::pair{"q", adapters_.qwha1}, std::pair{"l", adapters_.lora}}) {
    const auto got = Generate(Request(kPrompt, name, 24));
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_EQ(got.tokens, MergedReference(id, kPrompt, 24)) << name;
    EXPECT_EQ(got.digests, std::set<std::string>{Digest(id)});
    EXPECT_EQ(got.last.usage().completion_tokens(), 24);
    EXPECT_EQ(got.last.usage().prompt_tokens(), static_cast<int>(kPrompt.size()));
    EXPECT_EQ(got.last.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_NE(got.tokens, base.tokens) << name << " changed nothing";
  }

  // qwhactl streams the same text the gRPC stream carried.
  v1::GenerateRequest text_request;
  text_request.set_prompt("Genesis 1:1 In the beginning");
  text_request.set_adapter("q");
  text_request.set_max_new_tokens(16);
  const auto via_grpc = Generate(text_request);
  ASSERT_TRUE(via_grpc.status.ok());
  auto [code, output] = h().Qwhactl({"generate", "--server", Server(), "--adapter", "q",
                                     "--max-new-tokens", "16", "Genesis 1:1 In the beginning"});
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find(via_grpc.text), std::string::npos) << output;
  EXPECT_NE(output.find("adapter " + Digest(adapters_.qwha1).substr(0, 12)), std::string::npos)
      << output;
}

TEST_F(ServeE2eTest, InFlightRequestKeepsItsVersionWhenANewOneIsLoadedUnderItsName) {
  StartServer();
  ASSERT_TRUE(Load(adapters_.qwha1, "chat").ok());
  const int kLong = 300;
  std::atomic<bool> first_message{false};
  Result long_run;
  std::thread runner([&] {
    long_run = Generate(Request(kPrompt, "chat", kLong),
                        [&](const v1::GenerateResponse&) { first_message = true; });
  });
  while (!first_message) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  v1::LoadedAdapter replaced;
  ASSERT_TRUE(Load(adapters_.qwha2, "chat", &replaced).ok());
  const auto loaded_at = std::chrono::steady_clock::now();
  const auto fresh = Generate(Request(kPrompt, "chat", 24));
  runner.join();
  const auto finished_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(long_run.status.ok()) << long_run.status.error_message();
  ASSERT_TRUE(fresh.status.ok());
  ASSERT_LT(loaded_at, finished_at);
  ASSERT_LT(fresh.last.usage().total_seconds(), long_run.last.usage().total_seconds());

  EXPECT_EQ(long_run.digests, std::set<std::string>{Digest(adapters_.qwha1)})
      << "the running request saw another adapter version";
  EXPECT_EQ(fresh.digests, std::set<std::string>{Digest(adapters_.qwha2)});
  ASSERT_EQ(long_run.tokens.size(), static_cast<size_t>(kLong));
  EXPECT_EQ(std::vector<int64_t>(long_run.tokens.begin(), long_run.tokens.begin() + 24),
            MergedReference(adapters_.qwha1, kPrompt, 24));
  EXPECT_EQ(fresh.tokens, MergedReference(adapters_.qwha2, kPrompt, 24));
  // The old version left with its request: only the new one is resident.
  const auto listed = List();
  ASSERT_EQ(listed.adapters_size(), 1);
  EXPECT_EQ(listed.adapters(0).digest(), Digest(adapters_.qwha2));
  EXPECT_EQ(listed.memory_used_bytes(), listed.adapters(0).memory_bytes());
}

TEST_F(ServeE2eTest, LoadsAndUnloadsUnderTrafficLoseNoRequestAndUnloadFreesMemory) {
  StartServer();
  ASSERT_EQ(List().memory_used_bytes(), 0);
  ASSERT_TRUE(Load(adapters_.qwha1, "a").ok());
  ASSERT_TRUE(Load(adapters_.lora, "b").ok());
  std::atomic<bool> stop{false};
  std::atomic<int> swaps{0};
  std::thread swapper([&] {
    for (int k = 0; !stop; ++k) {
      EXPECT_TRUE(Load(k % 2 ? adapters_.qwha2 : adapters_.qwha1, "hot").ok());
      grpc::ClientContext context;
      v1::UnloadAdapterRequest request;
      request.set_name("hot");
      v1::UnloadAdapterResponse response;
      EXPECT_TRUE(stub_->UnloadAdapter(&context, request, &response).ok());
      ++swaps;
    }
  });
  std::vector<std::thread> clients;
  std::atomic<int> ok{0}, failed{0};
  const std::vector<std::string> names = {"a", "b", ""};
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 4; ++i) {
        const std::string& name = names[(c + i) % names.size()];
        auto r = Generate(Request(kPrompt, name, 8));
        if (r.status.ok() && r.tokens.size() == 8 &&
            r.last.finish_reason() == v1::FINISH_REASON_LENGTH) {
          ++ok;
        } else {
          ++failed;
          ADD_FAILURE() << name << ": " << r.status.error_message();
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  stop = true;
  swapper.join();
  EXPECT_EQ(ok, 24);
  EXPECT_EQ(failed, 0);
  EXPECT_GT(swaps, 0);

  // Unloading everything brings the accounted memory back to the baseline.
  for (const std::string name : {"a", "b"}) {
    auto [code, output] = h().Qwhactl({"serve", "unload", name, "--server", Server()});
    EXPECT_EQ(code, 0) << output;
    EXPECT_NE(output.find("freed"), std::string::npos) << output;
  }
  const auto listed = List();
  EXPECT_EQ(listed.adapters_size(), 0);
  EXPECT_EQ(listed.memory_used_bytes(), 0);
  auto metrics = http::HttpGet("127.0.0.1", http_port_, "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("qwha_serve_adapter_memory_bytes 0"), std::string::npos);
  EXPECT_NE(metrics->body.find("qwha_serve_adapters_loaded 0"), std::string::npos);
  EXPECT_NE(metrics->body.find("qwha_serve_requests_total{finish_reason=\"length\"} 24"),
            std::string::npos);
  EXPECT_NE(metrics->body.find("qwha_serve_time_to_first_token_seconds_count 24"),
            std::string::npos);
}

TEST_F(ServeE2eTest, CorruptOrMissingAdaptersFailClearlyAndTheServerKeepsServing) {
  StartServer();
  ASSERT_TRUE(Load(adapters_.qwha1, "good").ok());
  // A missing adapter.
  grpc::Status missing = Load("no-such-adapter", "x");
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(missing.error_message().find("no-such-adapter"), std::string::npos)
      << missing.error_message();
  auto [code, output] = h().Qwhactl({"serve", "load", "no-such-adapter", "--server", Server()});
  EXPECT_EQ(code, 4) << output;

  // A registry blob whose bytes no longer match its sha256.
  grpc::ClientContext context;
  v1::GetAdapterRequest get;
  get.set_id(adapters_.lora);
  v1::Adapter adapter;
  ASSERT_TRUE(h().registry().GetAdapter(&context, get, &adapter).ok());
  std::string sha;
  for (const auto& f : adapter.files()) {
    if (f.name() == "adapter.safetensors") sha = f.sha256();
  }
  const std::string blob = absl::StrCat(h().dir(), "/data/blobs/", sha.substr(0, 2), "/", sha);
  auto original = io::ReadFile(blob);
  ASSERT_TRUE(original.ok()) << blob;
  std::string corrupt = *original;
  corrupt[corrupt.size() / 2] ^= 0x5a;
  ::chmod(blob.c_str(), 0644);
  ASSERT_TRUE(io::WriteFileAtomically(blob, corrupt).ok());
  grpc::Status bad = Load(adapters_.lora, "bad");
  ASSERT_TRUE(io::WriteFileAtomically(blob, *original).ok());
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::DATA_LOSS) << bad.error_message();
  EXPECT_NE(bad.error_message().find("sha256"), std::string::npos) << bad.error_message();

  // Still serving what it had, and nothing half-loaded.
  const auto listed = List();
  ASSERT_EQ(listed.adapters_size(), 1);
  EXPECT_EQ(listed.adapters(0).names(0), "good");
  auto r = Generate(Request(kPrompt, "good", 8));
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.tokens.size(), 8u);
  // Unknown names and bad requests are clear errors too.
  auto unknown = Generate(Request(kPrompt, "never-loaded", 4));
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND);
  v1::GenerateRequest both = Request(kPrompt, "", 4);
  both.set_prompt("text too");
  EXPECT_EQ(Generate(both).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(server_->Running());
}

TEST_F(ServeE2eTest, BudgetEvictsTheLeastRecentlyUsedAndReloadsOnDemand) {
  // Room for one adapter version.
  StartServer();
  v1::LoadedAdapter one;
  ASSERT_TRUE(Load(adapters_.qwha1, "x").ok());
  ASSERT_TRUE(Load(adapters_.qwha1, "x", &one).ok());
  EXPECT_TRUE(one.cache_hit());
  TearDown();
  server_.reset();
  grpc_port_ = 0;
  // Admission uses the adapter's size estimate, an upper bound of its loaded size (the packed
  // spectrum's row padding is bounded, not read); below twice the loaded size, two versions
  // never fit.
  StartServer({"--memory-budget-bytes", std::to_string(one.memory_bytes() * 19 / 10)});
  ASSERT_TRUE(Load(adapters_.qwha1, "x").ok());
  ASSERT_TRUE(Load(adapters_.qwha2, "y").ok());  // evicts x
  ASSERT_EQ(List().adapters_size(), 1);
  auto r = Generate(Request(kPrompt, "x", 6));  // loads x again, evicting y
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.digests, std::set<std::string>{Digest(adapters_.qwha1)});
  auto metrics = http::HttpGet("127.0.0.1", http_port_, "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("qwha_serve_adapter_cache_evictions_total 2"), std::string::npos);
  EXPECT_NE(metrics->body.find("qwha_serve_adapter_cache_misses_total 1"), std::string::npos);
  auto [code, output] = h().Qwhactl({"serve", "list", "--server", Server()});
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find(adapters_.qwha1), std::string::npos) << output;
}

// qwha-serve --token: every InferenceService call must carry the bearer
// token. Without it, or with another, a call fails UNAUTHENTICATED naming the
// header and changes nothing; qwhactl sends its --token (and says how to set
// one when refused).
TEST_F(ServeE2eTest, ATokenGuardsEveryInferenceCall) {
  StartServer({"--token", "s3cret"});
  const grpc::Status denied = Load(adapters_.qwha1, "guarded");
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::UNAUTHENTICATED) << denied.error_message();
  EXPECT_NE(denied.error_message().find("authorization"), std::string::npos)
      << denied.error_message();
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer wrong");
    v1::ListLoadedAdaptersResponse response;
    const grpc::Status wrong =
        stub_->ListAdapters(&context, v1::ListLoadedAdaptersRequest(), &response);
    EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED) << wrong.error_message();
  }
  const auto refused = Generate(Request(kPrompt, "", 4));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(refused.tokens.empty());

  auto [refused_code, refused_out] =
      h().Qwhactl({"serve", "list", "--server", Server(), "--token", "wrong"});
  EXPECT_NE(refused_code, 0) << refused_out;
  EXPECT_NE(refused_out.find("--token"), std::string::npos) << refused_out;
  auto [load_code, loaded] =
      h().Qwhactl({"serve", "load", adapters_.qwha1, "--server", Server(), "--token", "s3cret"});
  EXPECT_EQ(load_code, 0) << loaded;
  auto [list_code, listed] =
      h().Qwhactl({"serve", "list", "--server", Server(), "--token", "s3cret"});
  EXPECT_EQ(list_code, 0) << listed;
  EXPECT_NE(listed.find(adapters_.qwha1), std::string::npos) << listed;
  auto [gen_code, generated] =
      h().Qwhactl({"generate", "--server", Server(), "--token", "s3cret", "--adapter",
                   adapters_.qwha1, "--max-new-tokens", "4", "Genesis 1:1"});
  EXPECT_EQ(gen_code, 0) << generated;
}

// qwha-serve over TLS (the test certificates): the fixture's stub and qwhactl
// with the CA are served; qwhactl without it is refused with the hint.
TEST_F(ServeE2eTest, ATlsServerServesClientsThatTrustItsCa) {
  const std::string tls = Runfile("tests/fixtures/tls");
  StartServer({"--tls-cert", tls + "/server.pem", "--tls-key", tls + "/server.key"},
              tls + "/ca.pem");
  ASSERT_TRUE(Load(adapters_.qwha1, "secure").ok());
  auto [list_code, listed] =
      h().Qwhactl({"serve", "list", "--server", Server(), "--tls-ca", tls + "/ca.pem"});
  EXPECT_EQ(list_code, 0) << listed;
  EXPECT_NE(listed.find(adapters_.qwha1), std::string::npos) << listed;
  auto [gen_code, generated] =
      h().Qwhactl({"generate", "--server", Server(), "--tls-ca", tls + "/ca.pem", "--adapter",
                   adapters_.qwha1, "--max-new-tokens", "4", "Genesis 1:1"});
  EXPECT_EQ(gen_code, 0) << generated;
  auto [plain_code, plain] = h().Qwhactl({"serve", "list", "--server", Server()});
  EXPECT_EQ(plain_code, 6) << plain;
  EXPECT_NE(plain.find("give its CA with --tls-ca"), std::string::npos) << plain;
}

TEST_F(ServeE2eTest, SucceededJobWithTheOptionIsLoadedOnTheRegisteredServerByItself) {
  StartServer({"--advertise", "127.0.0.1"});
  // Registered before its port file appeared.
  auto [code, servers] = h().Qwhactl({"serve", "servers"});
  ASSERT_EQ(code, 0) << servers;
  EXPECT_NE(servers.find(Server()), std::string::npos) << servers;
  EXPECT_NE(servers.find("yes"), std::string::npos) << servers;
  ASSERT_EQ(List().adapters_size(), 0);

  // The job as a file (SmallJob's values), the option as the qwhactl flag.
  const v1::JobSpec spec = h().SmallJob(model_id_, dataset_id_, 4);
  const v1::TrainingConfig& t = spec.training();
  const std::string job_file = h().dir() + "/deployed-job.yaml";
  ASSERT_TRUE(io::WriteFileAtomically(
                  job_file,
                  absl::StrCat(
                      "base_model_id: ", spec.base_model_id(),
                      "\ntrain_dataset_id: ", spec.train_dataset_id(),
                      "\nname: deployed\nquantization: {bits: ", spec.quantization().bits(),
                      "}\nadapter: {type: ", spec.adapter().type(),
                      ", rank: ", spec.adapter().rank(), "}\ntraining: {max_steps: ", t.max_steps(),
                      ", batch_size: ", t.batch_size(), ", seq_len: ", t.seq_len(),
                      ", calibration_batches: ", t.calibration_batches(), ", checkpoint_every: ",
                      t.checkpoint_every(), ", eval_fraction: ", t.eval_fraction(), "}\n"))
                  .ok());
  auto [submit_code, submitted] =
      h().Qwhactl({"submit", "--file", job_file, "--load-on-inference-servers", "-o", "json"});
  ASSERT_EQ(submit_code, 0) << submitted;
  const size_t id_at = submitted.find("\"id\": \"");
  ASSERT_NE(id_at, std::string::npos) << submitted;
  const std::string job_id =
      submitted.substr(id_at + 7, submitted.find('"', id_at + 7) - (id_at + 7));
  EXPECT_NE(submitted.find("\"load_on_inference_servers\": true"), std::string::npos) << submitted;
  auto done = h().WaitFinished(job_id, 600);
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::SUCCEEDED) << done->error();
  const std::string adapter = done->adapter_id();

  // No LoadAdapter call from here: the scheduler's deployer makes it.
  v1::ListLoadedAdaptersResponse listed;
  for (int i = 0; i < 600; ++i) {
    listed = List();
    if (listed.adapters_size() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(listed.adapters_size(), 1) << "the adapter never arrived; see " << server_->log_path();
  EXPECT_EQ(listed.adapters(0).adapter_id(), adapter);
  EXPECT_EQ(listed.adapters(0).digest(), Digest(adapter));
  ASSERT_EQ(listed.adapters(0).names_size(), 1);
  EXPECT_EQ(listed.adapters(0).names(0), adapter);  // served under its id
  const auto generated = Generate(Request(kPrompt, adapter, 8));
  ASSERT_TRUE(generated.status.ok()) << generated.status.error_message();
  EXPECT_EQ(generated.digests, std::set<std::string>{Digest(adapter)});

  // The job's events tell the deployment's story.
  std::string history;
  for (int i = 0; i < 100 && history.find("deployment: done") == std::string::npos; ++i) {
    grpc::ClientContext context;
    v1::ListJobEventsRequest request;
    request.set_id(job_id);
    v1::ListJobEventsResponse events;
    ASSERT_TRUE(h().jobs().ListJobEvents(&context, request, &events).ok());
    history.clear();
    for (const v1::JobEvent& e : events.events()) absl::StrAppend(&history, e.message(), "\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(history.find("deployment: queued"), std::string::npos) << history;
  EXPECT_NE(history.find(absl::StrCat("deployment: loaded adapter ", adapter, " on ", Server())),
            std::string::npos)
      << history;
  EXPECT_NE(history.find("loaded on 1 of 1 inference server(s)"), std::string::npos) << history;
  auto [events_code, events_table] = h().Qwhactl({"events", job_id});
  EXPECT_EQ(events_code, 0);
  EXPECT_NE(events_table.find("deployment: done"), std::string::npos) << events_table;

  auto metrics = http::HttpGet("127.0.0.1", h().http_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("qwha_deployments_total{result=\"succeeded\"} 1"), std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find("qwha_deployment_load_attempts_total 1"), std::string::npos);
}

}  // namespace
}  // namespace qwha::e2e

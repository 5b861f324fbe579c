// qwha-scheduler: the scheduler process. Serves JobService, RegistryService
// and WorkerService over gRPC (plus health and reflection), /metrics and
// adapter downloads over HTTP, and keeps all state in <data-dir>:
//   <data-dir>/qwha.db     SQLite store (WAL, fsync on commit)
//   <data-dir>/blobs/      content-addressed files
// A deployer thread pushes the adapters of jobs with
// load_on_inference_servers to the registered inference servers
// (server/scheduler/deployer.h).
// kill -9 at any time loses nothing: restart with the same --data-dir.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/api/auth.h"
#include "server/api/job_service.h"
#include "server/api/metrics.h"
#include "server/api/tls.h"
#include "server/api/worker_service.h"
#include "server/http/http_server.h"
#include "server/registry/adapter_http.h"
#include "server/registry/inference_servers.h"
#include "server/registry/registry_service.h"
#include "server/scheduler/deployer.h"
#include "server/store/schema.h"
#include "worker/io/atomic_file.h"

namespace {

constexpr char kUsage[] = R"(usage: qwha-scheduler [flags]
  --listen HOST:PORT        gRPC address (default 127.0.0.1:7420; port 0 picks one)
  --http HOST:PORT          /metrics and adapter downloads (default 127.0.0.1:7421)
  --data-dir DIR            store and blobs (default $QWHA_DATA_DIR or ~/.local/share/qwha)
  --model-root DIR          base models may be registered from below DIR (default: off)
  --token TOKEN             require "authorization: Bearer TOKEN" (default $QWHA_TOKEN)
  --tls-cert FILE --tls-key FILE   serve gRPC over TLS with this PEM certificate chain and key
                            (default: plaintext; use TLS wherever a token crosses a network)
  --serve-tls-ca FILE       pushes to inference servers use TLS, trusting these PEM roots
                            ("system": the system's roots; default: plaintext)
  --lease-seconds N         job lease after each heartbeat (default 15)
  --max-upload-bytes N      largest uploaded file (default 17179869184)
  --max-dataset-bytes N     largest dataset (default 1073741824)
  --port-file FILE          write "<grpc port> <http port>" once serving
  --inference-heartbeat-seconds N   inference servers re-register this often; unseen for
                            3 heartbeats, nothing is pushed to them (default 10)
  --deploy-attempts N       LoadAdapter calls to an unreachable inference server before
                            its push fails (default 5)
  --deploy-backoff-seconds X  wait before the 2nd call, doubling after each (default 1)
)";

struct Flags {
  std::string listen = "127.0.0.1:7420";
  std::string http = "127.0.0.1:7421";
  std::string data_dir;
  std::string model_root;
  std::string token;
  std::string tls_cert, tls_key, serve_tls_ca;
  double lease_seconds = 15;
  int64_t max_upload_bytes = int64_t{16} << 30;
  int64_t max_dataset_bytes = int64_t{1} << 30;
  std::string port_file;
  double inference_heartbeat_seconds = 10;
  int64_t deploy_attempts = 5;
  double deploy_backoff_seconds = 1;
};

int Usage(const std::string& error) {
  std::cerr << "qwha-scheduler: " << error << "\n" << kUsage;
  return 3;
}

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

}  // namespace

int main(int argc, char** argv) {
  using namespace qwha;
  Flags flags;
  if (const char* t = std::getenv("QWHA_TOKEN")) flags.token = t;
  if (const char* d = std::getenv("QWHA_DATA_DIR")) flags.data_dir = d;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (i + 1 >= argc) return Usage(absl::StrCat(arg, ": missing value or unknown flag"));
    std::string value = argv[++i];
    bool ok = true;
    if (arg == "--listen")
      flags.listen = value;
    else if (arg == "--http")
      flags.http = value;
    else if (arg == "--data-dir")
      flags.data_dir = value;
    else if (arg == "--model-root")
      flags.model_root = value;
    else if (arg == "--token")
      flags.token = value;
    else if (arg == "--tls-cert")
      flags.tls_cert = value;
    else if (arg == "--tls-key")
      flags.tls_key = value;
    else if (arg == "--serve-tls-ca")
      flags.serve_tls_ca = value;
    else if (arg == "--lease-seconds")
      ok = absl::SimpleAtod(value, &flags.lease_seconds) && flags.lease_seconds > 0;
    else if (arg == "--max-upload-bytes")
      ok = absl::SimpleAtoi(value, &flags.max_upload_bytes) && flags.max_upload_bytes > 0;
    else if (arg == "--max-dataset-bytes")
      ok = absl::SimpleAtoi(value, &flags.max_dataset_bytes) && flags.max_dataset_bytes > 0;
    else if (arg == "--port-file")
      flags.port_file = value;
    else if (arg == "--inference-heartbeat-seconds")
      ok = absl::SimpleAtod(value, &flags.inference_heartbeat_seconds) &&
           flags.inference_heartbeat_seconds > 0;
    else if (arg == "--deploy-attempts")
      ok = absl::SimpleAtoi(value, &flags.deploy_attempts) && flags.deploy_attempts > 0 &&
           flags.deploy_attempts <= 100;
    else if (arg == "--deploy-backoff-seconds")
      ok = absl::SimpleAtod(value, &flags.deploy_backoff_seconds) &&
           flags.deploy_backoff_seconds > 0;
    else
      return Usage(absl::StrCat(arg, ": unknown flag"));
    if (!ok) return Usage(absl::StrCat(arg, ": '", value, "' is not a positive number"));
  }
  auto server_credentials = api::ServerCredentials({flags.tls_cert, flags.tls_key});
  if (!server_credentials.ok()) return Usage(std::string(server_credentials.status().message()));
  auto serve_credentials = api::ChannelCredentials(flags.serve_tls_ca, "--serve-tls-ca");
  if (!serve_credentials.ok()) return Usage(std::string(serve_credentials.status().message()));
  if (flags.data_dir.empty()) {
    const char* home = std::getenv("HOME");
    flags.data_dir = absl::StrCat(home ? home : ".", "/.local/share/qwha");
  }
  std::string mkdir = absl::StrCat("mkdir -p '", flags.data_dir, "'");
  if (std::system(mkdir.c_str()) != 0)
    return Usage(absl::StrCat("--data-dir: cannot create ", flags.data_dir));

  auto db = store::Db::Open(flags.data_dir + "/qwha.db");
  if (!db.ok()) return std::cerr << db.status() << "\n", 1;
  if (absl::Status s = store::EnsureSchema(**db); !s.ok()) return std::cerr << s << "\n", 1;
  auto blobs = registry::BlobStore::Open(flags.data_dir + "/blobs");
  if (!blobs.ok()) return std::cerr << blobs.status() << "\n", 1;
  registry::RegistryStore registry_store(db->get(), blobs->get());
  registry::InferenceServerOptions server_options;
  server_options.heartbeat_seconds = flags.inference_heartbeat_seconds;
  server_options.ttl_seconds = 3 * flags.inference_heartbeat_seconds;
  registry::InferenceServerDirectory inference_servers(db->get(), server_options);

  auto prometheus_registry = std::make_shared<prometheus::Registry>();
  api::SchedulerMetrics metrics(prometheus_registry);
  scheduler::SchedulerOptions options;
  options.lease_seconds = flags.lease_seconds;
  scheduler::SchedulerObserver observer;
  registry::RegistryServiceImpl* registry_service_ptr = nullptr;  // set below
  observer.on_transition = [&](v1::JobState from, v1::JobState to) {
    metrics.CountTransition(from, to);
    // A new adapter changes the registry's byte gauges.
    if (to == v1::SUCCEEDED && registry_service_ptr) registry_service_ptr->RefreshMetrics();
  };
  observer.on_assigned = [&](double s) { metrics.ObserveQueueWait(s); };
  observer.on_phase_done = [&](v1::Phase p, double s) { metrics.ObservePhase(p, s); };
  scheduler::Scheduler scheduler(db->get(), &registry_store, options,
                                 std::make_unique<scheduler::FitFirstPolicy>(), observer);

  registry::RegistryOptions registry_options;
  registry_options.model_root = flags.model_root;
  registry_options.max_upload_bytes = flags.max_upload_bytes;
  registry_options.max_dataset_bytes = flags.max_dataset_bytes;
  std::string token = flags.token;
  registry::RegistryServiceImpl registry_service(
      &registry_store, registry_options,
      [token](grpc::ServerContext* context) { return api::CheckToken(context, token); },
      prometheus_registry, &inference_servers);
  registry_service_ptr = &registry_service;
  scheduler::DeployerOptions deployer_options;
  deployer_options.max_attempts = static_cast<int>(flags.deploy_attempts);
  deployer_options.initial_backoff_seconds = flags.deploy_backoff_seconds;
  deployer_options.token = flags.token;
  deployer_options.credentials = *serve_credentials;
  scheduler::DeployerObserver deployer_observer;
  deployer_observer.on_load_attempt = [&] { metrics.CountDeploymentAttempt(); };
  deployer_observer.on_target_done = [&](bool loaded) { metrics.CountDeployment(loaded); };
  scheduler::Deployer deployer(db->get(), &scheduler, &inference_servers, deployer_options,
                               deployer_observer);
  api::JobServiceImpl job_service(&scheduler, &metrics, flags.token);
  api::WorkerServiceImpl worker_service(&scheduler, &registry_store, &metrics,
                                        {flags.token, flags.max_upload_bytes});

  auto http = http::HttpServer::Start(flags.http, prometheus_registry);
  if (!http.ok()) return std::cerr << http.status() << "\n", 1;
  registry::AddAdapterDownloadRoute(**http, &registry_store, flags.token, prometheus_registry);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(flags.listen, *server_credentials, &grpc_port);
  builder.SetMaxReceiveMessageSize(8 << 20);
  builder.RegisterService(&job_service);
  builder.RegisterService(&registry_service);
  builder.RegisterService(&worker_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    std::cerr << "qwha-scheduler: cannot listen on " << flags.listen << "\n";
    return 1;
  }
  if (!flags.port_file.empty()) {
    absl::Status s = io::WriteFileAtomically(flags.port_file,
                                             absl::StrCat(grpc_port, " ", (*http)->port(), "\n"));
    if (!s.ok()) return std::cerr << s << "\n", 1;
  }
  std::cerr << "qwha-scheduler: grpc " << grpc_port << " ("
            << api::TransportName(!flags.tls_cert.empty()) << "), http " << (*http)->port()
            << ", data " << flags.data_dir << std::endl;

  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  std::thread housekeeper([&] {
    while (!g_stop) {
      auto reaped = scheduler.Reap();
      if (!reaped.ok()) std::cerr << "reaper: " << reaped.status() << std::endl;
      if (auto counts = scheduler.CountByState(); counts.ok()) {
        std::map<v1::JobState, int64_t> by_state;
        for (auto [state, n] : *counts) by_state[state] = n;
        for (int s = v1::QUEUED; s <= v1::CANCELLED; ++s) {
          metrics.SetJobs(static_cast<v1::JobState>(s),
                          static_cast<double>(by_state[static_cast<v1::JobState>(s)]));
        }
      }
      if (auto live = scheduler.LiveWorkers(3 * flags.lease_seconds); live.ok()) {
        metrics.SetLiveWorkers(static_cast<double>(*live));
      }
      if (auto live = inference_servers.CountLive(); live.ok()) {
        metrics.SetLiveInferenceServers(static_cast<double>(*live));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  });
  // Deployments are due when a job succeeds (which wakes WaitForChange) or
  // when a retry's backoff ends (checked every 0.5 s).
  std::thread deployer_thread([&] {
    uint64_t seen = 0;
    while (!g_stop) {
      auto worked = deployer.RunDue();
      if (!worked.ok()) std::cerr << "deployer: " << worked.status() << std::endl;
      seen = scheduler.WaitForChange(seen, 500);
    }
  });
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  deployer.Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  housekeeper.join();
  deployer_thread.join();
  std::cerr << "qwha-scheduler: stopped" << std::endl;
  return 0;
}

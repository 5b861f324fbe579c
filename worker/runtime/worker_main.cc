// qwha-worker: the GPU worker process (DESIGN.md §2).
//
//   qwha-worker --scheduler HOST:PORT --work-dir DIR [options]   the worker (worker_flags.h)
//   qwha-worker run-job --job FILE --out DIR …                   one job's child (run_job.h)
//
// SIGINT/SIGTERM stop the worker: a running job's child is terminated and
// the job failed as retryable, so the scheduler requeues it at once. A
// second signal exits immediately (the child dies with us: PR_SET_PDEATHSIG).
//
// Exit status: 0 after a stop, 2 for bad flags, 1 when the scheduler refuses
// the worker (e.g. a wrong token).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "server/api/tls.h"
#include "server/http/http_server.h"
#include "worker/runtime/device_info.h"
#include "worker/runtime/job_runner.h"
#include "worker/runtime/local_files.h"
#include "worker/runtime/run_job.h"
#include "worker/runtime/scheduler_client.h"
#include "worker/runtime/worker_flags.h"
#include "worker/runtime/worker_loop.h"
#include "worker/runtime/worker_metrics.h"
#include "worker/runtime/worker_session.h"

namespace qwha::runtime {
namespace {

std::atomic<bool> g_stop{false};

void OnStopSignal(int) {
  if (g_stop.exchange(true)) ::_exit(1);
}

int Usage(const std::string& message) {
  std::cerr << "qwha-worker: " << message << "\n";
  return 2;
}

std::string HostName() {
  char name[256] = {0};
  return ::gethostname(name, sizeof(name) - 1) == 0 ? std::string(name) : "worker";
}

int WorkerMain(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << WorkerUsage();
      return 0;
    }
  }
  absl::StatusOr<WorkerFlags> flags = ParseWorkerFlags(args, std::getenv("QWHA_TOKEN"));
  if (!flags.ok()) return Usage(std::string(flags.status().message()));
  if (flags->device.empty()) flags->device = torch::cuda::is_available() ? "cuda:0" : "cpu";
  absl::StatusOr<torch::Device> device = ParseDevice(flags->device);
  if (!device.ok()) return Usage("--device: " + std::string(device.status().message()));
  if (absl::Status st = CheckDeviceExists(*device); !st.ok()) {
    return Usage("--device: " + std::string(st.message()));
  }
  if (flags->name.empty()) flags->name = HostName() + ":" + flags->device;
  for (const std::string& dir : {flags->work_dir, flags->cache_dir}) {
    if (absl::Status st = MakeDirs(dir); !st.ok()) return Usage(std::string(st.message()));
  }

  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  WorkerMetrics metrics(flags->device);
  std::unique_ptr<http::HttpServer> http_server;
  if (!flags->http.empty()) {
    auto started = http::HttpServer::Start(flags->http, metrics.registry());
    if (!started.ok()) return Usage("--http: " + std::string(started.status().message()));
    http_server = *std::move(started);
    std::cerr << "qwha-worker: metrics on http://" << flags->http.substr(0, flags->http.rfind(':'))
              << ":" << http_server->port() << "/metrics\n";
  }
  auto credentials = api::ChannelCredentials(flags->tls_ca);
  if (!credentials.ok()) return Usage(std::string(credentials.status().message()));
  SchedulerClient client(flags->scheduler, flags->token, *credentials);
  DeviceProbe probe(*device);
  metrics.SetDevice(probe.Sample());
  WorkerSession session(client, probe, metrics, flags->name, g_stop);
  RunnerConfig config;
  config.work_dir = flags->work_dir;
  config.cache_dir = flags->cache_dir;
  config.device = flags->device;
  config.keep_job_dirs = flags->keep_job_dirs;
  config.cache_max_bytes = flags->cache_max_bytes;
  JobRunner runner(config, client, session, metrics, g_stop);
  std::cerr << "qwha-worker: " << flags->name << " on " << flags->device << ", scheduler "
            << flags->scheduler << ", work dir " << flags->work_dir << "\n";
  absl::Status st = RunWorkerLoop(client, session, runner, probe,
                                  std::chrono::milliseconds(flags->poll_ms), g_stop);
  g_stop = true;  // ends a re-registration the heartbeat thread may be retrying
  session.StopHeartbeats();
  if (!st.ok()) {
    std::cerr << "qwha-worker: " << st.message() << "\n";
    return 1;
  }
  std::cerr << "qwha-worker: stopped\n";
  return 0;
}

}  // namespace
}  // namespace qwha::runtime

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "run-job") {
    return qwha::runtime::RunJobMain(std::vector<std::string>(args.begin() + 1, args.end()));
  }
  return qwha::runtime::WorkerMain(args);
}

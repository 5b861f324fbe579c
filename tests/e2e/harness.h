// End-to-end harness: starts the real qwha-scheduler and qwha-worker binaries
// as child processes on loopback, in a fresh temp directory, and gives typed
// gRPC stubs to drive them. Nothing is mocked.
//
// Binaries are found in the Bazel runfiles (server/qwha-scheduler,
// worker/runtime/qwha-worker, client/qwhactl) or under $QWHA_BIN_DIR.
// Thread safety: a Harness belongs to one test thread.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qwha/v1/job.grpc.pb.h"
#include "qwha/v1/registry.grpc.pb.h"
#include "qwha/v1/worker.grpc.pb.h"

namespace qwha::e2e {

// A child process whose output goes to a log file. The destructor kills it
// (SIGKILL) if it still runs.
class Process {
 public:
  static absl::StatusOr<std::unique_ptr<Process>> Start(const std::vector<std::string>& argv,
                                                        const std::string& log_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  void Signal(int signo);
  // Waits up to `timeout_ms` for the exit; returns the wait status or -1.
  int Wait(int timeout_ms);
  bool Running();
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

 private:
  Process() = default;
  pid_t pid_ = -1;
  bool exited_ = false;
  std::string log_path_;
};

// Path of a repository file or built binary in the runfiles.
std::string Runfile(const std::string& path);

class Harness {
 public:
  // Creates a fresh directory <TEST_TMPDIR>/<name>.
  explicit Harness(const std::string& name);
  ~Harness();

  // Starts the scheduler (again, after a kill, on the same data dir and the
  // same ports) with --model-root = <dir>/models, which holds a copy of
  // tests/fixtures/demo/model as <dir>/models/demo.
  absl::Status StartScheduler(double lease_seconds = 3, const std::vector<std::string>& extra = {});
  void KillScheduler();  // SIGKILL, waits for the exit
  // Starts a worker process named `name`; returns its index.
  absl::StatusOr<int> StartWorker(const std::string& name,
                                  const std::vector<std::string>& extra = {});
  Process& worker(int index) { return *workers_[index]; }

  std::string address() const;  // "127.0.0.1:<grpc port>"
  int http_port() const { return http_port_; }
  const std::string& dir() const { return dir_; }

  v1::JobService::Stub& jobs() { return *jobs_; }
  v1::RegistryService::Stub& registry() { return *registry_; }

  // Registers <dir>/models/demo; returns the model id.
  absl::StatusOr<std::string> RegisterDemoModel();
  // Uploads a JSONL file as a dataset; returns the dataset id.
  absl::StatusOr<std::string> UploadDataset(const std::string& path, const std::string& name);
  // A job spec for the demo model that trains for `steps` short steps.
  v1::JobSpec SmallJob(const std::string& model_id, const std::string& dataset_id, int steps);
  // Polls until the job is finished or `timeout_s` passes; returns the job.
  absl::StatusOr<v1::Job> WaitFinished(const std::string& job_id, double timeout_s);
  // Polls until `predicate(job)` holds.
  absl::StatusOr<v1::Job> WaitFor(const std::string& job_id, double timeout_s,
                                  const std::function<bool(const v1::Job&)>& predicate);
  // Runs client/qwhactl with args against this scheduler; returns (exit code, stdout+stderr).
  std::pair<int, std::string> Qwhactl(const std::vector<std::string>& args);

  // The harness's own stubs speak TLS trusting these PEM roots (call before
  // StartScheduler for a scheduler started with --tls-cert/--tls-key); ""
  // plaintext. qwhactl and workers take their own --tls-ca.
  void set_tls_ca(const std::string& ca) { tls_ca_ = ca; }

 private:
  void Connect();
  std::string dir_;
  int grpc_port_ = 0, http_port_ = 0;
  std::unique_ptr<Process> scheduler_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::RegistryService::Stub> registry_;
  int scheduler_starts_ = 0;
  std::string tls_ca_;
};

}  // namespace qwha::e2e

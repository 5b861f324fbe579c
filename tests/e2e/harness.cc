#include "tests/e2e/harness.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/api/tls.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"

namespace qwha::e2e {

absl::StatusOr<std::unique_ptr<Process>> Process::Start(const std::vector<std::string>& argv,
                                                        const std::string& log_path) {
  std::unique_ptr<Process> p(new Process());
  p->log_path_ = log_path;
  pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::setpgid(0, 0);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  p->pid_ = pid;
  return p;
}

Process::~Process() {
  if (pid_ > 0 && !exited_) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    Wait(5000);
  }
}

void Process::Signal(int signo) {
  if (pid_ > 0 && !exited_) ::kill(pid_, signo);
}

int Process::Wait(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      return status;
    }
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool Process::Running() {
  if (exited_) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) exited_ = true;
  return !exited_;
}

std::string Runfile(const std::string& path) {
  if (const char* bin = std::getenv("QWHA_BIN_DIR")) {
    std::string candidate = absl::StrCat(bin, "/", path);
    if (::access(candidate.c_str(), F_OK) == 0) return candidate;
  }
  const char* srcdir = std::getenv("TEST_SRCDIR");
  std::string root = srcdir ? absl::StrCat(srcdir, "/qwha") : ".";
  return absl::StrCat(root, "/", path);
}

Harness::Harness(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  dir_ = absl::StrCat(tmp ? tmp : "/tmp", "/e2e_", name);
  (void)io::RemoveTree(dir_);
  // The model root holds a real copy of the demo model (runfiles are symlinks).
  std::system(absl::StrCat("mkdir -p '", dir_, "/models' && cp -rL '",
                           Runfile("tests/fixtures/demo/model"), "' '", dir_, "/models/demo'")
                  .c_str());
}

Harness::~Harness() {
  workers_.clear();
  if (scheduler_) {
    scheduler_->Signal(SIGTERM);
    if (scheduler_->Wait(5000) < 0) scheduler_.reset();
  }
}

std::string Harness::address() const { return absl::StrCat("127.0.0.1:", grpc_port_); }

absl::Status Harness::StartScheduler(double lease_seconds, const std::vector<std::string>& extra) {
  std::string port_file = dir_ + "/ports";
  ::unlink(port_file.c_str());
  std::vector<std::string> argv = {Runfile("server/qwha-scheduler"),
                                   "--listen",
                                   absl::StrCat("127.0.0.1:", grpc_port_),
                                   "--http",
                                   absl::StrCat("127.0.0.1:", http_port_),
                                   "--data-dir",
                                   dir_ + "/data",
                                   "--model-root",
                                   dir_ + "/models",
                                   "--lease-seconds",
                                   absl::StrCat(lease_seconds),
                                   "--port-file",
                                   port_file};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto process =
      Process::Start(argv, absl::StrCat(dir_, "/scheduler.", scheduler_starts_++, ".log"));
  if (!process.ok()) return process.status();
  scheduler_ = std::move(*process);
  for (int i = 0; i < 600; ++i) {
    std::ifstream in(port_file);
    if (in >> grpc_port_ >> http_port_) {
      Connect();
      return absl::OkStatus();
    }
    if (!scheduler_->Running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::UnavailableError(
      absl::StrCat("qwha-scheduler did not start; see ", scheduler_->log_path()));
}

void Harness::KillScheduler() {
  if (!scheduler_) return;
  scheduler_->Signal(SIGKILL);
  scheduler_->Wait(10000);
  scheduler_.reset();
}

void Harness::Connect() {
  auto credentials = api::ChannelCredentials(tls_ca_);
  auto channel = grpc::CreateChannel(
      address(), credentials.ok() ? *credentials : grpc::InsecureChannelCredentials());
  jobs_ = v1::JobService::NewStub(channel);
  registry_ = v1::RegistryService::NewStub(channel);
}

absl::StatusOr<int> Harness::StartWorker(const std::string& name,
                                         const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {Runfile("worker/runtime/qwha-worker"),
                                   "--scheduler",
                                   address(),
                                   "--name",
                                   name,
                                   "--work-dir",
                                   absl::StrCat(dir_, "/", name),
                                   "--http",
                                   "127.0.0.1:0",
                                   "--poll-ms",
                                   "1000"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto process = Process::Start(argv, absl::StrCat(dir_, "/", name, ".log"));
  if (!process.ok()) return process.status();
  workers_.push_back(std::move(*process));
  return static_cast<int>(workers_.size()) - 1;
}

absl::StatusOr<std::string> Harness::RegisterDemoModel() {
  grpc::ClientContext context;
  v1::RegisterModelRequest request;
  request.set_name("demo");
  request.set_path(dir_ + "/models/demo");
  v1::BaseModel model;
  grpc::Status status = registry_->RegisterModel(&context, request, &model);
  if (!status.ok())
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  return model.id();
}

absl::StatusOr<std::string> Harness::UploadDataset(const std::string& path,
                                                   const std::string& name) {
  auto data = io::ReadFile(path);
  if (!data.ok()) return data.status();
  grpc::ClientContext context;
  v1::Dataset dataset;
  auto writer = registry_->UploadDataset(&context, &dataset);
  v1::UploadChunk header;
  header.mutable_header()->set_name(name);
  v1::FileInfo* file = header.mutable_header()->add_files();
  file->set_name(name + ".jsonl");
  file->set_size(static_cast<int64_t>(data->size()));
  file->set_sha256(io::Sha256Hex(*data));
  writer->Write(header);
  for (size_t pos = 0; pos < data->size(); pos += 1 << 20) {
    v1::UploadChunk chunk;
    chunk.mutable_data()->set_name(file->name());
    chunk.mutable_data()->set_data(data->substr(pos, 1 << 20));
    if (!writer->Write(chunk)) break;
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok())
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  return dataset.id();
}

v1::JobSpec Harness::SmallJob(const std::string& model_id, const std::string& dataset_id,
                              int steps) {
  v1::JobSpec spec;
  spec.set_base_model_id(model_id);
  spec.set_train_dataset_id(dataset_id);
  spec.set_name("e2e");
  spec.mutable_quantization()->set_bits(2);
  spec.mutable_adapter()->set_type("qwha");
  spec.mutable_adapter()->set_rank(4);
  v1::TrainingConfig* t = spec.mutable_training();
  t->set_max_steps(steps);
  t->set_batch_size(2);
  t->set_seq_len(64);
  t->set_calibration_batches(1);
  t->set_checkpoint_every(2);
  t->set_eval_fraction(0.02);
  return spec;
}

absl::StatusOr<v1::Job> Harness::WaitFor(const std::string& job_id, double timeout_s,
                                         const std::function<bool(const v1::Job&)>& predicate) {
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  v1::Job job;
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_id(job_id);
    grpc::Status status = jobs_->GetJob(&context, request, &job);
    if (status.ok() && predicate(job)) return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat("job ", job_id, " still ",
                                                  v1::JobState_Name(job.state()), " (step ",
                                                  job.progress().step(), ")"));
}

absl::StatusOr<v1::Job> Harness::WaitFinished(const std::string& job_id, double timeout_s) {
  return WaitFor(job_id, timeout_s, [](const v1::Job& job) {
    return job.state() == v1::SUCCEEDED || job.state() == v1::FAILED ||
           job.state() == v1::CANCELLED;
  });
}

std::pair<int, std::string> Harness::Qwhactl(const std::vector<std::string>& args) {
  std::string command = absl::StrCat("'", Runfile("client/qwhactl"), "' --address ", address());
  for (const std::string& a : args) absl::StrAppend(&command, " '", a, "'");
  absl::StrAppend(&command, " 2>&1");
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

}  // namespace qwha::e2e

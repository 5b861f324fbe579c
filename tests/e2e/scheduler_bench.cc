// qwha scheduler benchmark: submits/s and submit latency percentiles with N
// concurrent clients against a real qwha-scheduler process on loopback
// (SQLite with fsync on every commit, so this measures durable submits).
//
//   bazel run //tests/e2e:scheduler_bench -- [--clients 16] [--jobs 2000]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/e2e/harness.h"
#include "worker/io/atomic_file.h"

int main(int argc, char** argv) {
  using namespace qwha;
  int clients = 16, jobs = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    bool ok = flag == "--clients" ? absl::SimpleAtoi(argv[i + 1], &clients)
              : flag == "--jobs"  ? absl::SimpleAtoi(argv[i + 1], &jobs)
                                  : false;
    if (!ok || clients < 1 || jobs < 1) {
      std::cerr << "usage: scheduler_bench [--clients N] [--jobs N]\n";
      return 3;
    }
  }
  e2e::Harness h("scheduler_bench");
  if (absl::Status s = h.StartScheduler(); !s.ok()) return std::cerr << s << "\n", 1;
  auto model = h.RegisterDemoModel();
  std::string data = h.dir() + "/d.jsonl";
  (void)io::WriteFileAtomically(data, "{\"text\": \"In the beginning\"}\n");
  auto dataset = h.UploadDataset(data, "bench");
  if (!model.ok() || !dataset.ok()) return std::cerr << "setup failed\n", 1;
  v1::JobSpec spec = h.SmallJob(*model, *dataset, 10);

  std::mutex mu;
  std::vector<double> latencies;
  std::atomic<int> next{0}, errors{0};
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      auto channel = grpc::CreateChannel(h.address(), grpc::InsecureChannelCredentials());
      auto stub = v1::JobService::NewStub(channel);
      std::vector<double> mine;
      for (int i = next++; i < jobs; i = next++) {
        grpc::ClientContext context;
        v1::SubmitJobRequest request;
        *request.mutable_spec() = spec;
        request.set_idempotency_key(absl::StrCat("bench-", i));
        v1::Job job;
        auto t0 = std::chrono::steady_clock::now();
        grpc::Status status = stub->SubmitJob(&context, request, &job);
        mine.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        if (!status.ok()) ++errors;
      }
      std::lock_guard<std::mutex> lock(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) {
    return latencies[std::min(latencies.size() - 1, size_t(p * latencies.size()))] * 1e3;
  };
  std::cout << "scheduler submit benchmark: " << clients << " clients, " << jobs << " jobs, "
            << errors << " errors\n"
            << "  submits/s " << jobs / seconds << "\n"
            << "  latency ms p50 " << pct(0.50) << "  p90 " << pct(0.90) << "  p99 " << pct(0.99)
            << "  max " << latencies.back() * 1e3 << "\n";
  return errors == 0 ? 0 : 1;
}

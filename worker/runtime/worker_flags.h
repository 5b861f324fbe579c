// The command line of the worker process:
//
//   qwha-worker --scheduler HOST:PORT --work-dir DIR [--name NAME]
//       [--device cpu|cuda|cuda:N] [--http HOST:PORT] [--token T] [--tls-ca FILE]
//       [--cache-dir DIR] [--poll-ms MS] [--cache-max-gib N] [--keep-job-dirs]
//
// Flags take "--flag value" or "--flag=value". The token may also come from
// the environment variable QWHA_TOKEN (the flag wins).
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qwha::runtime {

struct WorkerFlags {
  std::string scheduler;  // host:port of the scheduler's gRPC endpoint; required
  std::string work_dir;   // blobs/, models/, datasets/, jobs/ and cache/; required
  std::string name;       // stable worker name; empty: "<hostname>:<device>"
  std::string device;     // empty: cuda:0 when CUDA is available, else cpu
  std::string http;       // /metrics listen address ("127.0.0.1:0"); empty: none
  std::string token;      // bearer token; empty: none
  std::string
      tls_ca;  // TLS to the scheduler, trusting these PEM roots ("system"); empty: plaintext
  std::string cache_dir;   // quantized-base cache; empty: <work_dir>/cache
  int64_t poll_ms = 5000;  // AcquireJob long-poll wait, 1..30000
  // The budget of the fetched inputs and the quantized bases (PruneWorkCache
  // after each job); 0: no limit.
  int64_t cache_max_bytes = int64_t{100} << 30;
  bool keep_job_dirs = false;
};

// Parses the arguments after the program name. InvalidArgument naming the
// flag for an unknown flag, a missing or malformed value (e.g.
// "--poll-ms: expected an integer in [1, 30000], got 'x'"), or a missing
// required flag. `env_token` is QWHA_TOKEN (may be null).
absl::StatusOr<WorkerFlags> ParseWorkerFlags(const std::vector<std::string>& args,
                                             const char* env_token);

// The --help text.
std::string WorkerUsage();

}  // namespace qwha::runtime

#include "worker/runtime/worker_flags.h"

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/http/http_server.h"
#include "worker/runtime/device_info.h"

namespace qwha::runtime {
namespace {

absl::Status Bad(const std::string& flag, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(flag, ": ", reason));
}

}  // namespace

std::string WorkerUsage() {
  return "usage: qwha-worker --scheduler HOST:PORT --work-dir DIR [options]\n"
         "       qwha-worker run-job --job FILE --out DIR --model DIR --train FILE [...]\n"
         "options:\n"
         "  --name NAME        stable worker name [<hostname>:<device>]\n"
         "  --device D         cpu, cuda or cuda:N [cuda:0 if CUDA is available, else cpu]\n"
         "  --http HOST:PORT   serve /metrics here (port 0: any free port) [off]\n"
         "  --token T          bearer token for the scheduler [$QWHA_TOKEN]\n"
         "  --tls-ca FILE      reach the scheduler over TLS, trusting these PEM roots\n"
         "                     (\"system\": the system's roots) [plaintext]\n"
         "  --cache-dir DIR    quantized-base cache [<work-dir>/cache]\n"
         "  --poll-ms MS       AcquireJob long-poll wait, 1..30000 [5000]\n"
         "  --cache-max-gib N  keep the fetched inputs (blobs/, models/, datasets/) and the\n"
         "                     quantized bases (--cache-dir) within N GiB, least recently used\n"
         "                     removed first after each job; 0: no limit [100]\n"
         "  --keep-job-dirs    keep <work-dir>/jobs/<id>/ after each job\n";
}

absl::StatusOr<WorkerFlags> ParseWorkerFlags(const std::vector<std::string>& args,
                                             const char* env_token) {
  WorkerFlags f;
  if (env_token != nullptr) f.token = env_token;
  const std::map<std::string, std::string*> values = {
      {"--scheduler", &f.scheduler}, {"--work-dir", &f.work_dir}, {"--name", &f.name},
      {"--device", &f.device},       {"--http", &f.http},         {"--token", &f.token},
      {"--cache-dir", &f.cache_dir}, {"--tls-ca", &f.tls_ca},
  };
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool has_value = false;
    if (const size_t eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_value = true;
    }
    if (flag == "--keep-job-dirs") {
      if (has_value) return Bad(flag, "takes no value");
      f.keep_job_dirs = true;
      continue;
    }
    auto it = values.find(flag);
    if (it == values.end() && flag != "--poll-ms" && flag != "--cache-max-gib") {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", flag, "' (see --help)"));
    }
    if (!has_value) {
      if (i + 1 >= args.size()) return Bad(flag, "missing value");
      value = args[++i];
    }
    if (flag == "--poll-ms") {
      if (!absl::SimpleAtoi(value, &f.poll_ms) || f.poll_ms < 1 || f.poll_ms > 30000) {
        return Bad(flag, absl::StrCat("expected an integer in [1, 30000], got '", value, "'"));
      }
    } else if (flag == "--cache-max-gib") {
      int64_t gib = 0;
      if (!absl::SimpleAtoi(value, &gib) || gib < 0 || gib > (int64_t{1} << 30)) {
        return Bad(flag, absl::StrCat("expected a whole number of GiB >= 0, got '", value, "'"));
      }
      f.cache_max_bytes = gib << 30;
    } else {
      *it->second = value;
    }
  }
  if (f.scheduler.empty()) return Bad("--scheduler", "required (HOST:PORT of the scheduler)");
  if (auto hp = http::ParseHostPort(f.scheduler, "--scheduler"); !hp.ok()) {
    return hp.status();
  } else if (hp->second == 0) {
    return Bad("--scheduler", absl::StrCat("'", f.scheduler, "' needs a port other than 0"));
  }
  if (f.work_dir.empty()) return Bad("--work-dir", "required");
  if (!f.http.empty()) {
    if (auto hp = http::ParseHostPort(f.http, "--http"); !hp.ok()) return hp.status();
  }
  if (!f.device.empty()) {
    if (auto d = ParseDevice(f.device); !d.ok()) {
      return Bad("--device", std::string(d.status().message()));
    }
  }
  if (f.cache_dir.empty()) f.cache_dir = f.work_dir + "/cache";
  return f;
}

}  // namespace qwha::runtime

// qwha-serve: the inference server (docs/serving.md). Loads one base model,
// quantizes it as configured, and serves InferenceService over gRPC (plus
// health and reflection) and /metrics over HTTP. Adapters come from the
// scheduler's registry (--registry) or a local directory (--adapter-dir).
// With --advertise it registers with that scheduler, which then pushes the
// adapters of jobs with load_on_inference_servers to it.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/api/tls.h"
#include "server/http/http_server.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"
#include "worker/model/config.h"
#include "worker/serve/adapter_cache.h"
#include "worker/serve/engine.h"
#include "worker/serve/inference_service.h"
#include "worker/serve/registration.h"
#include "worker/serve/registry_source.h"
#include "worker/serve/serve_metrics.h"
#include "worker/serve/serving_model.h"

namespace {

constexpr char kUsage[] = R"(usage: qwha-serve --model DIR [flags]
  --model DIR                 base model directory (config.json, *.safetensors, tokenizer.json)
  --bits N                    quantization bits: 2, 3 or 4 (default 4)
  --group-size N              quantization group size (default 64)
  --method rtn                quantization method (only rtn can be served)
  --target-modules a,b,...    quantized projections (default all seven)
  --device cpu|cuda[:N]       default: cuda when available
  --dtype float32|bfloat16|float16   default: bfloat16 on cuda, float32 on cpu
  --listen HOST:PORT          gRPC address (default 127.0.0.1:7430; port 0 picks one)
  --http HOST:PORT            /metrics (default 127.0.0.1:7431)
  --registry HOST:PORT        the scheduler whose RegistryService holds the adapters
  --registry-token TOKEN      its API token (default $QWHA_TOKEN)
  --registry-tls-ca FILE      reach the registry over TLS, trusting these PEM roots
                              ("system": the system's roots; default: plaintext)
  --token TOKEN               require "authorization: Bearer TOKEN" on every
                              InferenceService call (default $QWHA_TOKEN; empty: open)
  --tls-cert FILE --tls-key FILE   serve gRPC over TLS with this PEM certificate chain
                              and key (default: plaintext)
  --advertise HOST[:PORT]     register with the --registry scheduler as reachable at
                              HOST:PORT (PORT: the gRPC port bound) and heartbeat; the
                              scheduler then pushes new adapters of this base model here
  --adapter-dir DIR           instead of --registry: adapters as subdirectories of DIR
  --memory-budget-bytes N     adapter memory budget (default 1073741824)
  --max-batch N               running requests (default 32)
  --max-seq-len N             prompt + completion tokens per request (default 1024)
  --max-prefill-tokens N      prompt tokens per engine step (default 2048)
  --no-load-on-demand         Generate never loads an adapter that is not loaded
  --no-cuda-graphs            decode steps op by op (default on CUDA: replayed CUDA graphs)
  --work-dir DIR              downloads (default: a fresh temp directory)
  --port-file FILE            write "<grpc port> <http port>" once serving
)";

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

int Usage(const std::string& error) {
  std::cerr << "qwha-serve: " << error << "\n" << kUsage;
  return 3;
}

// The registry's digest of a model directory: sha256 over "<name> <sha256>"
// lines of its model files (server/registry/model_dir.h IsModelFileName).
absl::StatusOr<std::string> ModelDirectoryDigest(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool model_file = name == "config.json" || name == "tokenizer.json" ||
                            name == "tokenizer_config.json" || name == "generation_config.json" ||
                            absl::EndsWith(name, ".safetensors") ||
                            absl::EndsWith(name, ".index.json");
    if (!model_file || name[0] == '.') continue;
    auto sha = qwha::io::Sha256File(entry.path().string());
    if (!sha.ok()) return sha.status();
    files.emplace_back(name, sha->first);
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  return qwha::io::Sha256OfFileSet(std::move(files));
}

// The address the scheduler should call: `advertise` as given when it names a
// port ("host:7430", "[::1]:7430"), else with the bound gRPC `port`.
std::string AdvertisedAddress(const std::string& advertise, int port) {
  const size_t colon = advertise.rfind(':');
  const bool bracketed = !advertise.empty() && advertise[0] == '[';
  const bool has_port = colon != std::string::npos &&
                        (bracketed ? colon > advertise.find(']') : advertise.find(':') == colon);
  if (has_port) return advertise;
  if (!bracketed && colon != std::string::npos) return absl::StrCat("[", advertise, "]:", port);
  return absl::StrCat(advertise, ":", port);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qwha;
  serve::ServingModelOptions model_options;
  model_options.quant.bits = 4;
  model_options.quant.group_size = 64;
  std::string device = torch::cuda::is_available() ? "cuda" : "cpu";
  std::string dtype, listen = "127.0.0.1:7430", http_address = "127.0.0.1:7431";
  std::string registry, adapter_dir, work_dir, port_file, advertise;
  std::string tls_cert, tls_key, registry_tls_ca;
  std::string token = std::getenv("QWHA_TOKEN") ? std::getenv("QWHA_TOKEN") : "";
  std::string api_token = token;  // --token: this server's own API
  serve::AdapterCacheOptions cache_options;
  serve::EngineOptions engine_options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return std::cout << kUsage, 0;
    if (arg == "--no-load-on-demand") {
      cache_options.load_on_demand = false;
      continue;
    }
    if (arg == "--no-cuda-graphs") {
      engine_options.cuda_graphs = false;
      continue;
    }
    if (i + 1 >= argc) return Usage(arg + ": missing value or unknown flag");
    const std::string value = argv[++i];
    bool ok = true;
    int64_t n = 0;
    const bool number = absl::SimpleAtoi(value, &n) && n > 0;
    if (arg == "--model")
      model_options.model_dir = value;
    else if (arg == "--bits")
      ok = number && (model_options.quant.bits = static_cast<int>(n));
    else if (arg == "--group-size")
      ok = number && (model_options.quant.group_size = static_cast<int>(n));
    else if (arg == "--method")
      ok = value == "rtn";
    else if (arg == "--target-modules")
      model_options.target_modules = absl::StrSplit(value, ',');
    else if (arg == "--device")
      device = value;
    else if (arg == "--dtype")
      dtype = value;
    else if (arg == "--listen")
      listen = value;
    else if (arg == "--http")
      http_address = value;
    else if (arg == "--registry")
      registry = value;
    else if (arg == "--registry-token")
      token = value;
    else if (arg == "--token")
      api_token = value;
    else if (arg == "--tls-cert")
      tls_cert = value;
    else if (arg == "--tls-key")
      tls_key = value;
    else if (arg == "--registry-tls-ca")
      registry_tls_ca = value;
    else if (arg == "--advertise")
      ok = !(advertise = value).empty();
    else if (arg == "--adapter-dir")
      adapter_dir = value;
    else if (arg == "--memory-budget-bytes")
      ok = number && (cache_options.memory_budget_bytes = n);
    else if (arg == "--max-batch")
      ok = number && (engine_options.max_batch = n);
    else if (arg == "--max-seq-len")
      ok = number && (engine_options.max_seq_len = n);
    else if (arg == "--max-prefill-tokens")
      ok = number && (engine_options.max_prefill_tokens = n);
    else if (arg == "--work-dir")
      work_dir = value;
    else if (arg == "--port-file")
      port_file = value;
    else
      return Usage(arg + ": unknown flag");
    if (!ok) return Usage(absl::StrCat(arg, ": bad value '", value, "'"));
  }
  if (model_options.model_dir.empty()) return Usage("--model is required");
  if (registry.empty() == adapter_dir.empty())
    return Usage("give exactly one of --registry and --adapter-dir");
  if (!advertise.empty() && registry.empty())
    return Usage("--advertise needs --registry (the scheduler to register with)");
  try {
    model_options.device = torch::Device(device);
  } catch (const c10::Error&) {
    return Usage(absl::StrCat("--device: bad value '", device, "'"));
  }
  if (dtype.empty()) dtype = model_options.device.is_cuda() ? "bfloat16" : "float32";
  auto parsed_dtype = model::ParseDtypeName(dtype);
  if (!parsed_dtype.ok()) return Usage(absl::StrCat("--dtype: ", parsed_dtype.status().message()));
  model_options.dtype = *parsed_dtype;
  auto server_credentials = api::ServerCredentials({tls_cert, tls_key});
  if (!server_credentials.ok()) return Usage(std::string(server_credentials.status().message()));
  auto registry_credentials = api::ChannelCredentials(registry_tls_ca, "--registry-tls-ca");
  if (!registry_credentials.ok()) {
    return Usage(std::string(registry_credentials.status().message()));
  }
  model_options.max_seq_len = engine_options.max_seq_len;
  const bool own_work_dir = work_dir.empty();
  if (own_work_dir) {
    work_dir =
        (std::filesystem::temp_directory_path() / absl::StrCat("qwha-serve-", ::getpid())).string();
  }
  std::filesystem::create_directories(work_dir);

  const auto start = std::chrono::steady_clock::now();
  auto digest = ModelDirectoryDigest(model_options.model_dir);
  if (!digest.ok()) return std::cerr << "qwha-serve: " << digest.status() << "\n", 1;
  auto model = serve::ServingModel::Load(model_options);
  if (!model.ok()) return std::cerr << "qwha-serve: " << model.status() << "\n", 1;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  const std::string tokenizer_path = model_options.model_dir + "/tokenizer.json";
  if (std::filesystem::exists(tokenizer_path)) {
    auto loaded = tokenizer::Tokenizer::FromFile(tokenizer_path);
    if (!loaded.ok()) return std::cerr << "qwha-serve: " << loaded.status() << "\n", 1;
    tokenizer = *std::move(loaded);
  }

  serve::ServeMetrics metrics;
  std::unique_ptr<serve::AdapterSource> source;
  if (!registry.empty()) {
    source = std::make_unique<serve::RegistryAdapterSource>(
        grpc::CreateChannel(registry, *registry_credentials), token, work_dir);
  } else {
    source = std::make_unique<serve::DirectoryAdapterSource>(adapter_dir);
  }
  cache_options.base_model_digest = *digest;
  auto cache = std::make_unique<serve::AdapterCache>(model->get(), source.get(), cache_options,
                                                     metrics.CacheHooks());
  auto engine =
      serve::Engine::Create(model->get(), tokenizer.get(), engine_options, metrics.EngineHooks());
  if (!engine.ok()) return std::cerr << "qwha-serve: " << engine.status() << "\n", 1;
  metrics.SetStatic((*model)->memory_bytes(), (*engine)->stats().kv_bytes,
                    cache_options.memory_budget_bytes);

  auto http = http::HttpServer::Start(http_address, metrics.registry());
  if (!http.ok()) return std::cerr << "qwha-serve: " << http.status() << "\n", 1;
  serve::InferenceServiceImpl service(
      {engine->get(), cache.get(), model->get(), tokenizer.get(), &metrics, *digest, api_token});
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(listen, *server_credentials, &grpc_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0)
    return std::cerr << "qwha-serve: cannot listen on " << listen << "\n", 1;
  // Registered before the port file appears, so whoever waits for the file
  // finds the server registered too.
  std::unique_ptr<serve::SchedulerRegistration> registration;
  if (!advertise.empty()) {
    v1::RegisterInferenceServerRequest request;
    request.set_address(AdvertisedAddress(advertise, grpc_port));
    request.set_base_model_digest(*digest);
    request.mutable_quantization()->set_bits(model_options.quant.bits);
    request.mutable_quantization()->set_group_size(model_options.quant.group_size);
    request.mutable_quantization()->set_method(quant::QuantMethodName(model_options.quant.method));
    std::filesystem::path model_path(model_options.model_dir);
    if (model_path.filename().empty()) model_path = model_path.parent_path();
    request.set_name(model_path.filename().string());
    auto started = serve::SchedulerRegistration::Start(
        grpc::CreateChannel(registry, *registry_credentials), token, request);
    if (!started.ok()) return std::cerr << "qwha-serve: " << started.status() << "\n", 1;
    registration = *std::move(started);
    std::cerr << "qwha-serve: advertised to " << registry << " as " << request.address()
              << std::endl;
  }
  if (!port_file.empty()) {
    absl::Status st =
        io::WriteFileAtomically(port_file, absl::StrCat(grpc_port, " ", (*http)->port(), "\n"));
    if (!st.ok()) return std::cerr << "qwha-serve: " << st << "\n", 1;
  }
  std::cerr << "qwha-serve: grpc " << grpc_port << " (" << api::TransportName(!tls_cert.empty())
            << "), http " << (*http)->port() << ", model " << model_options.model_dir << " ("
            << model_options.quant.bits << "-bit rtn, group " << model_options.quant.group_size
            << ", " << dtype << " on " << device << ", base " << (*model)->memory_bytes()
            << " bytes, KV " << (*engine)->stats().kv_bytes << " bytes) ready in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
            << " s" << std::endl;

  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  while (!g_stop) {
    const serve::EngineStats stats = (*engine)->stats();
    metrics.SetQueue(stats.running, stats.waiting);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  registration.reset();  // no more heartbeats: the scheduler stops pushing after its TTL
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  engine->reset();  // ends every request and drops its adapter pin
  cache.reset();
  if (own_work_dir) (void)io::RemoveTree(work_dir);
  std::cerr << "qwha-serve: stopped" << std::endl;
  return 0;
}

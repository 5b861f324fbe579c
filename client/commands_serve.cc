// qwhactl inference commands: serve load | unload | list, and generate —
// against a qwha-serve InferenceService (--server, default $QWHA_SERVER or
// 127.0.0.1:7430), not the scheduler; and serve servers — the scheduler's
// list of registered inference servers.
#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/commands.h"
#include "client/render.h"
#include "qwha/v1/inference.grpc.pb.h"
#include "server/api/auth.h"

namespace qwha::client {
namespace {

constexpr char kDefaultServer[] = "127.0.0.1:7430";

const FlagSpec kServerFlag = {"server", FlagType::kString, "HOST:PORT",
                              "inference server (default: $QWHA_SERVER, 127.0.0.1:7430)"};

std::string ServerAddress(Context& context) {
  if (context.flags().Has("server")) return context.flags().String("server");
  auto it = context.environment().env.find("QWHA_SERVER");
  return it != context.environment().env.end() && !it->second.empty() ? it->second : kDefaultServer;
}

std::unique_ptr<v1::InferenceService::Stub> Stub(Context& context) {
  return v1::InferenceService::NewStub(
      grpc::CreateChannel(ServerAddress(context), context.credentials()));
}

// The token (as the scheduler's calls carry it: qwha-serve --token) and a
// deadline: --timeout when given, else `fallback` (none when zero).
void Prepare(Context& context, grpc::ClientContext* call, std::chrono::milliseconds fallback) {
  api::AddToken(call, context.token());
  const auto timeout = context.flags().Has("timeout") ? context.timeout() : fallback;
  if (timeout.count() > 0) call->set_deadline(std::chrono::system_clock::now() + timeout);
}

int Fail(Context& context, const grpc::Status& status) {
  const absl::Status s(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  std::string message = status.error_message();
  if (absl::IsUnavailable(s)) {
    message = absl::StrCat("cannot reach the inference server at ", ServerAddress(context), ": ",
                           message, context.TlsHint());
  } else if (absl::IsDeadlineExceeded(s)) {
    message = absl::StrCat("the inference server at ", ServerAddress(context),
                           " did not answer in time: ", message);
  } else if (absl::IsUnauthenticated(s)) {
    message = absl::StrCat("the inference server at ", ServerAddress(context), ": ", message,
                           " (set the token with --token, QWHA_TOKEN or the config file)");
  }
  context.err() << "qwhactl: error: " << message << "\n";
  return ExitCodeForStatus(s);
}

std::string Short(const std::string& digest) { return digest.substr(0, 12); }

int Load(Context& context) {
  v1::LoadAdapterRequest request;
  request.set_adapter_id(context.arg(0));
  request.set_name(context.flags().String("name"));
  grpc::ClientContext call;
  Prepare(context, &call, std::chrono::minutes(10));
  v1::LoadedAdapter loaded;
  grpc::Status status = Stub(context)->LoadAdapter(&call, request, &loaded);
  if (!status.ok()) return Fail(context, status);
  if (context.json()) return context.PrintJson(loaded);
  context.out() << (loaded.cache_hit() ? "Already loaded: " : "Loaded ") << context.arg(0) << " as "
                << (request.name().empty() ? context.arg(0) : request.name()) << " (digest "
                << Short(loaded.digest()) << ", " << loaded.adapter_type() << ", "
                << HumanBytes(loaded.memory_bytes()) << ", "
                << absl::StrFormat("%.2f", loaded.load_seconds()) << " s)\n";
  return kExitOk;
}

int Unload(Context& context) {
  v1::UnloadAdapterRequest request;
  request.set_name(context.arg(0));
  grpc::ClientContext call;
  Prepare(context, &call, std::chrono::milliseconds(0));
  v1::UnloadAdapterResponse response;
  grpc::Status status = Stub(context)->UnloadAdapter(&call, request, &response);
  if (!status.ok()) return Fail(context, status);
  if (context.json()) return context.PrintJson(response);
  context.out() << "Unloaded " << context.arg(0) << " (digest "
                << Short(response.adapter().digest()) << ", freed "
                << HumanBytes(response.freed_bytes()) << ")\n";
  return kExitOk;
}

int List(Context& context) {
  grpc::ClientContext call;
  Prepare(context, &call, std::chrono::seconds(30));
  v1::ListLoadedAdaptersResponse response;
  grpc::Status status =
      Stub(context)->ListAdapters(&call, v1::ListLoadedAdaptersRequest(), &response);
  if (!status.ok()) return Fail(context, status);
  if (context.json()) return context.PrintJson(response);
  Table table({"NAMES", "ADAPTER", "DIGEST", "TYPE", "MEMORY", "REQUESTS", "LAST USED"});
  const auto now = std::chrono::system_clock::now();
  for (const v1::LoadedAdapter& a : response.adapters()) {
    table.AddRow({a.names().empty() ? "(finishing)" : absl::StrJoin(a.names(), ","), a.adapter_id(),
                  Short(a.digest()), a.adapter_type(), HumanBytes(a.memory_bytes()),
                  absl::StrCat(a.active_requests()), Age(a.last_used_at(), now)});
  }
  table.Print(context.out());
  const auto& q = response.quantization();
  context.out() << "\nMemory " << HumanBytes(response.memory_used_bytes()) << " of "
                << HumanBytes(response.memory_budget_bytes()) << "; base "
                << Short(response.base_model_digest()) << " (" << q.bits() << "-bit " << q.method()
                << ", group " << q.group_size() << ")\n";
  return kExitOk;
}

int Servers(Context& context) {
  auto servers = context.client().ListInferenceServers(context.flags().String("base-digest"));
  if (!servers.ok()) return context.Fail(servers.status());
  if (context.json()) return context.PrintJson(*servers);
  Table table({"ADDRESS", "NAME", "BASE", "QUANTIZATION", "LIVE", "LAST SEEN"});
  const auto now = std::chrono::system_clock::now();
  for (const v1::InferenceServer& s : servers->servers()) {
    const auto& q = s.quantization();
    table.AddRow({s.address(), s.name(), Short(s.base_model_digest()),
                  absl::StrCat(q.bits(), "-bit ", q.method(), ", group ", q.group_size()),
                  s.live() ? "yes" : "no", Age(s.last_seen_at(), now) + " ago"});
  }
  table.Print(context.out());
  return kExitOk;
}

const char* ReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_EOS:
      return "eos";
    case v1::FINISH_REASON_STOP_STRING:
      return "stop string";
    default:
      return "unspecified";
  }
}

int Generate(Context& context) {
  const ParsedFlags& f = context.flags();
  v1::GenerateRequest request;
  if (f.Bool("chat") || f.Has("system")) {
    if (f.Has("system")) {
      v1::InferenceChatMessage* system = request.add_messages();
      system->set_role("system");
      system->set_content(f.String("system"));
    }
    v1::InferenceChatMessage* user = request.add_messages();
    user->set_role("user");
    user->set_content(context.arg(0));
  } else {
    request.set_prompt(context.arg(0));
  }
  request.set_adapter(f.String("adapter"));
  const int64_t max_new = f.Int("max-new-tokens", 0);
  if (max_new < 0 || max_new > INT32_MAX)
    return context.Usage("--max-new-tokens: expected 0..2^31");
  request.set_max_new_tokens(static_cast<int32_t>(max_new));
  request.set_temperature(f.Double("temperature", 0));
  request.set_top_p(f.Double("top-p", 0));
  request.set_top_k(static_cast<int32_t>(f.Int("top-k", 0)));
  for (const std::string& stop : f.List("stop")) request.add_stop(stop);
  request.set_seed(static_cast<uint64_t>(f.Int("seed", 0)));
  request.set_ignore_eos(f.Bool("ignore-eos"));

  grpc::ClientContext call;
  Prepare(context, &call, std::chrono::milliseconds(0));
  auto reader = Stub(context)->Generate(&call, request);
  v1::GenerateResponse response, last;
  std::string text;
  while (reader->Read(&response)) {
    if (context.json()) {
      auto json = ToJson(response, /*pretty=*/false);
      if (json.ok()) context.out() << *json << "\n" << std::flush;
    } else {
      context.out() << response.text() << std::flush;
    }
    text += response.text();
    last = response;
  }
  grpc::Status status = reader->Finish();
  if (!context.json() && !text.empty() && text.back() != '\n') context.out() << "\n";
  if (!status.ok()) return Fail(context, status);
  if (!context.json()) {
    const v1::GenerateUsage& u = last.usage();
    const double decode = u.total_seconds() - u.time_to_first_token_seconds();
    context.err() << "[" << u.completion_tokens() << " tokens, " << ReasonName(last.finish_reason())
                  << ", first token " << absl::StrFormat("%.3f", u.time_to_first_token_seconds())
                  << " s"
                  << (u.completion_tokens() > 1 && decode > 0
                          ? absl::StrFormat(", %.1f tokens/s", (u.completion_tokens() - 1) / decode)
                          : "")
                  << (last.adapter_digest().empty() ? ", base model"
                                                    : ", adapter " + Short(last.adapter_digest()))
                  << "]\n";
  }
  return kExitOk;
}

}  // namespace

void AddServeCommands(std::vector<Command>* commands) {
  commands->push_back({"serve load",
                       "ADAPTER_ID [--name NAME]",
                       "Load a registry adapter into an inference server",
                       "The server downloads the adapter from its registry, verifies every file's\n"
                       "sha256 and the adapter digest, and serves it under NAME (default: the id)\n"
                       "when this returns. Loading another adapter under a name that is in use\n"
                       "moves the name; requests already running finish with the old version.",
                       {kServerFlag, {"name", FlagType::kString, "NAME", "serving name"}},
                       1,
                       1,
                       Load});
  commands->push_back({"serve unload",
                       "NAME",
                       "Unload an adapter and free its memory",
                       "Waits for the requests using the adapter to finish (up to --timeout when\n"
                       "given), then frees its memory.",
                       {kServerFlag},
                       1,
                       1,
                       Unload});
  commands->push_back({"serve list",
                       "",
                       "List the adapters an inference server has loaded",
                       "",
                       {kServerFlag},
                       0,
                       0,
                       List});
  commands->push_back(
      {"serve servers",
       "[--base-digest DIGEST]",
       "List the inference servers registered with the scheduler",
       "Servers started with qwha-serve --advertise register with the scheduler and\n"
       "heartbeat; jobs submitted with --load-on-inference-servers push their adapter\n"
       "to the live ones of their base model. Asks the scheduler (--address), not --server.",
       {{"base-digest", FlagType::kString, "DIGEST", "only servers of this base model digest"}},
       0,
       0,
       Servers});
  commands->push_back(
      {"generate",
       "PROMPT [flags]",
       "Generate text with an inference server, streaming it as it arrives",
       "Greedy unless --temperature is given. With --chat (or --system) the prompt is\n"
       "a user message in qwha's chat template. Usage goes to stderr; with -o json\n"
       "every streamed message is printed as one JSON line.",
       {kServerFlag,
        {"adapter", FlagType::kString, "NAME", "serving name of the adapter (default: the base)"},
        {"max-new-tokens", FlagType::kInt, "N", "tokens to generate at most (default 128)"},
        {"temperature", FlagType::kDouble, "T", "sampling temperature (default 0: greedy)"},
        {"top-p", FlagType::kDouble, "P", "nucleus sampling mass"},
        {"top-k", FlagType::kInt, "K", "sample among the K most likely tokens"},
        {"stop", FlagType::kList, "TEXT", "stop before this text (repeatable)"},
        {"seed", FlagType::kInt, "N", "sampling seed"},
        {"ignore-eos", FlagType::kBool, "", "generate --max-new-tokens tokens past end-of-text"},
        {"chat", FlagType::kBool, "", "send the prompt as a chat user message"},
        {"system", FlagType::kString, "TEXT", "system message (implies --chat)"}},
       1,
       1,
       Generate});
}

}  // namespace qwha::client

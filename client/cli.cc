// qwhactl: finding the command, parsing its flags, resolving the config.
#include "client/cli.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/commands.h"
#include "client/config.h"
#include "client/flags.h"
#include "server/api/tls.h"

namespace qwha::client {
namespace {

const std::vector<FlagSpec>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"address", FlagType::kString, "HOST:PORT",
       "scheduler address (default: $QWHA_ADDRESS, config file, 127.0.0.1:7420)"},
      {"token", FlagType::kString, "TOKEN", "API token (default: $QWHA_TOKEN, config file)"},
      {"tls-ca", FlagType::kString, "FILE",
       "use TLS, trusting these PEM roots (\"system\": the system's; default: $QWHA_TLS_CA, "
       "config file, plaintext)"},
      {"config", FlagType::kString, "FILE",
       "config file (default: $QWHA_CONFIG, ~/.config/qwha/config.yaml)"},
      {"output", FlagType::kString, "table|json", "output format (default table)", 'o'},
      {"timeout", FlagType::kDouble, "SECONDS", "deadline of each request (default 30)"},
  };
  return *flags;
}

const std::vector<Command>& Commands() {
  static const auto* commands = [] {
    auto* all = new std::vector<Command>;
    AddJobCommands(all);
    AddAdapterCommands(all);
    AddModelAndDatasetCommands(all);
    AddServeCommands(all);
    return all;
  }();
  return *commands;
}

// "adapters" for "adapters pull"; "" for a top-level command.
std::string GroupOf(const Command& command) {
  size_t space = command.path.find(' ');
  return space == std::string::npos ? "" : command.path.substr(0, space);
}

bool IsGroup(const std::string& name) {
  for (const Command& command : Commands()) {
    if (GroupOf(command) == name) return true;
  }
  return false;
}

const Command* Find(const std::string& path) {
  for (const Command& command : Commands()) {
    if (command.path == path) return &command;
  }
  return nullptr;
}

void PrintOverview(std::ostream& out) {
  out << "qwhactl: fine-tune quantized LLMs with QWHA adapters on a qwha scheduler.\n\n"
      << "Usage: qwhactl [global flags] COMMAND [flags] [arguments]\n\nCommands:\n";
  size_t width = 0;
  for (const Command& command : Commands()) {
    width = std::max(width, command.path.size() + 1 + command.args_usage.size());
  }
  for (const Command& command : Commands()) {
    std::string left = absl::StrCat(command.path, " ", command.args_usage);
    out << "  " << left << std::string(width + 3 - left.size(), ' ') << command.summary << "\n";
  }
  out << "\nGlobal flags (before or after the command):\n"
      << FlagsHelp(GlobalFlags())
      << "\nExit codes: 0 ok, 1 job failed or other error, 2 job cancelled, 3 usage error,\n"
      << "4 not found, 5 invalid argument, 6 scheduler unavailable.\n"
      << "Run 'qwhactl COMMAND --help' for a command's flags.\n";
}

void PrintGroup(const std::string& group, std::ostream& out) {
  out << "Usage: qwhactl " << group << " SUBCOMMAND\n\nSubcommands:\n";
  for (const Command& command : Commands()) {
    if (GroupOf(command) != group) continue;
    out << "  " << command.path << " " << command.args_usage << "\n      " << command.summary
        << "\n";
  }
}

void PrintCommand(const Command& command, std::ostream& out) {
  out << "Usage: qwhactl " << command.path << " " << command.args_usage << "\n\n"
      << command.summary << "\n";
  if (!command.description.empty()) out << "\n" << command.description << "\n";
  if (!command.flags.empty()) out << "\nFlags:\n" << FlagsHelp(command.flags);
  out << "\nGlobal flags:\n" << FlagsHelp(GlobalFlags());
}

int UsageError(std::ostream& err, const std::string& where, const std::string& message) {
  err << "qwhactl" << (where.empty() ? "" : " ") << where << ": " << message << "\n"
      << "Run 'qwhactl " << (where.empty() ? "" : where + " ") << "--help' for usage.\n";
  return kExitUsage;
}

// `qwhactl help [COMMAND [SUBCOMMAND]]`.
int Help(const std::vector<std::string>& topic, std::ostream& out, std::ostream& err) {
  if (topic.empty()) {
    PrintOverview(out);
    return kExitOk;
  }
  std::string path = absl::StrJoin(topic, " ");
  if (const Command* command = Find(path)) {
    PrintCommand(*command, out);
    return kExitOk;
  }
  if (topic.size() == 1 && IsGroup(topic[0])) {
    PrintGroup(topic[0], out);
    return kExitOk;
  }
  return UsageError(err, "help", absl::StrCat("unknown command \"", path, "\""));
}

}  // namespace

int ExitCodeForStatus(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kInvalidArgument:
      return kExitInvalid;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    default:
      return kExitFailed;
  }
}

int RunQwhactl(const std::vector<std::string>& args, const CliEnvironment& environment,
               std::ostream& out, std::ostream& err) {
  // Global flags may come before the command: set them aside.
  std::vector<std::string> rest;
  size_t i = 0;
  for (; i < args.size() && args[i].size() > 1 && args[i][0] == '-'; ++i) {
    if (args[i] == "-h" || args[i] == "--help") return Help({}, out, err);
    rest.push_back(args[i]);
    const std::string name = args[i].substr(args[i][1] == '-' ? 2 : 1);
    bool takes_value = name.find('=') == std::string::npos;
    for (const FlagSpec& flag : GlobalFlags()) {
      if ((flag.name == name || (name.size() == 1 && flag.short_name == name[0])) && takes_value &&
          i + 1 < args.size()) {
        rest.push_back(args[++i]);
      }
    }
  }
  if (i >= args.size()) {
    PrintOverview(err);
    return kExitUsage;
  }
  std::string path = args[i++];
  if (path == "help") return Help({args.begin() + i, args.end()}, out, err);
  if (IsGroup(path)) {
    if (i >= args.size() || args[i] == "-h" || args[i] == "--help") {
      PrintGroup(path, i >= args.size() ? err : out);
      return i >= args.size() ? kExitUsage : kExitOk;
    }
    const std::string group = path;
    path = absl::StrCat(group, " ", args[i++]);
    if (Find(path) == nullptr) {
      return UsageError(err, group, absl::StrCat("unknown subcommand \"", args[i - 1], "\""));
    }
  }
  const Command* command = Find(path);
  if (command == nullptr) {
    return UsageError(err, "", absl::StrCat("unknown command \"", path, "\""));
  }
  rest.insert(rest.end(), args.begin() + i, args.end());
  if (WantsHelp(rest)) {
    PrintCommand(*command, out);
    return kExitOk;
  }

  std::vector<FlagSpec> specs = command->flags;
  specs.insert(specs.end(), GlobalFlags().begin(), GlobalFlags().end());
  auto flags = ParseFlags(rest, specs);
  if (!flags.ok()) return UsageError(err, path, std::string(flags.status().message()));
  const size_t count = flags->positional().size();
  if (count < command->min_args || count > command->max_args) {
    std::string message =
        count < command->min_args
            ? absl::StrCat("missing argument; usage: qwhactl ", path, " ", command->args_usage)
            : absl::StrCat("unexpected argument \"", flags->positional()[command->max_args], "\"");
    return UsageError(err, path, message);
  }
  const std::string output = flags->String("output", "table");
  if (output != "table" && output != "json") {
    return UsageError(err, path,
                      absl::StrCat("--output: expected table or json, got \"", output, "\""));
  }
  const double timeout_seconds = flags->Double("timeout", 30);
  if (!(timeout_seconds > 0)) {
    return UsageError(err, path, "--timeout: expected a positive number of seconds");
  }

  ConfigInputs inputs;
  if (flags->Has("address")) inputs.address_flag = flags->String("address");
  if (flags->Has("token")) inputs.token_flag = flags->String("token");
  if (flags->Has("tls-ca")) inputs.tls_ca_flag = flags->String("tls-ca");
  if (flags->Has("config")) inputs.config_flag = flags->String("config");
  inputs.env = environment.env;
  auto config = ResolveConfig(inputs);
  if (!config.ok()) {
    err << "qwhactl: error: " << config.status().message() << "\n";
    return kExitUsage;
  }
  // Errors name where the roots came from: the flag, the variable, or the file's key.
  const std::string& source = config->tls_ca_source;
  auto credentials = api::ChannelCredentials(
      config->tls_ca, source == config->config_path ? absl::StrCat("tls_ca in ", source) : source);
  if (!credentials.ok()) {
    err << "qwhactl: error: " << credentials.status().message() << "\n";
    return kExitUsage;
  }
  Context context(path, *std::move(flags), *std::move(config),
                  std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)),
                  output == "json", environment, out, err);
  context.set_credentials(*std::move(credentials));
  return command->run(context);
}

}  // namespace qwha::client

// Internal to qwhactl: what every command gets (Context) and how commands
// are declared (Command). The commands live in commands_*.cc; cli.cc finds,
// parses and runs them.
#pragma once

#include <chrono>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/cli.h"
#include "client/client.h"
#include "client/config.h"
#include "client/flags.h"
#include "google/protobuf/message.h"

namespace qwha::client {

class Context {
 public:
  Context(std::string command, ParsedFlags flags, ResolvedConfig config,
          std::chrono::milliseconds timeout, bool json, const CliEnvironment& environment,
          std::ostream& out, std::ostream& err);
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const ParsedFlags& flags() const { return flags_; }
  // Positional argument i (the command checked their number).
  const std::string& arg(size_t i) const { return flags_.positional().at(i); }
  bool json() const { return json_; }
  // The deadline of each request (--timeout, default 30 s).
  std::chrono::milliseconds timeout() const { return timeout_; }
  const CliEnvironment& environment() const { return environment_; }
  int terminal_width() const;
  std::ostream& out() { return out_; }
  std::ostream& err() { return err_; }

  // The client for the resolved address and token, created on first use.
  Client& client();
  // The resolved API token (--token, $QWHA_TOKEN, the config file); may be empty.
  const std::string& token() const { return config_.token; }
  // The resolved TLS roots (--tls-ca, $QWHA_TLS_CA, the config file); "" for plaintext.
  const std::string& tls_ca() const { return config_.tls_ca; }
  // Appended to "cannot reach" errors: how to trust a TLS server's CA, when
  // no roots are configured; "" otherwise.
  const char* TlsHint() const {
    return config_.tls_ca.empty() ? " (if it serves TLS, give its CA with --tls-ca or QWHA_TLS_CA)"
                                  : "";
  }
  // The channel credentials of every connection: TLS when --tls-ca,
  // $QWHA_TLS_CA or the config file's tls_ca names roots, else plaintext.
  const std::shared_ptr<grpc::ChannelCredentials>& credentials() const { return credentials_; }
  void set_credentials(std::shared_ptr<grpc::ChannelCredentials> c) { credentials_ = std::move(c); }

  // Prints "qwhactl: error: <message>" (for UNAVAILABLE: which address could
  // not be reached and where it came from) and returns ExitCodeForStatus.
  int Fail(const absl::Status& status);
  // Prints "qwhactl <command>: <message>" and the help hint; returns 3.
  int Usage(const std::string& message);
  // Prints `message` as indented protobuf JSON; returns 0 (or Fail).
  int PrintJson(const google::protobuf::Message& message);
  // On a terminal stderr: a redrawn "<verb> 12 MiB / 40 MiB (30%)" line;
  // otherwise nothing. Call EndTransfer() after the transfer.
  ProgressCallback TransferProgress(const std::string& verb);
  void EndTransfer();

 private:
  std::string command_;
  ParsedFlags flags_;
  ResolvedConfig config_;
  std::chrono::milliseconds timeout_;
  bool json_;
  const CliEnvironment& environment_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<Client> client_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_ = grpc::InsecureChannelCredentials();
  bool transfer_shown_ = false;
};

struct Command {
  std::string path;         // "submit", "adapters pull"
  std::string args_usage;   // after the path in the usage line, e.g. "ID [--dir D]"
  std::string summary;      // one line for `qwhactl help`
  std::string description;  // more lines for `qwhactl CMD --help`; may be empty
  std::vector<FlagSpec> flags;
  size_t min_args = 0;  // positional arguments
  size_t max_args = 0;
  int (*run)(Context& context) = nullptr;
};

// Appends the commands of each family, in help order.
void AddJobCommands(std::vector<Command>* commands);              // commands_jobs.cc
void AddAdapterCommands(std::vector<Command>* commands);          // commands_adapters.cc
void AddModelAndDatasetCommands(std::vector<Command>* commands);  // commands_data.cc
void AddServeCommands(std::vector<Command>* commands);            // commands_serve.cc

// Shared by the job and adapter commands: the job's `watch` loop, returning
// the exit code for the job's outcome (0, 1, 2) or for the error.
int WatchAndReport(Context& context, const std::string& job_id);

}  // namespace qwha::client

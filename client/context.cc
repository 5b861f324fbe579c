// Context: what every qwhactl command gets (commands.h).
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/commands.h"
#include "client/render.h"

namespace qwha::client {

Context::Context(std::string command, ParsedFlags flags, ResolvedConfig config,
                 std::chrono::milliseconds timeout, bool json, const CliEnvironment& environment,
                 std::ostream& out, std::ostream& err)
    : command_(std::move(command)),
      flags_(std::move(flags)),
      config_(std::move(config)),
      timeout_(timeout),
      json_(json),
      environment_(environment),
      out_(out),
      err_(err) {}

int Context::terminal_width() const {
  if (environment_.terminal_width > 0) return environment_.terminal_width;
  auto it = environment_.env.find("COLUMNS");
  int columns = 0;
  if (it != environment_.env.end() && absl::SimpleAtoi(it->second, &columns) && columns > 0) {
    return columns;
  }
  return 80;
}

Client& Context::client() {
  if (client_ == nullptr) {
    ClientOptions options;
    options.address = config_.address;
    options.token = config_.token;
    options.credentials = credentials_;
    options.timeout = timeout_;
    client_ = std::make_unique<Client>(std::move(options));
  }
  return *client_;
}

int Context::Fail(const absl::Status& status) {
  EndTransfer();
  std::string message(status.message());
  std::string source = config_.address_source == "default"
                           ? "the default"
                           : absl::StrCat("from ", config_.address_source);
  if (absl::IsUnavailable(status)) {
    message = absl::StrCat("cannot reach the scheduler at ", config_.address, " (", source,
                           "): ", status.message(), TlsHint());
  } else if (absl::IsDeadlineExceeded(status)) {
    message = absl::StrCat(
        "the scheduler at ", config_.address, " (", source, ") did not answer in time (--timeout ",
        absl::StrFormat("%g", timeout_.count() / 1000.0), "s): ", status.message());
  } else if (absl::IsUnauthenticated(status)) {
    message = absl::StrCat(status.message(), " (set the token with --token, QWHA_TOKEN or ",
                           "the config file)");
  }
  err_ << "qwhactl: error: " << message << "\n";
  return ExitCodeForStatus(status);
}

int Context::Usage(const std::string& message) {
  err_ << "qwhactl " << command_ << ": " << message << "\n"
       << "Run 'qwhactl " << command_ << " --help' for usage.\n";
  return kExitUsage;
}

int Context::PrintJson(const google::protobuf::Message& message) {
  auto json = ToJson(message, /*pretty=*/true);
  if (!json.ok()) return Fail(json.status());
  out_ << *json << "\n";
  return kExitOk;
}

ProgressCallback Context::TransferProgress(const std::string& verb) {
  if (!environment_.stderr_is_tty) return nullptr;
  return [this, verb](int64_t done, int64_t total) {
    std::string line = absl::StrCat(verb, " ", HumanBytes(done), " / ", HumanBytes(total));
    if (total > 0) absl::StrAppend(&line, absl::StrFormat(" (%d%%)", done * 100 / total));
    err_ << "\r\x1b[K" << line;
    err_.flush();
    transfer_shown_ = true;
  };
}

void Context::EndTransfer() {
  if (!transfer_shown_) return;
  err_ << "\r\x1b[K";
  err_.flush();
  transfer_shown_ = false;
}

}  // namespace qwha::client

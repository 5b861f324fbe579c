// qwhactl, the command line of qwha, as a function: RunQwhactl parses the
// arguments, talks to the scheduler and prints to the given streams, so
// tests drive it exactly as a user would. qwhactl_main.cc only gathers the
// process environment. `qwhactl help` lists the commands.
//
// Thread safety: RunQwhactl may run concurrently with itself (it shares no
// state) as long as the streams are distinct.
#pragma once

#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace qwha::client {

// The exit status of qwhactl.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,       // the job FAILED, or any error not listed below
  kExitCancelled = 2,    // the job was CANCELLED
  kExitUsage = 3,        // bad command line, job file or config file; the message names the flag
  kExitNotFound = 4,     // no such job, adapter, model, dataset or local file
  kExitInvalid = 5,      // the server (or the local dataset check) rejected an argument
  kExitUnavailable = 6,  // the scheduler cannot be reached; the message names the address
};

struct CliEnvironment {
  // The process environment (QWHA_ADDRESS, QWHA_TOKEN, QWHA_CONFIG, HOME,
  // XDG_CONFIG_HOME, COLUMNS are read).
  std::map<std::string, std::string> env;
  bool stdout_is_tty = false;  // live progress bar for `watch`
  bool stderr_is_tty = false;  // transfer progress for uploads and pulls
  int terminal_width = 0;      // columns; 0: $COLUMNS or 80
};

// Runs `qwhactl args...` (args without the program name). Results go to
// `out`, errors and usage to `err` (help asked for goes to `out`). Returns
// the ExitCode.
int RunQwhactl(const std::vector<std::string>& args, const CliEnvironment& environment,
               std::ostream& out, std::ostream& err);

// kExitNotFound for NOT_FOUND, kExitInvalid for INVALID_ARGUMENT,
// kExitUnavailable for UNAVAILABLE and DEADLINE_EXCEEDED, kExitFailed for any
// other error, kExitOk for OK.
int ExitCodeForStatus(const absl::Status& status);

}  // namespace qwha::client

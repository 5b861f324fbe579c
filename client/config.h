// Where qwhactl finds the scheduler, its token and the TLS roots to trust.
// Each setting is taken from the first place that has it:
//   address: --address, $QWHA_ADDRESS, the config file's `address`, 127.0.0.1:7420
//   token:   --token,   $QWHA_TOKEN,   the config file's `token`,   none
//   tls_ca:  --tls-ca,  $QWHA_TLS_CA,  the config file's `tls_ca`,  none (plaintext)
// The config file is YAML with only the keys `address`, `token` and `tls_ca`, at
// --config, else $QWHA_CONFIG, else $XDG_CONFIG_HOME/qwha/config.yaml, else
// $HOME/.config/qwha/config.yaml. A missing file is fine at the default
// location and an error where --config or $QWHA_CONFIG names it. Empty flag
// or variable values count as unset.
//
// Thread safety: pure functions.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace qwha::client {

struct ConfigInputs {
  std::optional<std::string> address_flag;
  std::optional<std::string> token_flag;
  std::optional<std::string> tls_ca_flag;
  std::optional<std::string> config_flag;
  // The process environment (only QWHA_ADDRESS, QWHA_TOKEN, QWHA_TLS_CA,
  // QWHA_CONFIG, XDG_CONFIG_HOME and HOME are read).
  std::map<std::string, std::string> env;
};

struct ResolvedConfig {
  std::string address;
  std::string token;
  // PEM roots to trust (a file, or "system"); "" for plaintext.
  std::string tls_ca;
  std::string tls_ca_source;   // "--tls-ca", "QWHA_TLS_CA" or the file's path; "" if none
  std::string address_source;  // "--address", "QWHA_ADDRESS", the file's path, or "default"
  std::string config_path;     // the file that was read; "" if none
};

// Resolves the settings. InvalidArgument naming the file (and the key, for
// an unknown key or a value that is not a string) when the config file is
// malformed; NotFound naming the file and where it was named when an
// explicitly given file is missing.
absl::StatusOr<ResolvedConfig> ResolveConfig(const ConfigInputs& inputs);

}  // namespace qwha::client

#include "client/config.h"

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "client/document.h"
#include "worker/io/atomic_file.h"

namespace qwha::client {
namespace {

// The value of `name` in `env` unless absent or empty.
std::optional<std::string> Get(const std::map<std::string, std::string>& env,
                               const std::string& name) {
  auto it = env.find(name);
  if (it == env.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

std::optional<std::string> NonEmpty(const std::optional<std::string>& value) {
  if (!value.has_value() || value->empty()) return std::nullopt;
  return value;
}

struct FileSettings {
  std::optional<std::string> address;
  std::optional<std::string> token;
  std::optional<std::string> tls_ca;
};

absl::StatusOr<FileSettings> ParseConfigFile(const std::string& content, const std::string& path) {
  auto document = ParseDocument(content, DocumentFormat::kYaml, path);
  if (!document.ok()) return document.status();
  FileSettings settings;
  if (document->kind == Node::Kind::kNull) return settings;  // an empty file
  if (document->kind != Node::Kind::kMap) {
    return absl::InvalidArgumentError(
        NodeError(path, *document, "", "expected a mapping with keys address, token and tls_ca"));
  }
  for (const auto& [key, value] : document->fields) {
    std::optional<std::string>* slot = key == "address"  ? &settings.address
                                       : key == "token"  ? &settings.token
                                       : key == "tls_ca" ? &settings.tls_ca
                                                         : nullptr;
    if (slot == nullptr) {
      std::string hint = ClosestName(key, {"address", "token", "tls_ca"});
      return absl::InvalidArgumentError(
          NodeError(path, value, key,
                    hint.empty() ? "unknown key (the keys are address, token and tls_ca)"
                                 : absl::StrCat("unknown key (did you mean ", hint, "?)")));
    }
    if (value.kind == Node::Kind::kNull) continue;
    if (value.kind != Node::Kind::kString && value.kind != Node::Kind::kPlain) {
      return absl::InvalidArgumentError(NodeError(
          path, value, key, absl::StrCat("expected a string, got ", DescribeNode(value))));
    }
    *slot = NonEmpty(value.text);
  }
  return settings;
}

}  // namespace

absl::StatusOr<ResolvedConfig> ResolveConfig(const ConfigInputs& inputs) {
  // Which file, and whether the user named it.
  std::string path;
  std::string named_by;
  if (auto flag = NonEmpty(inputs.config_flag)) {
    path = *flag;
    named_by = "--config";
  } else if (auto env = Get(inputs.env, "QWHA_CONFIG")) {
    path = *env;
    named_by = "QWHA_CONFIG";
  } else if (auto xdg = Get(inputs.env, "XDG_CONFIG_HOME")) {
    path = *xdg + "/qwha/config.yaml";
  } else if (auto home = Get(inputs.env, "HOME")) {
    path = *home + "/.config/qwha/config.yaml";
  }

  ResolvedConfig config;
  FileSettings file;
  if (!path.empty()) {
    auto content = io::ReadFile(path);
    if (content.ok()) {
      auto parsed = ParseConfigFile(*content, path);
      if (!parsed.ok()) return parsed.status();
      file = *parsed;
      config.config_path = path;
    } else if (!named_by.empty() || !absl::IsNotFound(content.status())) {
      std::string where = named_by.empty() ? "" : absl::StrCat(" (from ", named_by, ")");
      return absl::Status(content.status().code(),
                          absl::StrCat("config file", where, ": ", content.status().message()));
    }
  }

  if (auto flag = NonEmpty(inputs.address_flag)) {
    config.address = *flag;
    config.address_source = "--address";
  } else if (auto env = Get(inputs.env, "QWHA_ADDRESS")) {
    config.address = *env;
    config.address_source = "QWHA_ADDRESS";
  } else if (file.address) {
    config.address = *file.address;
    config.address_source = path;
  } else {
    config.address = kDefaultAddress;
    config.address_source = "default";
  }

  if (auto flag = NonEmpty(inputs.token_flag)) {
    config.token = *flag;
  } else if (auto env = Get(inputs.env, "QWHA_TOKEN")) {
    config.token = *env;
  } else if (file.token) {
    config.token = *file.token;
  }

  if (auto flag = NonEmpty(inputs.tls_ca_flag)) {
    config.tls_ca = *flag;
    config.tls_ca_source = "--tls-ca";
  } else if (auto env = Get(inputs.env, "QWHA_TLS_CA")) {
    config.tls_ca = *env;
    config.tls_ca_source = "QWHA_TLS_CA";
  } else if (file.tls_ca) {
    config.tls_ca = *file.tls_ca;
    config.tls_ca_source = path;
  }
  return config;
}

}  // namespace qwha::client

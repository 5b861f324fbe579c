#include "server/registry/inference_servers.h"

#include <cctype>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/registry/registry_rows.h"
#include "server/store/schema.h"
#include "worker/io/sha256.h"

namespace qwha::registry {
namespace {

using store::AsDouble;
using store::AsString;

absl::Status Invalid(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

}  // namespace

absl::Status ValidateServerAddress(const std::string& field, const std::string& address) {
  if (address.empty()) return Invalid(field, "required (host:port)");
  if (address.size() > 256) return Invalid(field, "longer than 256 bytes");
  for (char c : address) {
    if (std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)))
      return Invalid(field, absl::StrCat("'", address, "' contains whitespace"));
  }
  std::string host, port;
  if (address[0] == '[') {
    const size_t close = address.find("]:");
    if (close == std::string::npos) {
      return Invalid(field, absl::StrCat("'", address, "' is not [ipv6]:port"));
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      return Invalid(field, absl::StrCat("'", address, "' has no port (host:port)"));
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      return Invalid(field, absl::StrCat("'", address, "': put an IPv6 host in brackets"));
    }
  }
  if (host.empty()) return Invalid(field, absl::StrCat("'", address, "' has no host"));
  int port_number = 0;
  bool digits = !port.empty();
  for (char c : port) digits = digits && c >= '0' && c <= '9';
  if (!digits || !absl::SimpleAtoi(port, &port_number) || port_number < 1 || port_number > 65535) {
    return Invalid(field, absl::StrCat("'", address, "': port must be 1..65535"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::RegisterInferenceServerResponse> InferenceServerDirectory::Register(
    const v1::RegisterInferenceServerRequest& request) {
  if (absl::Status s = ValidateServerAddress("address", request.address()); !s.ok()) return s;
  const std::string& digest = request.base_model_digest();
  if (digest.empty()) return Invalid("base_model_digest", "required");
  if (!io::IsSha256Hex(digest)) {
    return Invalid("base_model_digest",
                   absl::StrCat("'", digest, "' is not 64 lower-case hex digits"));
  }
  if (request.name().size() > 200) return Invalid("name", "longer than 200 bytes");
  const double now = store::NowSeconds();
  absl::Status s = db_->Exec(
      "INSERT INTO inference_servers(address, base_model_digest, quantization, name, "
      "registered_at, last_seen) VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(address) DO UPDATE SET "
      "base_model_digest = excluded.base_model_digest, quantization = excluded.quantization, "
      "name = excluded.name, last_seen = excluded.last_seen",
      {request.address(), digest, request.quantization().SerializeAsString(), request.name(), now,
       now});
  if (!s.ok()) return s;
  v1::RegisterInferenceServerResponse response;
  response.set_heartbeat_seconds(
      std::max<int64_t>(1, static_cast<int64_t>(std::lround(options_.heartbeat_seconds))));
  response.set_ttl_seconds(
      std::max<int64_t>(1, static_cast<int64_t>(std::lround(options_.ttl_seconds))));
  return response;
}

absl::StatusOr<std::vector<v1::InferenceServer>> InferenceServerDirectory::Query(
    const std::string& base_model_digest, bool live_only) {
  const double now = store::NowSeconds();
  std::string sql =
      "SELECT address, base_model_digest, quantization, name, registered_at, last_seen "
      "FROM inference_servers WHERE 1 = 1";
  std::vector<store::Value> params;
  if (!base_model_digest.empty()) {
    sql += " AND base_model_digest = ?";
    params.push_back(base_model_digest);
  }
  if (live_only) {
    sql += " AND last_seen >= ?";
    params.push_back(now - options_.ttl_seconds);
  }
  sql += " ORDER BY last_seen DESC, address";
  auto rows = db_->Query(sql, params);
  if (!rows.ok()) return rows.status();
  std::vector<v1::InferenceServer> servers;
  for (const store::Row& r : *rows) {
    v1::InferenceServer& server = servers.emplace_back();
    server.set_address(AsString(r[0]));
    server.set_base_model_digest(AsString(r[1]));
    server.mutable_quantization()->ParseFromString(AsString(r[2]));
    server.set_name(AsString(r[3]));
    *server.mutable_registered_at() = internal::ToTimestamp(AsDouble(r[4]));
    *server.mutable_last_seen_at() = internal::ToTimestamp(AsDouble(r[5]));
    server.set_live(AsDouble(r[5]) >= now - options_.ttl_seconds);
  }
  return servers;
}

absl::StatusOr<std::vector<v1::InferenceServer>> InferenceServerDirectory::List(
    const std::string& base_model_digest) {
  return Query(base_model_digest, /*live_only=*/false);
}

absl::StatusOr<std::vector<v1::InferenceServer>> InferenceServerDirectory::Live(
    const std::string& base_model_digest) {
  return Query(base_model_digest, /*live_only=*/true);
}

absl::StatusOr<int64_t> InferenceServerDirectory::CountLive() {
  auto rows = db_->Query("SELECT COUNT(*) FROM inference_servers WHERE last_seen >= ?",
                         {store::NowSeconds() - options_.ttl_seconds});
  if (!rows.ok()) return rows.status();
  return store::AsInt((*rows)[0][0]);
}

}  // namespace qwha::registry

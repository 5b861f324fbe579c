#include "server/registry/adapter_http.h"

#include <openssl/crypto.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/registry/registry_metrics.h"

namespace qwha::registry {
namespace {

http::Response Text(int status, const std::string& message) {
  http::Response r;
  r.status = status;
  r.body = message + "\n";
  return r;
}

bool TokenMatches(const std::string& token, const std::map<std::string, std::string>& headers) {
  auto it = headers.find("authorization");
  if (it == headers.end() || !absl::StartsWith(it->second, "Bearer ")) return false;
  const std::string given = it->second.substr(7);
  return given.size() == token.size() &&
         CRYPTO_memcmp(given.data(), token.data(), token.size()) == 0;
}

http::Response Serve(RegistryStore* store, const std::string& token, RegistryMetrics& metrics,
                     const http::Request& request) {
  if (!token.empty() && !TokenMatches(token, request.headers)) {
    http::Response r = Text(401, "missing or wrong Authorization: Bearer token");
    r.headers["WWW-Authenticate"] = "Bearer";
    return r;
  }
  // {id}/files/{name}; the name may hold '/'.
  const std::string rest = request.path.substr(sizeof(kAdapterRoutePrefix) - 1);
  const size_t slash = rest.find('/');
  constexpr absl::string_view kFiles = "/files/";
  if (slash == std::string::npos || slash == 0 ||
      absl::string_view(rest).substr(slash, kFiles.size()) != kFiles ||
      rest.size() == slash + kFiles.size()) {
    return Text(404, absl::StrCat("no such resource ", request.path,
                                  " (GET /v1/adapters/{id}/files/{name})"));
  }
  const std::string id = rest.substr(0, slash);
  const std::string name = rest.substr(slash + kFiles.size());
  auto adapter = store->GetAdapter(id);
  if (!adapter.ok()) {
    return Text(adapter.status().code() == absl::StatusCode::kNotFound ? 404 : 500,
                std::string(adapter.status().message()));
  }
  const v1::FileInfo* info = nullptr;
  for (const v1::FileInfo& f : adapter->files()) {
    if (f.name() == name) info = &f;
  }
  if (info == nullptr) return Text(404, absl::StrCat("adapter ", id, " has no file '", name, "'"));
  auto path = store->blobs()->PathOf(info->sha256());
  if (!path.ok()) return Text(500, absl::StrCat("adapter ", id, " file ", name, ": blob missing"));

  http::Response r;
  r.content_type = "application/octet-stream";
  r.file_path = *path;
  r.headers["ETag"] = absl::StrCat("\"", info->sha256(), "\"");
  r.headers["X-Content-SHA256"] = info->sha256();
  r.headers["Accept-Ranges"] = "bytes";
  const size_t base = name.rfind('/');
  r.headers["Content-Disposition"] = absl::StrCat(
      "attachment; filename=\"", base == std::string::npos ? name : name.substr(base + 1), "\"");
  int64_t length = info->size();
  auto range_header = request.headers.find("range");
  if (range_header != request.headers.end()) {
    auto range = http::ParseRange(range_header->second);  // unparsable: serve the whole file
    if (range && range->first >= info->size()) {
      http::Response bad =
          Text(416, absl::StrCat("range starts past the end (", info->size(), " bytes)"));
      bad.headers["Content-Range"] = absl::StrCat("bytes */", info->size());
      return bad;
    }
    if (range) {
      const int64_t last = range->second < 0
                               ? info->size() - 1
                               : std::min(info->size() - 1, range->first + range->second - 1);
      r.status = 206;
      r.file_offset = range->first;
      r.file_length = last - range->first + 1;
      length = r.file_length;
      r.headers["Content-Range"] =
          absl::StrCat("bytes ", range->first, "-", last, "/", info->size());
    }
  }
  metrics.Downloaded("http", length);
  return r;
}

}  // namespace

void AddAdapterDownloadRoute(http::HttpServer& server, RegistryStore* store,
                             const std::string& token,
                             std::shared_ptr<prometheus::Registry> metrics) {
  auto counters = std::make_shared<RegistryMetrics>(std::move(metrics));
  server.AddGetRoute(kAdapterRoutePrefix, [store, token, counters](const http::Request& request) {
    return Serve(store, token, *counters, request);
  });
}

}  // namespace qwha::registry

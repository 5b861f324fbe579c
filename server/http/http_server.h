// A small HTTP server for every qwha process: GET /metrics (Prometheus text
// format from a prometheus-cpp registry) and any extra GET routes the process
// adds (the registry's adapter downloads). Built on civetweb.
//
// Thread safety: Start() and AddGetRoute() must not race each other; handlers
// run on civetweb's worker threads, concurrently with each other.
#pragma once

#include <prometheus/registry.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

struct mg_connection;
class CivetServer;

namespace qwha::http {

// What a route handler answers. `body` is sent as is; for large files set
// `file_path` (+ range) instead and the server streams it.
struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::map<std::string, std::string> headers;
  std::string file_path;  // stream this file's bytes [file_offset, file_offset + file_length)
  int64_t file_offset = 0;
  int64_t file_length = -1;  // -1: to the end
};

struct Request {
  std::string path;   // URL path without the query, e.g. "/v1/adapters/a1/files/x"
  std::string query;  // raw query string, may be empty
  std::map<std::string, std::string> headers;  // names lower-cased
};

using GetHandler = std::function<Response(const Request&)>;

class HttpServer {
 public:
  // Listens on `listen` ("host:port"; port 0 picks a free one) and serves
  // GET /metrics from `metrics`. InvalidArgument for a malformed address,
  // Unavailable when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Registry> metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (useful after listening on port 0).
  int port() const { return port_; }

  // Routes GET requests whose path starts with `prefix` to `handler`.
  void AddGetRoute(const std::string& prefix, GetHandler handler);

 private:
  HttpServer() = default;
  class Dispatcher;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<CivetServer> server_;
  int port_ = 0;
};

// Parses "bytes=N-" or "bytes=N-M" into (offset, length or -1); nullopt for
// anything else.
std::optional<std::pair<int64_t, int64_t>> ParseRange(const std::string& value);

// Splits "host:port"; InvalidArgument naming `field` when malformed.
absl::StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& value,
                                                          const std::string& field);

}  // namespace qwha::http

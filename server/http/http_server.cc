#include "server/http/http_server.h"

#include <CivetServer.h>
#include <fcntl.h>
#include <prometheus/text_serializer.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <mutex>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace qwha::http {

class HttpServer::Dispatcher : public CivetHandler {
 public:
  explicit Dispatcher(std::shared_ptr<prometheus::Registry> metrics)
      : metrics_(std::move(metrics)) {}

  void Add(const std::string& prefix, GetHandler handler) {
    std::lock_guard<std::mutex> lock(mu_);
    routes_.emplace_back(prefix, std::move(handler));
  }

  bool handleGet(CivetServer*, mg_connection* conn) override {
    const mg_request_info* info = mg_get_request_info(conn);
    Request request;
    request.path = info->local_uri ? info->local_uri : "/";
    if (info->query_string) request.query = info->query_string;
    for (int i = 0; i < info->num_headers; ++i) {
      std::string name = info->http_headers[i].name;
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      request.headers[name] = info->http_headers[i].value;
    }
    Response response;
    if (request.path == "/metrics") {
      std::ostringstream out;
      prometheus::TextSerializer().Serialize(out, metrics_->Collect());
      response.content_type = "text/plain; version=0.0.4; charset=utf-8";
      response.body = out.str();
    } else {
      GetHandler handler;
      {
        std::lock_guard<std::mutex> lock(mu_);
        size_t best = 0;
        for (const auto& [prefix, h] : routes_) {
          if (request.path.rfind(prefix, 0) == 0 && prefix.size() >= best) {
            best = prefix.size();
            handler = h;
          }
        }
      }
      if (handler) {
        response = handler(request);
      } else {
        response.status = 404;
        response.body = absl::StrCat("no route for ", request.path, "\n");
      }
    }
    Send(conn, response);
    return true;
  }

 private:
  static void Send(mg_connection* conn, const Response& response) {
    int fd = -1;
    int64_t length = static_cast<int64_t>(response.body.size());
    if (!response.file_path.empty()) {
      fd = ::open(response.file_path.c_str(), O_RDONLY | O_CLOEXEC);
      struct stat st;
      if (fd < 0 || ::fstat(fd, &st) != 0) {
        if (fd >= 0) ::close(fd);
        Response error{500, "text/plain", absl::StrCat("cannot open stored file\n")};
        Send(conn, error);
        return;
      }
      int64_t available = st.st_size - response.file_offset;
      length = response.file_length < 0 ? available : std::min(available, response.file_length);
      if (length < 0) length = 0;
    }
    std::string head = absl::StrCat("HTTP/1.1 ", response.status, " ", StatusText(response.status),
                                    "\r\nContent-Type: ", response.content_type,
                                    "\r\nContent-Length: ", length, "\r\n");
    for (const auto& [k, v] : response.headers) absl::StrAppend(&head, k, ": ", v, "\r\n");
    absl::StrAppend(&head, "Connection: close\r\n\r\n");
    mg_write(conn, head.data(), head.size());
    if (fd < 0) {
      mg_write(conn, response.body.data(), response.body.size());
      return;
    }
    std::vector<char> buffer(1 << 20);
    int64_t offset = response.file_offset;
    while (length > 0) {
      ssize_t n = ::pread(fd, buffer.data(), std::min<int64_t>(length, buffer.size()), offset);
      if (n <= 0) break;
      if (mg_write(conn, buffer.data(), static_cast<size_t>(n)) <= 0) break;
      offset += n;
      length -= n;
    }
    ::close(fd);
  }

  static const char* StatusText(int status) {
    switch (status) {
      case 200:
        return "OK";
      case 206:
        return "Partial Content";
      case 400:
        return "Bad Request";
      case 401:
        return "Unauthorized";
      case 404:
        return "Not Found";
      case 416:
        return "Range Not Satisfiable";
      default:
        return "Error";
    }
  }

  std::shared_ptr<prometheus::Registry> metrics_;
  std::mutex mu_;
  std::vector<std::pair<std::string, GetHandler>> routes_;
};

absl::StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& value,
                                                          const std::string& field) {
  size_t colon = value.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(value.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": '", value, "' is not host:port (port 0..65535)"));
  }
  return std::make_pair(value.substr(0, colon), port);
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const std::string& listen, std::shared_ptr<prometheus::Registry> metrics) {
  auto host_port = ParseHostPort(listen, "http listen address");
  if (!host_port.ok()) return host_port.status();
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->dispatcher_ = std::make_unique<Dispatcher>(std::move(metrics));
  std::string host = host_port->first == "localhost" ? "127.0.0.1" : host_port->first;
  std::vector<std::string> options = {"listening_ports", absl::StrCat(host, ":", host_port->second),
                                      "num_threads", "8"};
  try {
    server->server_ = std::make_unique<CivetServer>(options);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("http: cannot listen on ", listen, ": ", e.what()));
  }
  server->server_->addHandler("/", server->dispatcher_.get());
  std::vector<int> ports = server->server_->getListeningPorts();
  if (ports.empty()) return absl::UnavailableError(absl::StrCat("http: no port for ", listen));
  server->port_ = ports[0];
  return server;
}

HttpServer::~HttpServer() {
  if (server_) server_->close();
}

void HttpServer::AddGetRoute(const std::string& prefix, GetHandler handler) {
  dispatcher_->Add(prefix, std::move(handler));
}

std::optional<std::pair<int64_t, int64_t>> ParseRange(const std::string& value) {
  if (value.rfind("bytes=", 0) != 0) return std::nullopt;
  std::string spec = value.substr(6);
  size_t dash = spec.find('-');
  if (dash == std::string::npos || dash == 0) return std::nullopt;
  int64_t first = 0, last = -1;
  if (!absl::SimpleAtoi(spec.substr(0, dash), &first) || first < 0) return std::nullopt;
  std::string rest = spec.substr(dash + 1);
  if (rest.empty()) return std::make_pair(first, int64_t{-1});
  if (!absl::SimpleAtoi(rest, &last) || last < first) return std::nullopt;
  return std::make_pair(first, last - first + 1);
}

}  // namespace qwha::http

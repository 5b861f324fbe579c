// A minimal blocking HTTP/1.1 GET over loopback TCP, for tests and probes
// (e.g. scraping /metrics). Not a general client: no TLS, no redirects.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace qwha::http {

struct GetResult {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// GET http://host:port/path with extra request headers. Unavailable when the
// connection fails; Internal on a malformed reply.
absl::StatusOr<GetResult> HttpGet(const std::string& host, int port, const std::string& path,
                                  const std::map<std::string, std::string>& headers = {});

}  // namespace qwha::http

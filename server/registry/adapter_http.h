// Adapter downloads over plain HTTP, so curl works without a gRPC client:
//
//   GET /v1/adapters/{id}/files/{name}
//     200  the whole file; Range: bytes=N- (or bytes=N-M) → 206 with
//          Content-Range: bytes N-last/size; a range starting past the end → 416
//     headers: ETag: "<sha256>", X-Content-SHA256: <sha256>, Accept-Ranges: bytes,
//          Content-Type: application/octet-stream, Content-Disposition: attachment
//     404  unknown adapter or file (the body names it)
//     401  `token` is set and the Authorization: Bearer header is missing or wrong
//
// The file is streamed from the blob store by http::HttpServer (file_path),
// never read into memory. Counts served bytes in
// qwha_registry_download_bytes_total{protocol="http"} when `metrics` is set.
//
// Thread safety: the handler runs on the HTTP server's threads concurrently;
// `store` must outlive `server`.
#pragma once

#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "server/http/http_server.h"
#include "server/registry/registry_store.h"

namespace qwha::registry {

inline constexpr char kAdapterRoutePrefix[] = "/v1/adapters/";

void AddAdapterDownloadRoute(http::HttpServer& server, RegistryStore* store,
                             const std::string& token,
                             std::shared_ptr<prometheus::Registry> metrics = nullptr);

}  // namespace qwha::registry

// Prometheus metrics of the registry:
//   qwha_registry_bytes{kind}                     gauge: bytes named by models,
//                                                 datasets, adapters, and "stored"
//                                                 (bytes in the blob store, each blob once)
//   qwha_registry_uploads_total{kind,outcome}     counter: kind model|dataset; outcome
//                                                 ok|rejected (the client's error)|
//                                                 cancelled|error (the server's)
//   qwha_registry_download_bytes_total{protocol}  counter: adapter bytes served, grpc|http
// Families with the same name merge within one prometheus::Registry, so
// several RegistryMetrics (the gRPC service, the HTTP route) share them.
//
// Thread safety: safe for concurrent use. A null registry makes every call a no-op.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "server/registry/registry_store.h"

namespace qwha::registry {

class RegistryMetrics {
 public:
  explicit RegistryMetrics(std::shared_ptr<prometheus::Registry> registry);
  RegistryMetrics(const RegistryMetrics&) = delete;
  RegistryMetrics& operator=(const RegistryMetrics&) = delete;

  // Counts one finished upload of `kind` with its final status.
  void Upload(const std::string& kind, const absl::Status& outcome);
  void Downloaded(const std::string& protocol, int64_t bytes);
  // Sets the byte gauges from the store (errors leave them unchanged).
  void RefreshBytes(RegistryStore& store);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>* bytes_ = nullptr;
  prometheus::Family<prometheus::Counter>* uploads_ = nullptr;
  prometheus::Family<prometheus::Counter>* downloads_ = nullptr;
};

}  // namespace qwha::registry

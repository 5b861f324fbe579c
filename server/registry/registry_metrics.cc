#include "server/registry/registry_metrics.h"

namespace qwha::registry {
namespace {

std::string Outcome(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return "ok";
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kDeadlineExceeded:
      return "cancelled";
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnauthenticated:
      return "rejected";
    default:
      return "error";
  }
}

}  // namespace

RegistryMetrics::RegistryMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)) {
  if (!registry_) return;
  bytes_ = &prometheus::BuildGauge()
                .Name("qwha_registry_bytes")
                .Help("Bytes named by registry rows per kind; kind=stored: bytes in the blob store")
                .Register(*registry_);
  uploads_ = &prometheus::BuildCounter()
                  .Name("qwha_registry_uploads_total")
                  .Help("Finished model and dataset uploads by outcome")
                  .Register(*registry_);
  downloads_ = &prometheus::BuildCounter()
                    .Name("qwha_registry_download_bytes_total")
                    .Help("Adapter bytes served, by protocol")
                    .Register(*registry_);
}

void RegistryMetrics::Upload(const std::string& kind, const absl::Status& outcome) {
  if (uploads_) uploads_->Add({{"kind", kind}, {"outcome", Outcome(outcome)}}).Increment();
}

void RegistryMetrics::Downloaded(const std::string& protocol, int64_t bytes) {
  if (downloads_ && bytes > 0) {
    downloads_->Add({{"protocol", protocol}}).Increment(static_cast<double>(bytes));
  }
}

void RegistryMetrics::RefreshBytes(RegistryStore& store) {
  if (!bytes_) return;
  auto usage = store.Usage();
  if (!usage.ok()) return;
  bytes_->Add({{"kind", "model"}}).Set(static_cast<double>(usage->model_bytes));
  bytes_->Add({{"kind", "dataset"}}).Set(static_cast<double>(usage->dataset_bytes));
  bytes_->Add({{"kind", "adapter"}}).Set(static_cast<double>(usage->adapter_bytes));
  bytes_->Add({{"kind", "stored"}}).Set(static_cast<double>(usage->stored_bytes));
}

}  // namespace qwha::registry

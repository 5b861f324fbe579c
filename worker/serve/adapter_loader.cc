#include "worker/serve/adapter_loader.h"

namespace qwha::serve {

AdapterLoader::AdapterLoader(const ServingModel* model, std::string dir, std::string digest)
    : model_(model), dir_(std::move(dir)), digest_(std::move(digest)) {}

absl::StatusOr<int64_t> AdapterLoader::EstimateMemory() const {
  return EstimateAdapterMemory(dir_, *model_);
}

absl::Status AdapterLoader::Load() {
  if (adapter_ != nullptr) return absl::FailedPreconditionError("adapter already loaded");
  absl::StatusOr<AdapterFileContents> files = ReadAdapterFiles(dir_);
  if (!files.ok()) return files.status();
  absl::StatusOr<std::unique_ptr<ServingAdapter>> adapter =
      ServingAdapter::Create(*files, *model_, digest_);
  if (!adapter.ok()) return adapter.status();
  adapter_ = *std::move(adapter);
  return absl::OkStatus();
}

void AdapterLoader::Unload() { adapter_.reset(); }

}  // namespace qwha::serve

// AdapterLoader: the mechanism of loading ONE adapter version (the
// TensorFlow Serving Loader contract). The AdapterCache decides what is loaded
// and when; the loader only knows how.
//
// Lifecycle: EstimateMemory() (any time, cheap: reads headers only) →
// Load() once → adapter() valid → Unload() frees every byte Load took.
// The caller guarantees that Load and Unload never run concurrently with each
// other or with a use of adapter(), and that nothing uses adapter() after
// Unload (the cache does this with pins).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/serve/serving_adapter.h"

namespace qwha::serve {

class ServingModel;

class AdapterLoader {
 public:
  // Loads from `dir` (adapter.safetensors, adapter_config.json) for `model`,
  // which must outlive the loader; `digest` names the version.
  AdapterLoader(const ServingModel* model, std::string dir, std::string digest);
  AdapterLoader(const AdapterLoader&) = delete;
  AdapterLoader& operator=(const AdapterLoader&) = delete;

  // An upper bound of the bytes Load() will take on the serving device.
  // Errors name the file (see EstimateAdapterMemory).
  absl::StatusOr<int64_t> EstimateMemory() const;

  // Reads the files and builds the serving form on the model's device.
  // FailedPrecondition if the adapter does not fit the served base (another
  // quantization or target modules); InvalidArgument naming the file/slot for
  // malformed content; FailedPrecondition if already loaded. On error nothing
  // stays allocated.
  absl::Status Load();

  // Frees the adapter. No-op when not loaded.
  void Unload();

  // The loaded adapter, or nullptr before Load / after Unload.
  const ServingAdapter* adapter() const { return adapter_.get(); }

 private:
  const ServingModel* model_;
  std::string dir_;
  std::string digest_;
  std::unique_ptr<ServingAdapter> adapter_;
};

}  // namespace qwha::serve

// AdapterSource: where adapter versions come from. The server's source is the
// scheduler's RegistryService (registry_source.h); tests use a directory.
//
// Thread safety: implementations must allow concurrent calls.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace qwha::serve {

// What the registry says about an adapter, before anything is downloaded.
struct AdapterDescription {
  std::string adapter_id;
  std::string digest;             // content digest: the version's identity
  std::string adapter_type;       // "qwha", "lora", ...
  std::string base_model_digest;  // the base it was trained on ("" if unknown)
};

// Files of one adapter version on local disk.
struct FetchedAdapter {
  std::string dir;                 // holds adapter.safetensors and adapter_config.json
  bool remove_after_load = false;  // a temporary copy the caller removes once loaded
};

class AdapterSource {
 public:
  virtual ~AdapterSource() = default;
  // NotFound naming the id for an unknown adapter; Unavailable when the
  // source cannot be reached.
  virtual absl::StatusOr<AdapterDescription> Describe(const std::string& adapter_id) = 0;
  // The files of `adapter`, each verified against its recorded size and
  // sha256 and the set against the digest: DataLoss naming the file and both
  // digests on a mismatch (nothing is left behind then).
  virtual absl::StatusOr<FetchedAdapter> Fetch(const AdapterDescription& adapter) = 0;
};

// Adapters as subdirectories of `root` (the id is the directory name); the
// digest is io::Sha256OfFileSet over the directory's regular files, as the
// registry computes it. Fetch re-verifies the digest and returns the
// directory itself.
class DirectoryAdapterSource : public AdapterSource {
 public:
  explicit DirectoryAdapterSource(std::string root) : root_(std::move(root)) {}
  absl::StatusOr<AdapterDescription> Describe(const std::string& adapter_id) override;
  absl::StatusOr<FetchedAdapter> Fetch(const AdapterDescription& adapter) override;

 private:
  std::string root_;
};

}  // namespace qwha::serve

#include "worker/serve/adapter_source.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"

namespace qwha::serve {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> DirectoryDigest(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    auto sha = io::Sha256File(entry.path().string());
    if (!sha.ok()) return sha.status();
    files.emplace_back(entry.path().filename().string(), sha->first);
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  if (files.empty()) return absl::NotFoundError(absl::StrCat(dir, ": no adapter files"));
  return io::Sha256OfFileSet(std::move(files));
}

}  // namespace

absl::StatusOr<AdapterDescription> DirectoryAdapterSource::Describe(const std::string& adapter_id) {
  if (adapter_id.empty() || adapter_id.find('/') != std::string::npos || adapter_id[0] == '.') {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter id '", adapter_id, "' is not a directory name"));
  }
  const std::string dir = root_ + "/" + adapter_id;
  if (!fs::is_directory(dir))
    return absl::NotFoundError(absl::StrCat("no adapter '", adapter_id, "'"));
  auto digest = DirectoryDigest(dir);
  if (!digest.ok()) return digest.status();
  AdapterDescription out;
  out.adapter_id = adapter_id;
  out.digest = *digest;
  if (auto config = io::ReadFile(dir + "/adapter_config.json"); config.ok()) {
    nlohmann::json j = nlohmann::json::parse(*config, nullptr, false);
    if (j.is_object()) out.adapter_type = j.value("adapter_type", "");
  }
  return out;
}

absl::StatusOr<FetchedAdapter> DirectoryAdapterSource::Fetch(const AdapterDescription& adapter) {
  const std::string dir = root_ + "/" + adapter.adapter_id;
  auto digest = DirectoryDigest(dir);
  if (!digest.ok()) return digest.status();
  if (*digest != adapter.digest) {
    return absl::DataLossError(absl::StrCat("adapter '", adapter.adapter_id,
                                            "': files have digest ", *digest, ", expected ",
                                            adapter.digest));
  }
  return FetchedAdapter{dir, false};
}

}  // namespace qwha::serve

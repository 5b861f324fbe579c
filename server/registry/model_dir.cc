#include "server/registry/model_dir.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace qwha::registry {
namespace {

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// realpath(3); empty when `path` does not resolve.
std::string RealPath(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> resolved(::realpath(path.c_str(), nullptr),
                                                       &std::free);
  return resolved ? std::string(resolved.get()) : std::string();
}

bool IsUnder(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root || absl::StartsWith(path, root + "/");
}

}  // namespace

bool IsModelFileName(std::string_view name) {
  absl::string_view n = Absl(name);
  return n == "config.json" || n == "tokenizer.json" || n == "tokenizer_config.json" ||
         n == "generation_config.json" || absl::EndsWith(n, ".safetensors") ||
         absl::EndsWith(n, ".index.json");
}

absl::Status CheckModelFileSet(const std::vector<std::string>& names) {
  if (std::find(names.begin(), names.end(), "config.json") == names.end()) {
    return absl::InvalidArgumentError("config.json: missing (a model needs its config.json)");
  }
  if (std::none_of(names.begin(), names.end(),
                   [](const std::string& n) { return absl::EndsWith(n, ".safetensors"); })) {
    return absl::InvalidArgumentError(
        "*.safetensors: missing (a model needs at least one safetensors file)");
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelDir> ResolveModelDir(const std::string& root, const std::string& path) {
  const std::string real_root = RealPath(root);
  if (real_root.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the model root ", root, " of this server does not exist"));
  }
  if (path.empty()) return absl::InvalidArgumentError("path: required");
  const std::string joined = path[0] == '/' ? path : absl::StrCat(real_root, "/", path);
  ModelDir dir;
  dir.path = RealPath(joined);
  if (dir.path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("path ", path, ": no such directory"));
  }
  if (!IsUnder(dir.path, real_root)) {
    return absl::InvalidArgumentError(absl::StrCat("path ", path, ": resolves to ", dir.path,
                                                   ", outside the model root ", real_root));
  }
  DIR* d = ::opendir(dir.path.c_str());
  if (d == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("path ", path, ": not a readable directory"));
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.' && IsModelFileName(e->d_name)) names.push_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    ModelDirFile file{name, RealPath(absl::StrCat(dir.path, "/", name)), 0};
    struct stat st;
    if (file.path.empty() || !IsUnder(file.path, real_root)) {
      return absl::InvalidArgumentError(absl::StrCat("path ", path, ": file ", name,
                                                     " links outside the model root ", real_root));
    }
    if (::stat(file.path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("path ", path, ": ", name, " is not a regular file"));
    }
    file.size = st.st_size;
    dir.files.push_back(std::move(file));
  }
  if (absl::Status s = CheckModelFileSet(names); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("path ", path, ": ", s.message()));
  }
  return dir;
}

}  // namespace qwha::registry

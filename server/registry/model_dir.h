// Base-model directories registered by path (RegisterModel): where they may
// lie and which of their files a model is made of.
//
// Thread safety: pure functions of the file system; safe to call concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace qwha::registry {

// Files a base model is made of: config.json, *.safetensors, the shard index
// (*.index.json), tokenizer.json, tokenizer_config.json,
// generation_config.json. Anything else in a model directory is skipped.
bool IsModelFileName(std::string_view name);

// OK iff `names` hold config.json and at least one *.safetensors, else
// InvalidArgument naming the missing file.
absl::Status CheckModelFileSet(const std::vector<std::string>& names);

struct ModelDirFile {
  std::string name;  // as in the directory, e.g. "model-00001-of-00002.safetensors"
  std::string path;  // resolved (symbolic links followed), under the root
  int64_t size = 0;
};

struct ModelDir {
  std::string path;                 // resolved directory
  std::vector<ModelDirFile> files;  // the model files, sorted by name
};

// Resolves `path` (relative paths are taken relative to `root`) with every
// symbolic link and ".." followed, and lists its model files. InvalidArgument
// naming `path` when it does not exist, is not a directory, or resolves
// outside the resolved `root` (also through a link); naming the file when a
// model file links outside the root or is not a regular file, or when
// config.json or every *.safetensors is missing. FailedPrecondition when the
// root itself cannot be resolved.
absl::StatusOr<ModelDir> ResolveModelDir(const std::string& root, const std::string& path);

}  // namespace qwha::registry

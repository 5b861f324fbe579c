#include "worker/pipeline/base_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"
#include "worker/io/sha256.h"
#include "worker/model/checkpoint.h"

namespace qwha::pipeline {
namespace {

namespace fs = std::filesystem;

constexpr char kManifest[] = "manifest.json";
constexpr char kFormat[] = "qwha.quantized_base.v1";

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

absl::Status Corrupt(const std::string& path, const std::string& what) {
  return absl::DataLossError(absl::StrCat("quantized-base cache entry ", path, ": ", what));
}

// fsync of a directory, so a rename inside it survives a crash.
absl::Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", dir, ": ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync ", dir, ": ", std::strerror(err)));
  return absl::OkStatus();
}

std::vector<std::string> SortedTargets(const BaseCacheKey& key) {
  std::vector<std::string> t = key.target_modules;
  std::sort(t.begin(), t.end());
  t.erase(std::unique(t.begin(), t.end()), t.end());
  return t;
}

}  // namespace

absl::StatusOr<std::string> ModelDigest(const std::string& model_dir) {
  const fs::path dir(model_dir);
  std::error_code ec;
  if (!fs::exists(dir / model::kConfigFile, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model digest: ", (dir / model::kConfigFile).string(), " does not exist"));
  }
  std::vector<std::string> names = {model::kConfigFile};
  bool weights = false;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file(ec)) continue;
    if (EndsWith(name, ".safetensors") || name == model::kShardIndexFile) {
      names.push_back(name);
      weights = weights || EndsWith(name, ".safetensors");
    }
  }
  if (ec)
    return absl::InternalError(absl::StrCat("model digest: list ", model_dir, ": ", ec.message()));
  if (!weights) {
    return absl::NotFoundError(absl::StrCat("model digest: no *.safetensors in ", model_dir));
  }
  std::vector<std::pair<std::string, std::string>> digests;
  for (const std::string& name : names) {
    auto d = io::Sha256File((dir / name).string());
    if (!d.ok()) return d.status();
    digests.emplace_back(name, d->first);
  }
  return io::Sha256OfFileSet(std::move(digests));
}

std::string CalibrationDigest(const std::vector<torch::Tensor>& batches) {
  io::Sha256Stream stream;
  for (const torch::Tensor& b : batches) {
    torch::Tensor ids = b.to(torch::kCPU, torch::kInt64).contiguous();
    std::string shape = "batch";
    for (int64_t s : ids.sizes()) absl::StrAppend(&shape, " ", s);
    stream.Update(shape + "\n");
    stream.Update(std::string_view(static_cast<const char*>(ids.data_ptr()),
                                   static_cast<size_t>(ids.numel()) * sizeof(int64_t)));
  }
  return stream.Finish();
}

std::string BaseCacheKeyJson(const BaseCacheKey& key) {
  nlohmann::json j = {
      {"model_digest", key.model_digest},
      {"bits", key.quant.bits},
      {"group_size", key.quant.group_size},
      {"method", quant::QuantMethodName(key.quant.method)},
      // %a: the exact binary value, so keys never collide through rounding.
      {"gptq_damp", absl::StrFormat("%a", key.quant.gptq_damp)},
      {"param_dtype", std::string(c10::toString(key.quant.param_dtype))},
      {"target_modules", SortedTargets(key)},
      {"calibration_digest", key.calibration_digest},
      {"compute_dtype", std::string(c10::toString(key.compute_dtype))},
      {"device_type", c10::DeviceTypeName(key.device_type, /*lower_case=*/true)},
  };
  return j.dump();
}

std::string QuantConfigKey(const BaseCacheKey& key) {
  return absl::StrCat(quant::QuantMethodName(key.quant.method), "-b", key.quant.bits, "-g",
                      key.quant.group_size, "-",
                      io::Sha256Hex(BaseCacheKeyJson(key)).substr(0, 16));
}

std::string BaseCacheEntryDir(const std::string& cache_dir, const BaseCacheKey& key) {
  return (fs::path(cache_dir) / key.model_digest / QuantConfigKey(key)).string();
}

absl::StatusOr<QuantizedBase> LoadQuantizedBase(const std::string& entry_dir,
                                                const BaseCacheKey& key,
                                                const model::LlamaModel& model,
                                                const torch::Device& gram_device) {
  std::error_code ec;
  if (!fs::is_directory(entry_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("no quantized-base cache entry at ", entry_dir));
  }
  const fs::path dir(entry_dir);
  const std::string manifest_path = (dir / kManifest).string();
  auto text = io::ReadFile(manifest_path);
  if (!text.ok()) return Corrupt(manifest_path, std::string(text.status().message()));
  nlohmann::json manifest = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object() || manifest.value("format", "") != kFormat ||
      !manifest.contains("slots") || !manifest["slots"].is_object()) {
    return Corrupt(manifest_path, "not a qwha.quantized_base.v1 manifest");
  }
  if (manifest.value("key", "") != BaseCacheKeyJson(key)) {
    return Corrupt(manifest_path, "its key differs from the requested one");
  }

  // A file recorded in the manifest: present, of the recorded size.
  auto checked_file = [&](const nlohmann::json& slot, const char* file_field,
                          const char* bytes_field) -> absl::StatusOr<std::string> {
    if (!slot.contains(file_field) || !slot[file_field].is_string() ||
        !slot.contains(bytes_field) || !slot[bytes_field].is_number_integer()) {
      return Corrupt(manifest_path, absl::StrCat("slot entry lacks ", file_field));
    }
    const std::string name = slot[file_field].get<std::string>();
    if (name.find('/') != std::string::npos || name.empty() || name[0] == '.') {
      return Corrupt(manifest_path, absl::StrCat("bad file name '", name, "'"));
    }
    const std::string path = (dir / name).string();
    const auto size = fs::file_size(path, ec);
    if (ec) return Corrupt(path, ec.message());
    if (static_cast<int64_t>(size) != slot[bytes_field].get<int64_t>()) {
      return Corrupt(
          path, absl::StrCat(size, " bytes, manifest says ", slot[bytes_field].get<int64_t>()));
    }
    return path;
  };

  const std::vector<std::string> targets = SortedTargets(key);
  QuantizedBase base;
  std::map<std::string, torch::Tensor> grams_by_file;
  for (const model::LinearSlot* slot : model.LinearSlots()) {
    if (!IsTarget(slot->name(), targets)) continue;
    if (!manifest["slots"].contains(slot->name())) {
      return Corrupt(manifest_path, absl::StrCat("slot ", slot->name(), " is missing"));
    }
    const nlohmann::json& entry = manifest["slots"][slot->name()];
    auto weight_path = checked_file(entry, "weight", "weight_bytes");
    if (!weight_path.ok()) return weight_path.status();
    auto q = quant::LoadQuantizedWeight(*weight_path);
    if (!q.ok()) return Corrupt(*weight_path, std::string(q.status().message()));
    if (q->rows != slot->out_features() || q->cols != slot->in_features() ||
        q->bits != key.quant.bits || q->group_size != key.quant.group_size ||
        q->scales.scalar_type() != key.quant.param_dtype) {
      return Corrupt(*weight_path, absl::StrCat("does not fit slot ", slot->name()));
    }
    base.weights[slot->name()] = *std::move(q);

    auto gram_path = checked_file(entry, "gram", "gram_bytes");
    if (!gram_path.ok()) return gram_path.status();
    auto it = grams_by_file.find(*gram_path);
    if (it == grams_by_file.end()) {
      auto file = io::ReadSafetensors(*gram_path);
      if (!file.ok()) return Corrupt(*gram_path, std::string(file.status().message()));
      auto g = file->tensors.find("gram");
      const int64_t in = slot->in_features();
      if (g == file->tensors.end() || g->second.scalar_type() != torch::kFloat64 ||
          g->second.dim() != 2 || g->second.size(0) != in || g->second.size(1) != in) {
        return Corrupt(*gram_path, absl::StrCat("no float64 [", in, ", ", in, "] \"gram\""));
      }
      it = grams_by_file.emplace(*gram_path, g->second.to(gram_device)).first;
    } else if (it->second.size(0) != slot->in_features()) {
      return Corrupt(*gram_path, absl::StrCat("shared Gram does not fit ", slot->name()));
    }
    base.grams[slot->name()] = it->second;
  }
  return base;
}

absl::Status StoreQuantizedBase(const std::string& entry_dir, const BaseCacheKey& key,
                                const QuantizedBase& base) {
  std::error_code ec;
  if (fs::exists(fs::path(entry_dir) / kManifest, ec)) return absl::OkStatus();
  for (const auto& [name, q] : base.weights) {
    if (!base.grams.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("cache store: no Gram for ", name));
    }
  }
  const fs::path parent = fs::path(entry_dir).parent_path();
  fs::create_directories(parent, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", parent.string(), ": ", ec.message()));
  std::random_device rd;
  const fs::path tmp = absl::StrCat(entry_dir, ".tmp.", ::getpid(), ".", rd());
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", tmp.string(), ": ", ec.message()));

  auto build = [&]() -> absl::Status {
    nlohmann::json slots = nlohmann::json::object();
    std::map<const void*, std::pair<std::string, int64_t>> gram_files;  // storage → file, bytes
    for (const auto& [name, q] : base.weights) {
      const std::string weight_file = name + ".quant.safetensors";
      if (absl::Status st = quant::SaveQuantizedWeight(q, (tmp / weight_file).string()); !st.ok()) {
        return st;
      }
      const torch::Tensor& gram = base.grams.at(name);
      auto it = gram_files.find(gram.data_ptr());
      if (it == gram_files.end()) {
        const std::string gram_file = name + ".gram.safetensors";
        absl::Status st =
            io::WriteSafetensors((tmp / gram_file).string(), {{"gram", gram.to(torch::kFloat64)}},
                                 {{"format", kFormat}, {"slot", name}});
        if (!st.ok()) return st;
        const int64_t bytes = static_cast<int64_t>(fs::file_size(tmp / gram_file, ec));
        it = gram_files.emplace(gram.data_ptr(), std::make_pair(gram_file, bytes)).first;
      }
      slots[name] = {
          {"weight", weight_file},
          {"weight_bytes", static_cast<int64_t>(fs::file_size(tmp / weight_file, ec))},
          {"gram", it->second.first},
          {"gram_bytes", it->second.second},
      };
      if (ec)
        return absl::InternalError(absl::StrCat("stat in ", tmp.string(), ": ", ec.message()));
    }
    nlohmann::json manifest = {
        {"format", kFormat}, {"key", BaseCacheKeyJson(key)}, {"slots", slots}};
    return io::WriteFileAtomically((tmp / kManifest).string(), manifest.dump(2) + "\n");
  };
  absl::Status built = build();
  if (!built.ok()) {
    io::RemoveTree(tmp.string()).IgnoreError();
    return built;
  }
  if (std::rename(tmp.c_str(), entry_dir.c_str()) != 0) {
    const int err = errno;
    io::RemoveTree(tmp.string()).IgnoreError();
    // Another writer's complete entry is already in place: theirs serves.
    if ((err == EEXIST || err == ENOTEMPTY) && fs::exists(fs::path(entry_dir) / kManifest, ec)) {
      return absl::OkStatus();
    }
    return absl::InternalError(
        absl::StrCat("rename ", tmp.string(), " to ", entry_dir, ": ", std::strerror(err)));
  }
  return SyncDir(parent.string());
}

}  // namespace qwha::pipeline

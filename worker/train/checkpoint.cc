#include "worker/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"

namespace qwha::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using TensorMap = std::map<std::string, torch::Tensor>;

constexpr char kFormat[] = "qwha-train-checkpoint-v1";
constexpr char kAdaptersFile[] = "adapters.safetensors";
constexpr char kOptimizerFile[] = "optimizer.safetensors";
constexpr char kRngFile[] = "rng.safetensors";
constexpr char kStateFile[] = "trainer_state.json";
constexpr char kLatestFile[] = "latest";

std::string StepDirName(int64_t step) { return absl::StrCat("step-", step); }

// N for a name "step-<N>" (decimal digits only), else -1.
int64_t ParseStepDirName(const std::string& name) {
  absl::string_view rest = name;
  if (!absl::ConsumePrefix(&rest, "step-") || rest.empty()) return -1;
  for (char c : rest) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return -1;
  }
  int64_t step = -1;
  if (!absl::SimpleAtoi(rest, &step)) return -1;
  return step;
}

absl::Status FsError(const std::error_code& ec, const std::string& what, const fs::path& path) {
  std::string msg = absl::StrCat(what, " ", path.string(), ": ", ec.message());
  if (ec == std::errc::no_such_file_or_directory) return absl::NotFoundError(msg);
  if (ec == std::errc::permission_denied) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
}

absl::Status SyncDirectory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("open directory ", dir.string(), ": ", std::strerror(errno)));
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("fsync directory ", dir.string(), ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::Status Rename(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) return FsError(ec, absl::StrCat("rename ", from.string(), " to"), to);
  return absl::OkStatus();
}

bool IsCompleteCheckpoint(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_regular_file(dir / kStateFile, ec);
}

// Removes step directories beyond the newest keep_last (never `keep`) and
// leftovers of interrupted writes ("step-<N>.tmp", "step-<N>.old").
absl::Status Prune(const fs::path& root, int keep_last, const fs::path& keep) {
  std::vector<std::pair<int64_t, fs::path>> steps;
  std::vector<fs::path> leftovers;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const int64_t step = ParseStepDirName(name);
    if (step >= 0) {
      steps.emplace_back(step, it->path());
      continue;
    }
    for (const char* suffix : {".tmp", ".old"}) {
      absl::string_view base = name;
      if (absl::ConsumeSuffix(&base, suffix) && ParseStepDirName(std::string(base)) >= 0) {
        leftovers.push_back(it->path());
      }
    }
  }
  if (ec) return FsError(ec, "list", root);
  std::vector<fs::path> remove = leftovers;
  if (keep_last > 0 && static_cast<int>(steps.size()) > keep_last) {
    std::sort(steps.begin(), steps.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t i = static_cast<size_t>(keep_last); i < steps.size(); ++i) {
      if (steps[i].second != keep) remove.push_back(steps[i].second);
    }
  }
  for (const fs::path& p : remove) {
    if (absl::Status st = io::RemoveTree(p.string()); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorMap> ReadTensors(const fs::path& path) {
  auto file = io::ReadSafetensors(path.string());
  if (!file.ok()) return file.status();
  return std::move(file->tensors);
}

}  // namespace

absl::StatusOr<std::string> SaveCheckpoint(const std::string& root_dir,
                                           const TrainingCheckpoint& checkpoint, int keep_last) {
  if (checkpoint.step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint step is negative: ", checkpoint.step));
  }
  const fs::path root(root_dir);
  json meta;
  meta["format"] = kFormat;
  meta["step"] = checkpoint.step;
  meta["epoch"] = checkpoint.epoch;
  meta["tokens_seen"] = checkpoint.tokens_seen;
  meta["data_position"] = checkpoint.data_position;
  json metrics = json::object();
  for (const auto& [name, value] : checkpoint.metrics) {
    metrics[name] = std::isfinite(value) ? json(value) : json(nullptr);
  }
  meta["metrics"] = std::move(metrics);
  std::string meta_text;
  try {
    meta_text = meta.dump(2) + "\n";
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint data_position or metric name is not valid UTF-8: ", e.what()));
  }

  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return FsError(ec, "create checkpoint root", root);
  const std::string name = StepDirName(checkpoint.step);
  const fs::path final_dir = root / name;
  const fs::path tmp_dir = root / (name + ".tmp");
  if (absl::Status st = io::RemoveTree(tmp_dir.string()); !st.ok()) return st;
  fs::create_directory(tmp_dir, ec);
  if (ec) return FsError(ec, "create", tmp_dir);

  // Each file is fsynced (and the directory with it) by the atomic writers.
  const std::pair<const char*, const TensorMap*> tensor_files[] = {
      {kAdaptersFile, &checkpoint.adapter_state},
      {kOptimizerFile, &checkpoint.optimizer_state},
      {kRngFile, &checkpoint.rng_state}};
  for (const auto& [file, tensors] : tensor_files) {
    absl::Status st = io::WriteSafetensors((tmp_dir / file).string(), *tensors);
    if (!st.ok()) return st;
  }
  if (absl::Status st = io::WriteFileAtomically((tmp_dir / kStateFile).string(), meta_text);
      !st.ok()) {
    return st;
  }

  // Publish: tmp -> step-<N> (moving an older step-<N> aside first), fsync root.
  const fs::path old_dir = root / (name + ".old");
  const bool replacing = fs::exists(final_dir, ec);
  if (replacing) {
    if (absl::Status st = io::RemoveTree(old_dir.string()); !st.ok()) return st;
    if (absl::Status st = Rename(final_dir, old_dir); !st.ok()) return st;
  }
  if (absl::Status st = Rename(tmp_dir, final_dir); !st.ok()) return st;
  if (replacing) {
    if (absl::Status st = io::RemoveTree(old_dir.string()); !st.ok()) return st;
  }
  if (absl::Status st = SyncDirectory(root); !st.ok()) return st;
  if (absl::Status st = io::WriteFileAtomically((root / kLatestFile).string(), name + "\n");
      !st.ok()) {
    return st;
  }
  if (absl::Status st = Prune(root, keep_last, final_dir); !st.ok()) return st;
  return final_dir.string();
}

absl::StatusOr<std::string> FindLatestCheckpoint(const std::string& root_dir) {
  const fs::path root(root_dir);
  auto latest = io::ReadFile((root / kLatestFile).string());
  if (latest.ok()) {
    const std::string name(absl::StripAsciiWhitespace(*latest));
    if (ParseStepDirName(name) >= 0 && IsCompleteCheckpoint(root / name)) {
      return (root / name).string();
    }
  }
  // No usable pointer (never written, or the crash came before it moved):
  // the highest complete step directory.
  int64_t best = -1;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const int64_t step = ParseStepDirName(it->path().filename().string());
    if (step > best && IsCompleteCheckpoint(it->path())) best = step;
  }
  if (best < 0) {
    return absl::NotFoundError(absl::StrCat("no checkpoint under ", root.string()));
  }
  return (root / StepDirName(best)).string();
}

absl::StatusOr<TrainingCheckpoint> LoadCheckpoint(const std::string& dir_name) {
  const fs::path dir(dir_name);
  const fs::path state_path = dir / kStateFile;
  auto text = io::ReadFile(state_path.string());
  if (!text.ok()) return text.status();
  TrainingCheckpoint ckpt;
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(state_path.string(), ": ", what));
  };
  try {
    const json meta = json::parse(*text);
    if (!meta.is_object()) return bad("not a JSON object");
    if (meta.value("format", std::string()) != kFormat) {
      return bad(absl::StrCat("\"format\" is not \"", kFormat, "\""));
    }
    const std::pair<const char*, int64_t*> integer_fields[] = {
        {"step", &ckpt.step}, {"epoch", &ckpt.epoch}, {"tokens_seen", &ckpt.tokens_seen}};
    for (const auto& [field, target] : integer_fields) {
      if (!meta.contains(field) || !meta.at(field).is_number_integer()) {
        return bad(absl::StrCat("\"", field, "\" must be an integer"));
      }
      *target = meta.at(field).get<int64_t>();
      if (*target < 0) return bad(absl::StrCat("\"", field, "\" is negative"));
    }
    if (!meta.contains("data_position") || !meta.at("data_position").is_string()) {
      return bad("\"data_position\" must be a string");
    }
    ckpt.data_position = meta.at("data_position").get<std::string>();
    if (meta.contains("metrics")) {
      if (!meta.at("metrics").is_object()) return bad("\"metrics\" must be an object");
      for (const auto& [name, value] : meta.at("metrics").items()) {
        if (value.is_null()) {
          ckpt.metrics[name] = std::numeric_limits<double>::quiet_NaN();
        } else if (value.is_number()) {
          ckpt.metrics[name] = value.get<double>();
        } else {
          return bad(absl::StrCat("metric \"", name, "\" is not a number"));
        }
      }
    }
  } catch (const json::exception& e) {
    return bad(e.what());
  }
  const std::pair<const char*, TensorMap*> tensor_files[] = {
      {kAdaptersFile, &ckpt.adapter_state},
      {kOptimizerFile, &ckpt.optimizer_state},
      {kRngFile, &ckpt.rng_state}};
  for (const auto& [file, tensors] : tensor_files) {
    auto read = ReadTensors(dir / file);
    if (!read.ok()) return read.status();
    *tensors = std::move(*read);
  }
  return ckpt;
}

absl::StatusOr<TrainingCheckpoint> LoadLatestCheckpoint(const std::string& root) {
  auto dir = FindLatestCheckpoint(root);
  if (!dir.ok()) return dir.status();
  return LoadCheckpoint(*dir);
}

std::map<std::string, torch::Tensor> CollectAdapterState(const model::LlamaModel& model) {
  TensorMap out;
  for (const model::LinearSlot* slot : model.LinearSlots()) {
    const adapters::Adapter* adapter = slot->adapter();
    if (adapter == nullptr) continue;
    for (const auto& [key, tensor] : adapter->StateDict()) {
      out[absl::StrCat(slot->name(), "/", key)] =
          tensor.detach().to(torch::kCPU).clone(torch::MemoryFormat::Contiguous);
    }
  }
  return out;
}

absl::Status RestoreAdapterState(model::LlamaModel& model,
                                 const std::map<std::string, torch::Tensor>& state) {
  // Group the entries by slot name (everything before the last '/').
  std::map<std::string, TensorMap> by_slot;
  for (const auto& [key, tensor] : state) {
    const size_t slash = key.rfind('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == key.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter state key \"", key, "\" is not \"<slot>/<key>\""));
    }
    by_slot[key.substr(0, slash)][key.substr(slash + 1)] = tensor;
  }
  for (const auto& [slot_name, entries] : by_slot) {
    const model::LinearSlot* slot = model.FindLinear(slot_name);
    if (slot == nullptr || slot->adapter() == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter state for ", slot_name, ", which has no adapter in this model"));
    }
  }
  for (model::LinearSlot* slot : model.LinearSlots()) {
    if (slot->adapter() == nullptr) continue;
    auto it = by_slot.find(slot->name());
    if (it == by_slot.end()) {
      return absl::InvalidArgumentError(absl::StrCat("no adapter state for ", slot->name()));
    }
    if (absl::Status st = slot->adapter()->LoadStateDict(it->second); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(slot->name(), ": ", st.message()));
    }
  }
  return absl::OkStatus();
}

std::map<std::string, torch::Tensor> CaptureRngState() {
  TensorMap out;
  {
    auto gen = at::globalContext().defaultGenerator(torch::kCPU);
    std::lock_guard<std::mutex> lock(gen.mutex());
    out["cpu"] = gen.get_state().clone();
  }
  if (torch::cuda::is_available()) {
    const int64_t devices = static_cast<int64_t>(torch::cuda::device_count());
    for (int64_t i = 0; i < devices; ++i) {
      auto gen = at::globalContext().defaultGenerator(
          torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(i)));
      std::lock_guard<std::mutex> lock(gen.mutex());
      out[absl::StrCat("cuda:", i)] = gen.get_state().clone();
    }
  }
  return out;
}

absl::Status RestoreRngState(const std::map<std::string, torch::Tensor>& state) {
  const int64_t devices =
      torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
  for (const auto& [name, tensor] : state) {
    std::optional<torch::Device> device;
    int64_t index = -1;
    if (name == "cpu") {
      device = torch::Device(torch::kCPU);
    } else if (absl::string_view rest = name; absl::ConsumePrefix(&rest, "cuda:") &&
                                              absl::SimpleAtoi(rest, &index) && index >= 0) {
      if (index >= devices) continue;  // a GPU this machine does not have
      device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown generator \"", name, "\""));
    }
    try {
      auto gen = at::globalContext().defaultGenerator(*device);
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(tensor.to(torch::kCPU).contiguous());
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("generator state \"", name, "\": ", e.what_without_backtrace()));
    }
  }
  return absl::OkStatus();
}

}  // namespace qwha::train

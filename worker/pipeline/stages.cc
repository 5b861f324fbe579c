#include "worker/pipeline/stages.h"

#include <algorithm>
#include <memory>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "worker/quant/calibration.h"

namespace qwha::pipeline {

absl::Status ValidateTargetModules(const std::vector<std::string>& modules) {
  if (modules.empty()) {
    return absl::InvalidArgumentError("target_modules: must name at least one projection");
  }
  const auto& all = AllTargetModules();
  for (const auto& m : modules) {
    if (std::find(all.begin(), all.end(), m) == all.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "target_modules: unknown module '", m,
          "' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj)"));
    }
  }
  return absl::OkStatus();
}

bool IsTarget(const std::string& slot_name, const std::vector<std::string>& modules) {
  for (const auto& m : modules) {
    if (slot_name.size() > m.size() &&
        slot_name.compare(slot_name.size() - m.size(), m.size(), m) == 0 &&
        slot_name[slot_name.size() - m.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

absl::StatusOr<GramMap> CollectCalibration(model::LlamaModel& model,
                                           const std::vector<torch::Tensor>& batches,
                                           const std::vector<std::string>& modules) {
  if (batches.empty()) {
    return absl::InvalidArgumentError("calibration: no calibration batches");
  }
  // Slots that receive the same tensor within a forward pass (q/k/v,
  // gate/up) share one accumulator, which adds that tensor once. The inputs
  // seen in the current pass are held, so no address is reused meanwhile.
  struct Seen {
    torch::Tensor input;
    std::shared_ptr<quant::GramAccumulator> acc;
  };
  std::map<std::string, std::shared_ptr<quant::GramAccumulator>> by_slot;
  std::vector<Seen> seen;
  absl::Status hook_status;
  model.SetLinearInputHook([&](const model::LinearSlot& slot, const torch::Tensor& x) {
    if (!hook_status.ok() || !IsTarget(slot.name(), modules)) return;
    std::shared_ptr<quant::GramAccumulator>& acc = by_slot[slot.name()];
    for (const Seen& s : seen) {
      if (!s.input.is_same(x)) continue;
      if (!acc) acc = s.acc;
      if (acc == s.acc) return;
    }
    if (!acc) acc = std::make_shared<quant::GramAccumulator>(slot.in_features());
    seen.push_back({x, acc});
    hook_status = acc->Add(x);
    if (!hook_status.ok()) {
      hook_status = absl::Status(
          hook_status.code(),
          absl::StrCat("calibration input of ", slot.name(), ": ", hook_status.message()));
    }
  });
  try {
    torch::NoGradGuard no_grad;
    for (const auto& batch : batches) {
      model.Forward(batch.to(model.device()));
      seen.clear();
      if (!hook_status.ok()) break;
    }
  } catch (const c10::Error& e) {
    model.SetLinearInputHook({});
    return absl::InternalError(absl::StrCat("calibration forward: ", e.what_without_backtrace()));
  }
  model.SetLinearInputHook({});
  if (!hook_status.ok()) return hook_status;
  GramMap grams;
  std::unordered_map<const quant::GramAccumulator*, torch::Tensor> done;
  for (const auto& [name, acc] : by_slot) {
    auto it = done.find(acc.get());
    if (it == done.end()) it = done.emplace(acc.get(), acc->Gram()).first;
    grams[name] = it->second;
  }
  return grams;
}

absl::StatusOr<WeightMap> QuantizeModel(model::LlamaModel& model, const quant::QuantConfig& cfg,
                                        const GramMap& grams,
                                        const std::vector<std::string>& modules) {
  WeightMap originals;
  for (model::LinearSlot* slot : model.LinearSlots()) {
    if (!IsTarget(slot->name(), modules)) continue;
    if (slot->is_quantized()) {
      return absl::FailedPreconditionError(
          absl::StrCat("quantize: ", slot->name(), " is already quantized"));
    }
    torch::Tensor w = slot->weight().to(torch::kFloat32);
    torch::Tensor gram;
    if (cfg.method == quant::QuantMethod::kGptq) {
      auto it = grams.find(slot->name());
      if (it == grams.end()) {
        return absl::FailedPreconditionError(
            absl::StrCat("quantize: GPTQ needs calibration data for ", slot->name()));
      }
      gram = it->second;
    }
    absl::StatusOr<quant::QuantizedWeight> q = quant::Quantize(w, gram, cfg);
    if (!q.ok()) {
      return absl::Status(q.status().code(),
                          absl::StrCat("quantize ", slot->name(), ": ", q.status().message()));
    }
    absl::Status set = slot->SetQuantizedWeight(*std::move(q));
    if (!set.ok()) return set;
    originals[slot->name()] = w;
  }
  return originals;
}

absl::StatusOr<WeightMap> SetQuantizedWeights(model::LlamaModel& model,
                                              std::map<std::string, quant::QuantizedWeight> weights,
                                              const std::vector<std::string>& modules) {
  std::vector<model::LinearSlot*> targets;
  for (model::LinearSlot* slot : model.LinearSlots()) {
    if (!IsTarget(slot->name(), modules)) continue;
    if (slot->is_quantized()) {
      return absl::FailedPreconditionError(
          absl::StrCat("set quantized weights: ", slot->name(), " is already quantized"));
    }
    if (!weights.count(slot->name())) {
      return absl::FailedPreconditionError(
          absl::StrCat("set quantized weights: none given for ", slot->name()));
    }
    targets.push_back(slot);
  }
  WeightMap originals;
  for (model::LinearSlot* slot : targets) {
    torch::Tensor w = slot->weight().to(torch::kFloat32);
    absl::Status set = slot->SetQuantizedWeight(std::move(weights.at(slot->name())));
    if (!set.ok()) return set;
    originals[slot->name()] = w;
  }
  return originals;
}

absl::StatusOr<std::vector<SlotInitReport>> AttachAdapters(model::LlamaModel& model,
                                                           const adapters::AdapterConfig& cfg,
                                                           const WeightMap& originals,
                                                           const GramMap& grams) {
  std::vector<SlotInitReport> reports;
  for (model::LinearSlot* slot : model.LinearSlots()) {
    auto original = originals.find(slot->name());
    if (original == originals.end()) continue;
    adapters::LayerData layer;
    layer.weight = original->second;
    layer.dequantized = quant::Dequantize(*slot->quantized(), torch::kFloat32);
    auto gram = grams.find(slot->name());
    if (gram != grams.end()) layer.gram = gram->second;
    absl::StatusOr<std::unique_ptr<adapters::Adapter>> adapter =
        adapters::InitializeAdapter(cfg, layer);
    if (!adapter.ok()) {
      return absl::Status(adapter.status().code(), absl::StrCat("initialize ", slot->name(), ": ",
                                                                adapter.status().message()));
    }
    SlotInitReport report;
    report.slot = slot->name();
    report.trainable_params = (*adapter)->NumTrainableParams();
    report.error_quantized = adapters::RelativeOutputError(layer, torch::Tensor());
    {
      torch::NoGradGuard no_grad;
      report.error_adapted = adapters::RelativeOutputError(layer, (*adapter)->DeltaWeight());
    }
    absl::Status attached = slot->AttachAdapter(*std::move(adapter));
    if (!attached.ok()) return attached;
    reports.push_back(report);
  }
  return reports;
}

}  // namespace qwha::pipeline

#include "tests/e2e/merged_reference.h"

#include "absl/strings/str_cat.h"
#include "worker/adapters/adapter.h"
#include "worker/model/llama.h"
#include "worker/quant/quantizer.h"
#include "worker/serve/serving_adapter.h"

namespace qwha::e2e {

absl::StatusOr<std::vector<int64_t>> MergedGreedy(const std::string& model_dir,
                                                  const std::string& adapter_dir, int bits,
                                                  int group_size,
                                                  const std::vector<int64_t>& prompt,
                                                  int64_t new_tokens) {
  auto model = model::LoadModel(model_dir, torch::kCPU, torch::kFloat32);
  if (!model.ok()) return model.status();
  quant::QuantConfig q;
  q.bits = bits;
  q.group_size = group_size;
  for (model::LinearSlot* slot : (*model)->LinearSlots()) {
    auto quantized = quant::QuantizeRtn(slot->weight().to(torch::kFloat32), q);
    if (!quantized.ok()) return quantized.status();
    if (absl::Status st = slot->SetQuantizedWeight(*std::move(quantized)); !st.ok()) return st;
  }
  auto files = serve::ReadAdapterFiles(adapter_dir);
  if (!files.ok()) return files.status();
  for (const auto& [slot_name, state] : files->slots) {
    model::LinearSlot* slot = (*model)->FindLinear(slot_name);
    if (slot == nullptr) return absl::NotFoundError(absl::StrCat("no slot ", slot_name));
    adapters::AdapterConfig cfg;
    cfg.type = files->type;
    cfg.scaling = files->scaling;
    if (state.count("lora_A")) {
      cfg.rank = state.at("lora_A").size(0);
    } else if (state.count("spectrum_values")) {
      cfg.num_params = state.at("spectrum_values").numel();
    }
    auto adapter = adapters::CreateEmptyAdapter(cfg, slot->out_features(), slot->in_features());
    if (!adapter.ok()) return adapter.status();
    if (absl::Status st = (*adapter)->LoadStateDict(state); !st.ok()) return st;
    if (absl::Status st = slot->AttachAdapter(*std::move(adapter)); !st.ok()) return st;
  }
  (*model)->SetAdapterMode(model::AdapterMode::kMerged);
  model::GenerateOptions options;
  options.max_new_tokens = new_tokens;
  auto out = (*model)->Generate(torch::tensor(prompt, torch::kInt64).unsqueeze(0), options);
  if (!out.ok()) return out.status();
  torch::Tensor row = out->select(0, 0).slice(0, static_cast<int64_t>(prompt.size())).contiguous();
  return std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
}

}  // namespace qwha::e2e

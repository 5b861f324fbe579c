#include "worker/serve/test_util.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "worker/adapters/lora.h"
#include "worker/adapters/qwha.h"
#include "worker/io/atomic_file.h"
#include "worker/io/safetensors.h"

namespace qwha::serve::testing {

quant::QuantConfig TestQuant() {
  quant::QuantConfig q;
  q.bits = 4;
  q.group_size = 32;
  return q;
}

std::unique_ptr<model::LlamaModel> QuantizedModel(const std::string& which) {
  std::unique_ptr<model::LlamaModel> model;
  if (which == "llama2") {
    const char* srcdir = std::getenv("TEST_SRCDIR");
    const std::string root = srcdir ? std::string(srcdir) + "/qwha" : ".";
    auto loaded =
        model::LoadModel(root + "/tests/fixtures/model/llama2", torch::kCPU, torch::kFloat32);
    TORCH_CHECK(loaded.ok(), loaded.status().ToString());
    model = *std::move(loaded);
  } else {
    model::ModelConfig c;
    c.model_type = "qwen2";
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.vocab_size = 96;
    c.qkv_bias = true;
    c.sliding_window = 6;
    c.sliding_layers = {true, true};
    model = model::LlamaModel::RandomInit(c, 7, torch::kCPU, torch::kFloat32);
  }
  QuantizeAll(*model);
  return model;
}

void QuantizeAll(model::LlamaModel& model) {
  for (model::LinearSlot* slot : model.LinearSlots()) {
    auto q = quant::QuantizeRtn(slot->weight().to(torch::kFloat32), TestQuant());
    TORCH_CHECK(q.ok(), q.status().ToString());
    TORCH_CHECK(slot->SetQuantizedWeight(*std::move(q)).ok());
  }
}

AdapterSet RandomAdapters(const model::LlamaModel& model, adapters::AdapterType type,
                          uint64_t seed) {
  AdapterSet set;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  uint64_t slot_seed = seed * 1000;
  for (const model::LinearSlot* slot : model.LinearSlots()) {
    const int64_t out = slot->out_features(), in = slot->in_features();
    if (type == adapters::AdapterType::kLora) {
      const int64_t r = 4;
      torch::Tensor a = torch::empty({r, in}).normal_(0, 0.3, gen);
      torch::Tensor b = torch::empty({out, r}).normal_(0, 0.3, gen);
      set[slot->name()] = std::make_unique<adapters::LoraAdapter>(type, out, in, r, 2.0 / r, a, b);
    } else {
      const int64_t count = 4 * (in + out);
      torch::Tensor index = adapters::RandomSpectrumIndex(out, in, count, ++slot_seed);
      torch::Tensor values = torch::empty({count}).normal_(0, 1.0, gen);
      set[slot->name()] =
          std::make_unique<adapters::QwhaAdapter>(type, out, in, 1.0, count, index, values);
    }
  }
  return set;
}

absl::Status WriteAdapterDir(const AdapterSet& set, adapters::AdapterType type,
                             const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [slot, adapter] : set) {
    for (const auto& [key, value] : adapter->StateDict())
      tensors[slot + "/" + key] = value.detach();
  }
  absl::Status st =
      io::WriteSafetensors(dir + "/adapter.safetensors", tensors, {{"format", "qwha.adapter.v1"}});
  if (!st.ok()) return st;
  const double scaling = type == adapters::AdapterType::kLora ? 2.0 : 1.0;
  nlohmann::json config = {
      {"format", "qwha.adapter.v1"},
      {"adapter_type", adapters::AdapterTypeName(type)},
      {"rank_equivalent", 4},
      {"num_params", 0},
      {"alloc_alpha", 1.0},
      {"scaling", scaling},
      {"target_modules",
       {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}},
      {"quantization",
       {{"bits", TestQuant().bits}, {"group_size", TestQuant().group_size}, {"method", "rtn"}}},
  };
  return io::WriteFileAtomically(dir + "/adapter_config.json", config.dump(2));
}

std::vector<int64_t> MergedGreedy(model::LlamaModel& model, const AdapterSet* set,
                                  const std::vector<int64_t>& prompt, int64_t new_tokens) {
  if (set != nullptr) {
    for (const auto& [name, adapter] : *set) {
      TORCH_CHECK(model.FindLinear(name)->AttachBorrowedAdapter(adapter.get()).ok());
    }
  }
  model.SetAdapterMode(model::AdapterMode::kMerged);
  model::GenerateOptions options;
  options.max_new_tokens = new_tokens;
  auto out = model.Generate(torch::tensor(prompt, torch::kInt64).unsqueeze(0), options);
  for (model::LinearSlot* slot : model.LinearSlots()) slot->DetachAdapter();
  TORCH_CHECK(out.ok(), out.status().ToString());
  torch::Tensor row = out->select(0, 0).slice(0, static_cast<int64_t>(prompt.size()));
  return std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
}

std::function<void(const GenerationEvent&)> Collector::Callback() {
  return [this](const GenerationEvent& e) {
    std::lock_guard<std::mutex> lock(mu_);
    for (int32_t id : e.token_ids) tokens_.push_back(id);
    text_ += e.text;
    if (e.finished) {
      final_ = e;
      done_ = true;
      cv_.notify_all();
    }
  };
}

std::vector<int64_t> Collector::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_; });
  return tokens_;
}

GenerationEvent Collector::final_event() {
  std::lock_guard<std::mutex> lock(mu_);
  return final_;
}

std::string Collector::text() {
  std::lock_guard<std::mutex> lock(mu_);
  return text_;
}

bool Collector::finished() {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

std::string TempDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp ? tmp : "/tmp") + "/serve_" + name;
  (void)io::RemoveTree(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace qwha::serve::testing

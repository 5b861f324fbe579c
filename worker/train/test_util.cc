#include "worker/train/test_util.h"

#include <random>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "worker/quant/quantizer.h"

namespace qwha::train::testing {

model::ModelConfig TinyConfig() {
  model::ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 50;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  return c;
}

std::unique_ptr<model::LlamaModel> MakeTinyAdaptedModel(adapters::AdapterType type, uint64_t seed) {
  auto model = model::LlamaModel::RandomInit(TinyConfig(), seed, torch::kCPU, torch::kFloat32);
  quant::QuantConfig qcfg;
  qcfg.bits = 4;
  qcfg.group_size = 32;
  adapters::AdapterConfig acfg;
  acfg.type = type;
  acfg.rank = 2;
  acfg.seed = seed;
  for (model::LinearSlot* slot : model->LinearSlots()) {
    const torch::Tensor w = slot->weight();
    auto q = quant::QuantizeRtn(w, qcfg);
    TORCH_CHECK(q.ok(), q.status().ToString());
    auto adapter = adapters::InitializeAdapter(acfg, {w, quant::Dequantize(*q), torch::Tensor()});
    TORCH_CHECK(adapter.ok(), adapter.status().ToString());
    TORCH_CHECK(slot->SetQuantizedWeight(std::move(*q)).ok());
    TORCH_CHECK(slot->AttachAdapter(std::move(*adapter)).ok());
  }
  return model;
}

SyntheticBatchSource::SyntheticBatchSource(int64_t vocab, int64_t batch_size, int64_t seq_len,
                                           int64_t num_batches, int64_t prompt_tokens,
                                           uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> token(0, vocab - 1);
  for (int64_t n = 0; n < num_batches; ++n) {
    Batch b;
    b.input_ids = torch::empty({batch_size, seq_len}, torch::kInt64);
    auto ids = b.input_ids.accessor<int64_t, 2>();
    for (int64_t i = 0; i < batch_size; ++i) {
      for (int64_t t = 0; t < seq_len; ++t) ids[i][t] = token(rng);
    }
    b.labels = b.input_ids.clone();
    b.labels.narrow(1, 0, prompt_tokens).fill_(-100);
    batches_.push_back(std::move(b));
  }
}

absl::StatusOr<Batch> SyntheticBatchSource::Next() {
  if (fail_) return absl::DataLossError("synthetic source: record 7 is corrupt");
  const int64_t n = static_cast<int64_t>(batches_.size());
  Batch b = batches_[static_cast<size_t>(next_ % n)];
  b.input_ids = b.input_ids.clone();
  b.labels = b.labels.clone();
  b.epoch = next_ / n;
  ++next_;
  return b;
}

std::string SyntheticBatchSource::State() const { return absl::StrCat("synthetic:", next_); }

absl::Status SyntheticBatchSource::Restore(const std::string& state) {
  absl::string_view rest = state;
  int64_t next = 0;
  if (!absl::ConsumePrefix(&rest, "synthetic:") || !absl::SimpleAtoi(rest, &next) || next < 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad synthetic source state \"", state, "\""));
  }
  next_ = next;
  return absl::OkStatus();
}

}  // namespace qwha::train::testing

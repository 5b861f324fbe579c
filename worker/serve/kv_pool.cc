#include "worker/serve/kv_pool.h"

#include "worker/serve/serving_model.h"

namespace qwha::serve {

KvPool::KvPool(const ServingModel& model, int64_t slots, int64_t max_len)
    : slots_(slots), max_len_(max_len) {
  const model::ModelConfig& c = model.config();
  const auto options = torch::TensorOptions().dtype(model.dtype()).device(model.device());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    keys_.push_back(torch::zeros({slots, c.num_key_value_heads, max_len, c.head_dim}, options));
    values_.push_back(torch::zeros({slots, c.num_key_value_heads, max_len, c.head_dim}, options));
  }
}

int64_t KvPool::memory_bytes() const {
  int64_t total = 0;
  for (const auto* list : {&keys_, &values_}) {
    for (const torch::Tensor& t : *list) total += t.numel() * t.element_size();
  }
  return total;
}

void KvPool::Move(int64_t from, int64_t to, int64_t length) {
  if (from == to || length <= 0) return;
  const torch::NoGradGuard no_grad;
  for (auto* list : {&keys_, &values_}) {
    for (torch::Tensor& t : *list) {
      t.select(0, to).narrow(1, 0, length).copy_(t.select(0, from).narrow(1, 0, length));
    }
  }
}

}  // namespace qwha::serve

// KvPool: the keys and values of every running request, one slot per request.
//
// Per layer, keys and values are [slots, kv_heads, max_len, head_dim] in the
// model dtype on its device, allocated once (zeros, so that positions no
// request has written hold finite values: masked attention multiplies them by
// exactly 0). A request owns one slot from admission to its end; nothing in a
// slot outlives its request or is read by another request (the engine clears
// no data but every read is masked to the request's own length). There is no
// prefix cache: KV state is never shared between requests, so it can never be
// shared between adapter versions either.
//
// Thread safety: none; the engine's thread owns the pool.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace qwha::serve {

class ServingModel;

class KvPool {
 public:
  // Allocates `slots` × `max_len` positions for every layer of `model`.
  // Throws c10::Error when the allocation fails.
  KvPool(const ServingModel& model, int64_t slots, int64_t max_len);
  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  int64_t slots() const { return slots_; }
  int64_t max_len() const { return max_len_; }
  int64_t memory_bytes() const;

  torch::Tensor& keys(int64_t layer) { return keys_[static_cast<size_t>(layer)]; }
  torch::Tensor& values(int64_t layer) { return values_[static_cast<size_t>(layer)]; }

  // Copies positions [0, length) of slot `from` into slot `to` in every layer
  // (the engine compacts running requests into the lowest slots).
  void Move(int64_t from, int64_t to, int64_t length);

  // Whether ServingModel::Forward may run this pool's decode steps as CUDA
  // graphs (docs/serving.md; off by default, the engine turns it on). Only
  // CUDA models on a non-default stream use them.
  bool cuda_graphs() const { return cuda_graphs_; }
  void set_cuda_graphs(bool on) { cuda_graphs_ = on; }
  // ServingModel::Forward's per-pool state (its captured steps), opaque here;
  // released with the pool.
  std::shared_ptr<void>& forward_state() { return forward_state_; }
  // Decode steps captured as CUDA graphs, and replays of captured ones.
  struct GraphStats {
    int64_t captured = 0;
    int64_t replayed = 0;
  };
  GraphStats& graph_stats() { return graph_stats_; }

 private:
  int64_t slots_;
  int64_t max_len_;
  std::vector<torch::Tensor> keys_;
  std::vector<torch::Tensor> values_;
  bool cuda_graphs_ = false;
  std::shared_ptr<void> forward_state_;
  GraphStats graph_stats_;
};

}  // namespace qwha::serve

// Internal to ServingModel (serving_model.cc, serving_forward.cc): the layer
// weights and the per-step row layout. Not a public contract.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "worker/serve/serving_model.h"

namespace qwha::serve {

// One decoder layer's serving weights (deq(Q) or W, in the serving dtype).
struct ServingModel::Layer {
  torch::Tensor input_norm, post_norm;  // [hidden]
  torch::Tensor w_qkv, b_qkv;           // [q_out + 2 kv_out, hidden] (bias optional)
  torch::Tensor w_o, b_o;               // [hidden, q_out]
  torch::Tensor w_gate_up, b_gate_up;   // [2 inter, hidden]
  torch::Tensor w_down, b_down;         // [hidden, inter]
};

// Where each row (token) of a step comes from, and which rows each adapter
// corrects.
struct ServingModel::Rows {
  int64_t count = 0;       // N: tokens in the step
  torch::Tensor ids;       // [N] int64: token ids
  torch::Tensor slot;      // [N] int64: KV slot of each row
  torch::Tensor position;  // [N] int64: position of each row
  torch::Tensor last;      // [segments] int64: each segment's last row

  // Single-token segments attend in one batch.
  torch::Tensor single_rows;    // [D] int64 rows (undefined if D == 0)
  torch::Tensor single_slots;   // [D] int64
  torch::Tensor single_length;  // [D] int64: keys visible (position + 1)
  int64_t single_count = 0;
  // Keys the batch reads per slot: at least the longest request's length
  // (a captured step rounds it up; positions past a request's length are
  // masked).
  int64_t single_max_length = 0;
  bool single_leading = false;  // rows 0..D-1 in slots 0..D-1: no gathers

  // Longer segments (prompts) attend one by one.
  struct Span {
    int64_t first_row, count, slot, start;
  };
  std::vector<Span> spans;

  struct Group {
    const ServingAdapter* adapter;
    torch::Tensor rows;  // [m] int64
    bool all = false;    // every row of the step
    // Spectrum adapters: the group's rows are spectrum_rows[tok_begin,
    // tok_begin + m); -1 for other adapters.
    int64_t tok_begin = -1;
  };
  std::vector<Group> groups;

  // The rows of every spectrum-adapter group, group after group
  // (kernels::SpectrumApply's y_rows); undefined when no group has one.
  // chunked: every group starts a chunk of 4 positions (padded with -1), and
  // the adapters' inputs z may come in those chunks (kernels::ChunkRows).
  torch::Tensor spectrum_rows;  // int32
  bool chunked = false;
};

// A step's layout on the host (ServingModel::Plan), before any device work.
// Every index list of a step goes to the device in one copy (Upload); a
// captured step copies it into the same buffer before each replay.
struct ServingModel::StepPlan {
  std::vector<int64_t> ids, slot, position, last;
  std::vector<int64_t> single_rows, single_slots, single_length;
  int64_t single_max_length = 0;
  bool single_leading = false;
  std::vector<Rows::Span> spans;
  struct Group {
    const ServingAdapter* adapter;
    std::vector<int64_t> rows;
    bool all = false;
    int64_t tok_begin = -1;  // as Rows::Group
  };
  std::vector<Group> groups;
  std::vector<int32_t> spectrum_rows;
  bool chunked = false;  // as Rows::chunked

  int64_t count() const { return static_cast<int64_t>(ids.size()); }
  // Elements of the int64 buffer Upload fills (int32 lists take half).
  int64_t buffer_size() const;
  // Fills `out` (buffer_size() elements) with every list, in Upload's layout.
  void Fill(int64_t* out) const;
};

}  // namespace qwha::serve

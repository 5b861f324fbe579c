// The interface between a dataset and the training loop.
//
// A BatchSource yields micro-batches of token ids forever (it starts the next
// epoch when one ends) in a deterministic order, and can save and restore its
// position so that a resumed run sees exactly the batches an uninterrupted
// run would have seen.
//
// Lifecycle: the trainer calls Next() grad_accum times per optimizer step and
// State() only between steps (never between the micro-batches of a step);
// Restore() is called at most once, before the first Next(), with a string
// that State() returned (possibly in another process). The trainer borrows
// the source; it calls it from one thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::train {

struct Batch {
  // Token ids [B, T], int64 (int32 is accepted), on any device; T >= 2.
  torch::Tensor input_ids;
  // [B, T] integer: labels[b, t] is the id the model should produce at
  // position t (normally input_ids[b, t]) or -100 where unsupervised (prompt,
  // padding). The loss shifts them (worker/train/loss.h: CausalLmLoss).
  torch::Tensor labels;
  // The epoch (0-based) this batch belongs to.
  int64_t epoch = 0;
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;

  // The next micro-batch. Errors (I/O, a malformed record) are returned as a
  // Status naming the file and record; training stops with that Status.
  virtual absl::StatusOr<Batch> Next() = 0;

  // An opaque description of the position (JSON is suggested, any UTF-8 text
  // works): Restore(State()) on a fresh source of the same data makes its
  // next Next() return what this source's next Next() would return.
  virtual std::string State() const = 0;

  // Moves to a position returned by State(). InvalidArgument for a string
  // this source cannot parse or that belongs to other data.
  virtual absl::Status Restore(const std::string& state) = 0;
};

}  // namespace qwha::train

// Training batches from a Dataset, resumable exactly from a checkpoint.
//
//   BatcherOptions options;
//   options.batch_size = 8;
//   options.packing.seq_len = 1024;
//   options.packing.pad_id = *tokenizer.eos_id();
//   options.seed = 1234;
//   auto batcher = Batcher::Create(split.train, options);
//   for (int step = 0; step < steps; ++step) {
//     Batch batch = (*batcher)->Next();   // input_ids, labels: int64 [B, L]
//     ...
//     if (checkpoint_now) save((*batcher)->State().ToJson());
//   }
//   // after a restart: (*batcher)->Restore(*BatcherState::FromJson(saved));
//
// Epoch e lays out the examples (packing.h) in the order
// Permutation(n, DeriveSeed(seed, kEpochShuffle, e)) (shuffle.h), or in file
// order when `shuffle` is false, and yields its rows in batches of
// batch_size; the last batch of an epoch has the remaining rows (fewer than
// batch_size) unless drop_last. Next() then continues with epoch e + 1, for
// ever: the caller decides when to stop (steps, or Batch::epoch).
//
// Exact resume: the batches after Restore(state) are those that followed the
// call to State() that produced `state`, given the same dataset and options.
// The state carries a fingerprint of both, and Restore refuses a state made
// for other data or options.
//
// Thread safety: a Batcher is not thread-safe (Next() advances it); use it
// from one thread or synchronize externally. It borrows the Dataset, which
// must outlive it. Not copyable.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/data/dataset.h"
#include "worker/data/packing.h"

namespace qwha::data {

struct BatcherOptions {
  int64_t batch_size = 8;  // rows per batch, >= 1
  PackingOptions packing;
  uint64_t seed = 0;
  bool shuffle = true;     // false: file order in every epoch (evaluation)
  bool drop_last = false;  // drop the last, short batch of each epoch
};

struct Batch {
  torch::Tensor input_ids;  // int64 [b, L], CPU; b = batch_size except maybe last
  torch::Tensor labels;     // int64 [b, L], CPU; kIgnoreLabel (-100) = no loss
  int64_t epoch = 0;        // the epoch this batch belongs to (0-based)
  int64_t index = 0;        // its index within the epoch (0-based)
};

// Where a Batcher stands: the next batch it yields is batch `batch` of epoch
// `epoch`.
struct BatcherState {
  int64_t epoch = 0;
  int64_t batch = 0;
  std::string fingerprint;  // 16 hex digits of the dataset and options

  // {"epoch": 3, "batch": 17, "fingerprint": "0123456789abcdef"}
  std::string ToJson() const;
  // InvalidArgument naming the field for anything but the ToJson shape
  // (unknown keys are ignored).
  static absl::StatusOr<BatcherState> FromJson(std::string_view json);
};

class Batcher {
 public:
  // InvalidArgument for an empty dataset, batch_size < 1, invalid packing
  // options, or drop_last with fewer rows than batch_size (no batch at all).
  static absl::StatusOr<std::unique_ptr<Batcher>> Create(const Dataset& dataset,
                                                         const BatcherOptions& options);

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // The next batch; after the last batch of an epoch, the first of the next.
  Batch Next();

  // The position of the next batch, for a checkpoint.
  BatcherState State() const;
  // Moves to `state`: the next batch is batch `state.batch` of epoch
  // `state.epoch` (batch == batches_per_epoch() means the start of the next
  // epoch). FailedPrecondition when the fingerprint differs (other data or
  // options); InvalidArgument for a negative epoch or batch, or a batch past
  // the end of the epoch. On error the position is unchanged.
  absl::Status Restore(const BatcherState& state);

  int64_t rows_per_epoch() const { return rows_per_epoch_; }
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  // Rows, labels and padding of the current epoch's layout (the labels of a
  // packed layout can differ by one between epochs: see packing.h).
  const PackingStats& epoch_stats() const { return rows_->stats(); }

 private:
  Batcher(const Dataset& dataset, const BatcherOptions& options, std::string fingerprint);
  absl::Status StartEpoch(int64_t epoch);

  const Dataset& dataset_;  // borrowed
  const BatcherOptions options_;
  const std::string fingerprint_;
  int64_t rows_per_epoch_ = 0;
  int64_t batches_per_epoch_ = 0;
  int64_t epoch_ = 0;
  int64_t batch_ = 0;              // next batch within epoch_
  std::optional<EpochRows> rows_;  // the layout of epoch_
};

}  // namespace qwha::data

// Rows for causal-LM training: a dataset's examples, in a given order, laid out
// as rows of `seq_len` (L) inputs and L labels.
//
// Packed (pack = true, for training): the examples' ids and masks are
// concatenated into one stream s[0, N) and cut into windows of L + 1 tokens
// with stride L, so that every stream position after the first is a label
// exactly once:
//   window r = s[r·L, r·L + L + 1),  inputs = window[:-1],  labels = window[1:]
//   label t = s[r·L + t + 1] if that token's mask is 1, else -100
// rows = ceil((N - 1) / L). The last window may be short: its missing inputs
// are pad_id and its missing labels -100. Attention is not masked at example
// boundaries (standard packing): an example may see the end of the previous
// one, which the model learns to ignore after EOS/BOS.
//
// Unpacked (pack = false, for evaluation and exact-match style work): one
// example per row, ids[0, n) truncated to n ≤ L + 1 tokens (the tail is cut,
// so a long prompt can cut away its completion: stats count such rows), then
// inputs = ids[:n-1] followed by pad_id, labels = ids[1:n] masked as above
// followed by -100. Rows = examples.
//
// Thread safety: an EpochRows is immutable; its const methods may be called
// concurrently. It borrows the Dataset, which must outlive it.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/data/dataset.h"

namespace qwha::data {

// The label of a position that does not contribute to the loss (the
// ignore_index of PyTorch's cross-entropy).
inline constexpr int64_t kIgnoreLabel = -100;

struct PackingOptions {
  int64_t seq_len = 512;  // L >= 1: inputs and labels per row
  bool pack = true;
  // Input id at positions past the data (their labels are -100). Any id the
  // model embeds; with causal attention trailing pads do not change earlier
  // positions, so the value only needs to be valid.
  int32_t pad_id = 0;
};

// InvalidArgument naming the field when seq_len < 1 or pad_id < 0.
absl::Status ValidatePackingOptions(const PackingOptions& options);

struct PackingStats {
  int64_t rows = 0;
  // Labels != -100 over all rows: the supervised tokens that are predicted.
  // (Packed, the stream's first token is never a label; without BOS that
  // token may be supervised, so the count can differ by one between orders.)
  int64_t labels = 0;
  int64_t padding = 0;               // input positions holding pad_id
  int64_t truncated_examples = 0;    // unpacked only: examples longer than L + 1
  int64_t truncated_supervised = 0;  // unpacked only: supervised tokens cut away
};

// The stats of laying out `dataset` in file order. Errors as EpochRows::Build.
absl::StatusOr<PackingStats> LayoutStats(const Dataset& dataset, const PackingOptions& options);

class EpochRows {
 public:
  // The rows of `dataset`'s examples taken in `order` (a permutation of
  // 0..n-1). InvalidArgument for invalid options, an `order` that is not a
  // permutation, or an empty dataset.
  static absl::StatusOr<EpochRows> Build(const Dataset& dataset, std::vector<int64_t> order,
                                         const PackingOptions& options);

  int64_t num_rows() const { return num_rows_; }
  int64_t seq_len() const { return options_.seq_len; }
  const PackingStats& stats() const { return stats_; }

  // Writes row `row` (0 <= row < num_rows()) as seq_len() inputs and
  // seq_len() labels.
  void FillRow(int64_t row, int64_t* input_ids, int64_t* labels) const;

 private:
  EpochRows() = default;
  void FillPackedRow(int64_t row, int64_t* input_ids, int64_t* labels) const;
  void FillUnpackedRow(int64_t row, int64_t* input_ids, int64_t* labels) const;

  const Dataset* dataset_ = nullptr;  // borrowed
  std::vector<int64_t> order_;
  std::vector<int64_t> starts_;  // packed: stream offset of order_[k]; back() = N
  PackingOptions options_;
  int64_t num_rows_ = 0;
  PackingStats stats_;
};

}  // namespace qwha::data

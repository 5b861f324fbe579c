#include "worker/data/packing.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace qwha::data {

absl::Status ValidatePackingOptions(const PackingOptions& options) {
  if (options.seq_len < 1) {
    return absl::InvalidArgumentError(absl::StrCat("seq_len must be >= 1, got ", options.seq_len));
  }
  if (options.pad_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat("pad_id must be >= 0, got ", options.pad_id));
  }
  return absl::OkStatus();
}

absl::StatusOr<EpochRows> EpochRows::Build(const Dataset& dataset, std::vector<int64_t> order,
                                           const PackingOptions& options) {
  if (absl::Status s = ValidatePackingOptions(options); !s.ok()) return s;
  const int64_t n = static_cast<int64_t>(dataset.examples.size());
  if (n == 0) {
    return absl::InvalidArgumentError(absl::StrCat(dataset.source, ": the dataset is empty"));
  }
  if (static_cast<int64_t>(order.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("order has ", order.size(), " entries for ", n, " examples"));
  }
  std::vector<bool> seen(static_cast<size_t>(n), false);
  for (int64_t i : order) {
    if (i < 0 || i >= n || seen[static_cast<size_t>(i)]) {
      return absl::InvalidArgumentError("order is not a permutation of the examples");
    }
    seen[static_cast<size_t>(i)] = true;
  }

  EpochRows rows;
  rows.dataset_ = &dataset;
  rows.order_ = std::move(order);
  rows.options_ = options;
  const int64_t L = options.seq_len;
  PackingStats& stats = rows.stats_;
  if (options.pack) {
    rows.starts_.reserve(static_cast<size_t>(n) + 1);
    int64_t total = 0;
    int64_t supervised = 0;
    for (int64_t k : rows.order_) {
      const Example& e = dataset.examples[static_cast<size_t>(k)];
      rows.starts_.push_back(total);
      total += static_cast<int64_t>(e.ids.size());
      for (uint8_t m : e.mask) supervised += m;
    }
    rows.starts_.push_back(total);
    // The stream's first token is never a label.
    const Example& first = dataset.examples[static_cast<size_t>(rows.order_.front())];
    if (!first.mask.empty()) supervised -= first.mask.front();
    rows.num_rows_ = total >= 2 ? (total - 1 + L - 1) / L : 0;
    stats.labels = supervised;
    stats.padding = rows.num_rows_ * L - std::max<int64_t>(total - 1, 0);
  } else {
    rows.num_rows_ = n;
    for (const Example& e : dataset.examples) {
      const int64_t len = static_cast<int64_t>(e.ids.size());
      const int64_t kept = std::min(len, L + 1);
      int64_t kept_labels = 0;
      for (int64_t t = 1; t < kept; ++t) kept_labels += e.mask[static_cast<size_t>(t)];
      stats.labels += kept_labels;
      stats.padding += L - std::max<int64_t>(kept - 1, 0);
      if (len > kept) {
        ++stats.truncated_examples;
        for (int64_t t = kept; t < len; ++t) {
          stats.truncated_supervised += e.mask[static_cast<size_t>(t)];
        }
      }
    }
  }
  stats.rows = rows.num_rows_;
  return rows;
}

void EpochRows::FillRow(int64_t row, int64_t* input_ids, int64_t* labels) const {
  if (options_.pack) {
    FillPackedRow(row, input_ids, labels);
  } else {
    FillUnpackedRow(row, input_ids, labels);
  }
}

void EpochRows::FillPackedRow(int64_t row, int64_t* input_ids, int64_t* labels) const {
  const int64_t L = options_.seq_len;
  const int64_t total = starts_.back();
  const int64_t begin = row * L;
  const int64_t end = std::min(begin + L + 1, total);  // window [begin, end)
  std::fill(input_ids, input_ids + L, static_cast<int64_t>(options_.pad_id));
  std::fill(labels, labels + L, kIgnoreLabel);
  // The example holding stream position `begin`.
  size_t k = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), begin) -
                                 starts_.begin()) -
             1;
  for (int64_t pos = begin; pos < end; ++pos) {
    while (pos >= starts_[k + 1]) ++k;
    const Example& e = dataset_->examples[static_cast<size_t>(order_[k])];
    const size_t offset = static_cast<size_t>(pos - starts_[k]);
    const int64_t t = pos - begin;                    // position within the window
    if (pos + 1 < end) input_ids[t] = e.ids[offset];  // inputs = window[:-1]
    if (t > 0) labels[t - 1] = e.mask[offset] ? e.ids[offset] : kIgnoreLabel;
  }
}

void EpochRows::FillUnpackedRow(int64_t row, int64_t* input_ids, int64_t* labels) const {
  const int64_t L = options_.seq_len;
  const Example& e = dataset_->examples[static_cast<size_t>(order_[static_cast<size_t>(row)])];
  const int64_t kept = std::min(static_cast<int64_t>(e.ids.size()), L + 1);
  std::fill(input_ids, input_ids + L, static_cast<int64_t>(options_.pad_id));
  std::fill(labels, labels + L, kIgnoreLabel);
  for (int64_t t = 0; t + 1 < kept; ++t) {
    input_ids[t] = e.ids[static_cast<size_t>(t)];
    const size_t next = static_cast<size_t>(t + 1);
    labels[t] = e.mask[next] ? e.ids[next] : kIgnoreLabel;
  }
}

absl::StatusOr<PackingStats> LayoutStats(const Dataset& dataset, const PackingOptions& options) {
  std::vector<int64_t> order(dataset.examples.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  absl::StatusOr<EpochRows> rows = EpochRows::Build(dataset, std::move(order), options);
  if (!rows.ok()) return rows.status();
  return rows->stats();
}

}  // namespace qwha::data

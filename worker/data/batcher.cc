#include "worker/data/batcher.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/data/shuffle.h"

namespace qwha::data {
namespace {

using Json = nlohmann::json;

// FNV-1a style mixing of 64-bit words: enough to tell datasets and options
// apart (a fingerprint, not a cryptographic digest).
class Fingerprint {
 public:
  void Add(uint64_t word) {
    h_ ^= word;
    h_ *= 0x100000001B3ull;
    h_ ^= h_ >> 29;
  }
  std::string Hex() const { return absl::StrFormat("%016x", h_); }

 private:
  uint64_t h_ = 0xCBF29CE484222325ull;
};

std::string ComputeFingerprint(const Dataset& dataset, const BatcherOptions& options) {
  Fingerprint f;
  f.Add(static_cast<uint64_t>(options.batch_size));
  f.Add(static_cast<uint64_t>(options.packing.seq_len));
  f.Add(options.packing.pack);
  f.Add(static_cast<uint64_t>(options.packing.pad_id));
  f.Add(options.seed);
  f.Add(options.shuffle);
  f.Add(options.drop_last);
  f.Add(dataset.examples.size());
  for (const Example& e : dataset.examples) {
    f.Add(e.ids.size());
    for (size_t i = 0; i < e.ids.size(); ++i) {
      f.Add((static_cast<uint64_t>(static_cast<uint32_t>(e.ids[i])) << 1) | e.mask[i]);
    }
  }
  return f.Hex();
}

}  // namespace

std::string BatcherState::ToJson() const {
  return Json{{"epoch", epoch}, {"batch", batch}, {"fingerprint", fingerprint}}.dump();
}

absl::StatusOr<BatcherState> BatcherState::FromJson(std::string_view json) {
  Json value = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || !value.is_object()) {
    return absl::InvalidArgumentError("batcher state: not a JSON object");
  }
  auto integer = [&value](const char* key, int64_t& out) -> absl::Status {
    auto it = value.find(key);
    if (it == value.end() || !it->is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("batcher state: \"", key, "\" must be an integer"));
    }
    out = it->get<int64_t>();
    return absl::OkStatus();
  };
  BatcherState state;
  if (absl::Status s = integer("epoch", state.epoch); !s.ok()) return s;
  if (absl::Status s = integer("batch", state.batch); !s.ok()) return s;
  auto it = value.find("fingerprint");
  if (it == value.end() || !it->is_string()) {
    return absl::InvalidArgumentError("batcher state: \"fingerprint\" must be a string");
  }
  state.fingerprint = it->get<std::string>();
  return state;
}

Batcher::Batcher(const Dataset& dataset, const BatcherOptions& options, std::string fingerprint)
    : dataset_(dataset), options_(options), fingerprint_(std::move(fingerprint)) {}

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::Create(const Dataset& dataset,
                                                         const BatcherOptions& options) {
  if (options.batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size must be >= 1, got ", options.batch_size));
  }
  if (absl::Status s = ValidatePackingOptions(options.packing); !s.ok()) return s;
  if (dataset.examples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(dataset.source, ": the dataset is empty"));
  }
  std::unique_ptr<Batcher> batcher(
      new Batcher(dataset, options, ComputeFingerprint(dataset, options)));
  if (absl::Status s = batcher->StartEpoch(0); !s.ok()) return s;
  const int64_t rows = batcher->rows_->num_rows();
  const int64_t b = options.batch_size;
  batcher->rows_per_epoch_ = rows;
  batcher->batches_per_epoch_ = options.drop_last ? rows / b : (rows + b - 1) / b;
  if (batcher->batches_per_epoch_ == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        dataset.source, ": ", rows, " rows per epoch make no batch of ", b, " with drop_last"));
  }
  return batcher;
}

absl::Status Batcher::StartEpoch(int64_t epoch) {
  const int64_t n = static_cast<int64_t>(dataset_.examples.size());
  std::vector<int64_t> order;
  if (options_.shuffle) {
    order = Permutation(
        n, DeriveSeed(options_.seed, RandomStream::kEpochShuffle, static_cast<uint64_t>(epoch)));
  } else {
    order.resize(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), int64_t{0});
  }
  absl::StatusOr<EpochRows> rows = EpochRows::Build(dataset_, std::move(order), options_.packing);
  if (!rows.ok()) return rows.status();
  rows_ = *std::move(rows);
  epoch_ = epoch;
  batch_ = 0;
  return absl::OkStatus();
}

Batch Batcher::Next() {
  if (batch_ >= batches_per_epoch_) {
    // Cannot fail: the dataset and options were valid for epoch 0.
    StartEpoch(epoch_ + 1).IgnoreError();
  }
  const int64_t L = options_.packing.seq_len;
  const int64_t first = batch_ * options_.batch_size;
  const int64_t count = std::min(options_.batch_size, rows_per_epoch_ - first);
  Batch batch;
  batch.epoch = epoch_;
  batch.index = batch_;
  batch.input_ids = torch::empty({count, L}, torch::kInt64);
  batch.labels = torch::empty({count, L}, torch::kInt64);
  int64_t* ids = batch.input_ids.data_ptr<int64_t>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  for (int64_t r = 0; r < count; ++r) rows_->FillRow(first + r, ids + r * L, labels + r * L);
  ++batch_;
  return batch;
}

BatcherState Batcher::State() const {
  BatcherState state;
  state.epoch = epoch_;
  state.batch = batch_;
  state.fingerprint = fingerprint_;
  if (state.batch >= batches_per_epoch_) {  // normalize: the end of e is the start of e + 1
    ++state.epoch;
    state.batch = 0;
  }
  return state;
}

absl::Status Batcher::Restore(const BatcherState& state) {
  if (state.fingerprint != fingerprint_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "batcher state fingerprint ", state.fingerprint, " was made for other data or options (",
        dataset_.source, " with these options: ", fingerprint_, ")"));
  }
  if (state.epoch < 0 || state.batch < 0 || state.batch > batches_per_epoch_) {
    return absl::InvalidArgumentError(absl::StrCat("batcher state epoch ", state.epoch, " batch ",
                                                   state.batch, " out of range (",
                                                   batches_per_epoch_, " batches per epoch)"));
  }
  int64_t epoch = state.epoch;
  int64_t batch = state.batch;
  if (batch == batches_per_epoch_) {
    ++epoch;
    batch = 0;
  }
  if (epoch != epoch_) {
    if (absl::Status s = StartEpoch(epoch); !s.ok()) return s;
  }
  batch_ = batch;
  return absl::OkStatus();
}

}  // namespace qwha::data

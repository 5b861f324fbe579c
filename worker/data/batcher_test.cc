#include "worker/data/batcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/data/shuffle.h"
#include "worker/data/test_util.h"

namespace qwha::data {
namespace {

using testing::FixtureTokenizer;
using ::testing::HasSubstr;
using testing::WriteTempFile;

// n examples with distinct ids: example i is [1000 + i, 10·i + 1, ..., 10·i +
// len] with len = 1 + i % 5, mask 0 on the first id.
Dataset Synthetic(int n) {
  Dataset ds;
  ds.source = "synthetic.jsonl";
  for (int i = 0; i < n; ++i) {
    Example e;
    e.ids.push_back(1000 + i);
    e.mask.push_back(0);
    for (int t = 1; t <= 1 + i % 5; ++t) {
      e.ids.push_back(10 * i + t);
      e.mask.push_back(1);
    }
    e.line = i + 1;
    ds.examples.push_back(e);
  }
  return ds;
}

BatcherOptions Options(int64_t batch_size, int64_t seq_len, bool pack, uint64_t seed) {
  BatcherOptions options;
  options.batch_size = batch_size;
  options.packing.seq_len = seq_len;
  options.packing.pack = pack;
  options.packing.pad_id = 7;
  options.seed = seed;
  return options;
}

void ExpectSameBatch(const Batch& a, const Batch& b) {
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.index, b.index);
  ASSERT_EQ(a.input_ids.sizes(), b.input_ids.sizes());
  EXPECT_TRUE(torch::equal(a.input_ids, b.input_ids)) << a.epoch << "/" << a.index;
  EXPECT_TRUE(torch::equal(a.labels, b.labels)) << a.epoch << "/" << a.index;
}

TEST(BatcherTest, BatchesAreTheEpochRowsInOrder) {
  const Dataset ds = Synthetic(23);
  const BatcherOptions options = Options(4, 6, /*pack=*/true, /*seed=*/5);
  absl::StatusOr<std::unique_ptr<Batcher>> batcher = Batcher::Create(ds, options);
  ASSERT_TRUE(batcher.ok()) << batcher.status();
  Batcher& b = **batcher;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    absl::StatusOr<EpochRows> rows = EpochRows::Build(
        ds, Permutation(23, DeriveSeed(5, RandomStream::kEpochShuffle, epoch)), options.packing);
    ASSERT_TRUE(rows.ok());
    ASSERT_EQ(rows->num_rows(), b.rows_per_epoch());
    ASSERT_EQ(b.batches_per_epoch(), (b.rows_per_epoch() + 3) / 4);
    int64_t row = 0;
    for (int64_t i = 0; i < b.batches_per_epoch(); ++i) {
      const Batch batch = b.Next();
      EXPECT_EQ(batch.epoch, epoch);
      EXPECT_EQ(batch.index, i);
      ASSERT_EQ(batch.input_ids.dtype(), torch::kInt64);
      ASSERT_EQ(batch.labels.dtype(), torch::kInt64);
      const int64_t rows_here = std::min<int64_t>(4, rows->num_rows() - row);
      ASSERT_EQ(batch.input_ids.sizes(), (std::vector<int64_t>{rows_here, 6}));
      ASSERT_EQ(batch.labels.sizes(), (std::vector<int64_t>{rows_here, 6}));
      for (int64_t k = 0; k < rows_here; ++k, ++row) {
        std::vector<int64_t> inputs(6), labels(6);
        rows->FillRow(row, inputs.data(), labels.data());
        EXPECT_EQ(inputs, std::vector<int64_t>(batch.input_ids[k].data_ptr<int64_t>(),
                                               batch.input_ids[k].data_ptr<int64_t>() + 6));
        EXPECT_EQ(labels, std::vector<int64_t>(batch.labels[k].data_ptr<int64_t>(),
                                               batch.labels[k].data_ptr<int64_t>() + 6));
      }
    }
  }
}

TEST(BatcherTest, ShuffleIsDeterministicPerSeedAndChangesPerEpoch) {
  const Dataset ds = Synthetic(40);
  auto epoch_inputs = [&](uint64_t seed, int epochs) {
    auto b = *Batcher::Create(ds, Options(40, 4, /*pack=*/false, seed));
    std::vector<torch::Tensor> out;
    for (int e = 0; e < epochs; ++e) out.push_back(b->Next().input_ids);
    return out;
  };
  const std::vector<torch::Tensor> a = epoch_inputs(1, 2);
  const std::vector<torch::Tensor> again = epoch_inputs(1, 2);
  const std::vector<torch::Tensor> other = epoch_inputs(2, 2);
  EXPECT_TRUE(torch::equal(a[0], again[0]));
  EXPECT_TRUE(torch::equal(a[1], again[1]));
  EXPECT_FALSE(torch::equal(a[0], other[0]));
  EXPECT_FALSE(torch::equal(a[0], a[1]));  // reshuffled at the epoch boundary
  // The same examples, in another order: first columns are the 1000 + i ids.
  auto first_ids = [](const torch::Tensor& t) {
    std::vector<int64_t> ids;
    for (int64_t r = 0; r < t.size(0); ++r) ids.push_back(t[r][0].item<int64_t>());
    std::sort(ids.begin(), ids.end());
    return ids;
  };
  EXPECT_EQ(first_ids(a[0]), first_ids(a[1]));
}

TEST(BatcherTest, NoShuffleKeepsFileOrder) {
  const Dataset ds = Synthetic(5);
  BatcherOptions options = Options(5, 3, /*pack=*/false, 9);
  options.shuffle = false;
  auto b = *Batcher::Create(ds, options);
  for (int epoch = 0; epoch < 2; ++epoch) {
    const Batch batch = b->Next();
    for (int64_t r = 0; r < 5; ++r) EXPECT_EQ(batch.input_ids[r][0].item<int64_t>(), 1000 + r);
  }
}

// Saves the state after `k` batches, then checks that a fresh batcher
// restored from it (through JSON) yields the same next `m` batches.
void CheckResume(const Dataset& ds, const BatcherOptions& options, int k, int m) {
  SCOPED_TRACE(absl::StrCat("after ", k, " batches, next ", m));
  auto original = *Batcher::Create(ds, options);
  for (int i = 0; i < k; ++i) original->Next();
  const std::string saved = original->State().ToJson();

  auto resumed = *Batcher::Create(ds, options);
  absl::StatusOr<BatcherState> state = BatcherState::FromJson(saved);
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_TRUE(resumed->Restore(*state).ok());
  EXPECT_EQ(resumed->State().ToJson(), saved);
  for (int i = 0; i < m; ++i) {
    ExpectSameBatch(original->Next(), resumed->Next());
  }
}

TEST(BatcherTest, RestoredBatcherContinuesWithTheSameBatches) {
  const Dataset ds = Synthetic(30);
  for (bool pack : {true, false}) {
    SCOPED_TRACE(pack ? "packed" : "unpacked");
    const BatcherOptions options = Options(4, 5, pack, 11);
    auto probe = *Batcher::Create(ds, options);
    const int per_epoch = static_cast<int>(probe->batches_per_epoch());
    ASSERT_GE(per_epoch, 3);
    CheckResume(ds, options, 0, 2);
    CheckResume(ds, options, 2, 3);                          // mid-epoch
    CheckResume(ds, options, per_epoch - 1, 3);              // across the epoch boundary
    CheckResume(ds, options, per_epoch, 2);                  // exactly at the boundary
    CheckResume(ds, options, 2 * per_epoch + 1, per_epoch);  // a later epoch
  }
}

TEST(BatcherTest, StateJsonAndNormalization) {
  const Dataset ds = Synthetic(8);
  auto b = *Batcher::Create(ds, Options(4, 100, /*pack=*/false, 0));
  ASSERT_EQ(b->batches_per_epoch(), 2);
  EXPECT_EQ(b->State().epoch, 0);
  EXPECT_EQ(b->State().batch, 0);
  b->Next();
  b->Next();
  // The end of epoch 0 is reported as the start of epoch 1.
  const BatcherState s = b->State();
  EXPECT_EQ(s.epoch, 1);
  EXPECT_EQ(s.batch, 0);
  EXPECT_EQ(s.fingerprint.size(), 16u);
  EXPECT_EQ(s.ToJson(),
            absl::StrCat(R"({"batch":0,"epoch":1,"fingerprint":")", s.fingerprint, R"("})"));
  EXPECT_EQ(b->Next().epoch, 1);

  // Restore can go back, and accepts batch == batches_per_epoch.
  ASSERT_TRUE(b->Restore({0, 2, s.fingerprint}).ok());
  EXPECT_EQ(b->State().epoch, 1);
  ASSERT_TRUE(b->Restore({0, 1, s.fingerprint}).ok());
  const Batch batch = b->Next();
  EXPECT_EQ(batch.epoch, 0);
  EXPECT_EQ(batch.index, 1);
}

TEST(BatcherTest, RestoreRejectsForeignOrInvalidStates) {
  const Dataset ds = Synthetic(8);
  auto b = *Batcher::Create(ds, Options(4, 5, true, 0));
  const BatcherState good = b->State();
  b->Next();

  auto other_seed = *Batcher::Create(ds, Options(4, 5, true, 1));
  absl::Status s = other_seed->Restore(good);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("other data or options"));

  Dataset changed = Synthetic(8);
  changed.examples[3].mask.back() = 0;
  auto other_data = *Batcher::Create(changed, Options(4, 5, true, 0));
  EXPECT_EQ(other_data->Restore(good).code(), absl::StatusCode::kFailedPrecondition);
  auto other_len = *Batcher::Create(ds, Options(4, 6, true, 0));
  EXPECT_EQ(other_len->Restore(good).code(), absl::StatusCode::kFailedPrecondition);

  EXPECT_EQ(b->Restore({-1, 0, good.fingerprint}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b->Restore({0, -1, good.fingerprint}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b->Restore({0, b->batches_per_epoch() + 1, good.fingerprint}).code(),
            absl::StatusCode::kInvalidArgument);
  // A failed Restore leaves the position alone.
  EXPECT_EQ(b->State().batch, 1);

  EXPECT_FALSE(BatcherState::FromJson("not json").ok());
  EXPECT_FALSE(BatcherState::FromJson("[]").ok());
  EXPECT_FALSE(BatcherState::FromJson(R"({"epoch": 1, "fingerprint": "x"})").ok());
  EXPECT_FALSE(BatcherState::FromJson(R"({"epoch": 1.5, "batch": 0, "fingerprint": "x"})").ok());
  EXPECT_FALSE(BatcherState::FromJson(R"({"epoch": 1, "batch": 0})").ok());
  absl::StatusOr<BatcherState> parsed =
      BatcherState::FromJson(R"({"epoch": 2, "batch": 3, "fingerprint": "ab", "extra": 1})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->epoch, 2);
  EXPECT_EQ(parsed->batch, 3);
  EXPECT_EQ(parsed->fingerprint, "ab");
}

TEST(BatcherTest, CreateRejectsBadOptions) {
  const Dataset ds = Synthetic(3);
  EXPECT_EQ(Batcher::Create(ds, Options(0, 4, true, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Batcher::Create(ds, Options(2, 0, true, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Batcher::Create(Dataset{}, Options(2, 4, true, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  BatcherOptions drop = Options(4, 100, /*pack=*/false, 0);
  drop.drop_last = true;
  EXPECT_EQ(Batcher::Create(ds, drop).status().code(), absl::StatusCode::kInvalidArgument);
  drop.batch_size = 2;
  auto b = *Batcher::Create(ds, drop);
  EXPECT_EQ(b->batches_per_epoch(), 1);  // the third row is dropped
  EXPECT_EQ(b->Next().input_ids.size(0), 2);
  EXPECT_EQ(b->Next().epoch, 1);
}

// End to end on real text: in unpacked file order, the labels of each row
// decode to the completion (EOS skipped as a special token).
TEST(BatcherTest, UnpackedLabelsDecodeToTheCompletions) {
  std::unique_ptr<tokenizer::Tokenizer> tok = FixtureTokenizer("llama3_style");
  ASSERT_NE(tok, nullptr);
  std::string content;
  std::vector<std::string> completions;
  for (int i = 0; i < 10; ++i) {
    completions.push_back(absl::StrCat(" answer number ", i * 7));
    absl::StrAppend(&content, R"({"prompt": "question )", i, R"(?", "completion": ")",
                    completions.back(), "\"}\n");
  }
  absl::StatusOr<Dataset> ds = LoadDataset(WriteTempFile("e2e.jsonl", content), *tok);
  ASSERT_TRUE(ds.ok()) << ds.status();
  BatcherOptions options = Options(3, 64, /*pack=*/false, 0);
  options.shuffle = false;
  options.packing.pad_id = *tok->eos_id();
  auto b = *Batcher::Create(*ds, options);
  int row = 0;
  for (int64_t i = 0; i < b->batches_per_epoch(); ++i) {
    const Batch batch = b->Next();
    for (int64_t r = 0; r < batch.labels.size(0); ++r, ++row) {
      std::vector<int32_t> supervised;
      bool eos_last = false;
      for (int64_t t = 0; t < 64; ++t) {
        const int64_t label = batch.labels[r][t].item<int64_t>();
        if (label != kIgnoreLabel) {
          supervised.push_back(static_cast<int32_t>(label));
          eos_last = label == *tok->eos_id();
        }
      }
      EXPECT_TRUE(eos_last);
      EXPECT_EQ(tok->Decode(supervised, /*skip_special_tokens=*/true), completions[row]);
      // Every row starts with the example's BOS.
      EXPECT_EQ(batch.input_ids[r][0].item<int64_t>(), *tok->bos_id());
    }
  }
  EXPECT_EQ(row, 10);
}

}  // namespace
}  // namespace qwha::data

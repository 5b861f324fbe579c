#include "worker/data/packing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "worker/data/shuffle.h"

namespace qwha::data {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

constexpr int64_t X = kIgnoreLabel;
constexpr int32_t kPad = 99;

Example Make(std::vector<int32_t> ids, std::vector<uint8_t> mask) {
  Example e;
  e.ids = std::move(ids);
  e.mask = std::move(mask);
  return e;
}

// A = 10 11 12 13 (mask 0 1 1 1), B = 20 21 22 (mask 0 0 1).
Dataset TwoExamples() {
  Dataset ds;
  ds.source = "two.jsonl";
  ds.examples.push_back(Make({10, 11, 12, 13}, {0, 1, 1, 1}));
  ds.examples.push_back(Make({20, 21, 22}, {0, 0, 1}));
  return ds;
}

struct Row {
  std::vector<int64_t> inputs;
  std::vector<int64_t> labels;
};

std::vector<Row> AllRows(const EpochRows& rows) {
  std::vector<Row> out;
  for (int64_t r = 0; r < rows.num_rows(); ++r) {
    Row row{std::vector<int64_t>(rows.seq_len()), std::vector<int64_t>(rows.seq_len())};
    rows.FillRow(r, row.inputs.data(), row.labels.data());
    out.push_back(std::move(row));
  }
  return out;
}

PackingOptions Options(int64_t seq_len, bool pack) {
  PackingOptions options;
  options.seq_len = seq_len;
  options.pack = pack;
  options.pad_id = kPad;
  return options;
}

TEST(PackingTest, PackedRowsOverlapByOneAndShiftLabels) {
  const Dataset ds = TwoExamples();
  // Stream 10 11 12 13 20 21 22; windows of 4 with stride 3.
  absl::StatusOr<EpochRows> rows = EpochRows::Build(ds, {0, 1}, Options(3, true));
  ASSERT_TRUE(rows.ok()) << rows.status();
  const std::vector<Row> r = AllRows(*rows);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_THAT(r[0].inputs, ElementsAre(10, 11, 12));
  EXPECT_THAT(r[0].labels, ElementsAre(11, 12, 13));
  EXPECT_THAT(r[1].inputs, ElementsAre(13, 20, 21));
  EXPECT_THAT(r[1].labels, ElementsAre(X, X, 22));  // 20 (BOS-like) and 21 are masked
  EXPECT_EQ(rows->stats().rows, 2);
  EXPECT_EQ(rows->stats().labels, 4);
  EXPECT_EQ(rows->stats().padding, 0);
}

TEST(PackingTest, PackedLastRowIsPadded) {
  const Dataset ds = TwoExamples();
  absl::StatusOr<EpochRows> rows = EpochRows::Build(ds, {0, 1}, Options(4, true));
  ASSERT_TRUE(rows.ok()) << rows.status();
  const std::vector<Row> r = AllRows(*rows);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_THAT(r[0].inputs, ElementsAre(10, 11, 12, 13));
  EXPECT_THAT(r[0].labels, ElementsAre(11, 12, 13, X));
  EXPECT_THAT(r[1].inputs, ElementsAre(20, 21, kPad, kPad));
  EXPECT_THAT(r[1].labels, ElementsAre(X, 22, X, X));
  EXPECT_EQ(rows->stats().padding, 2);
  EXPECT_EQ(rows->stats().labels, 4);
}

TEST(PackingTest, PackedFollowsTheGivenOrder) {
  const Dataset ds = TwoExamples();
  absl::StatusOr<EpochRows> rows = EpochRows::Build(ds, {1, 0}, Options(3, true));
  ASSERT_TRUE(rows.ok()) << rows.status();
  const std::vector<Row> r = AllRows(*rows);
  // Stream 20 21 22 10 11 12 13.
  ASSERT_EQ(r.size(), 2u);
  EXPECT_THAT(r[0].inputs, ElementsAre(20, 21, 22));
  EXPECT_THAT(r[0].labels, ElementsAre(X, 22, X));
  EXPECT_THAT(r[1].inputs, ElementsAre(10, 11, 12));
  EXPECT_THAT(r[1].labels, ElementsAre(11, 12, 13));
  // With L = 2 an example boundary falls inside a row: 22 -> 10 is no label.
  absl::StatusOr<EpochRows> rows2 = EpochRows::Build(ds, {1, 0}, Options(2, true));
  ASSERT_TRUE(rows2.ok());
  const std::vector<Row> r2 = AllRows(*rows2);
  ASSERT_EQ(r2.size(), 3u);
  EXPECT_THAT(r2[0].inputs, ElementsAre(20, 21));
  EXPECT_THAT(r2[0].labels, ElementsAre(X, 22));
  EXPECT_THAT(r2[1].inputs, ElementsAre(22, 10));
  EXPECT_THAT(r2[1].labels, ElementsAre(X, 11));
  EXPECT_THAT(r2[2].inputs, ElementsAre(11, 12));
  EXPECT_THAT(r2[2].labels, ElementsAre(12, 13));
}

// Every stream position p >= 1 is the label of input position p - 1, i.e.
// row (p-1)/L column (p-1)%L, and the input there is stream[p-1].
TEST(PackingTest, PackedRowsCoverTheStreamExactlyOnce) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 50; ++trial) {
    Dataset ds;
    std::vector<int32_t> stream;
    std::vector<uint8_t> stream_mask;
    const int n = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < n; ++i) {
      const int len = 2 + static_cast<int>(rng() % 9);
      Example e;
      for (int t = 0; t < len; ++t) {
        e.ids.push_back(static_cast<int32_t>(rng() % 1000));
        e.mask.push_back(static_cast<uint8_t>(t > 0 && rng() % 3 != 0));
      }
      ds.examples.push_back(e);
    }
    const std::vector<int64_t> order = Permutation(n, rng());
    for (int64_t k : order) {
      const Example& e = ds.examples[static_cast<size_t>(k)];
      stream.insert(stream.end(), e.ids.begin(), e.ids.end());
      stream_mask.insert(stream_mask.end(), e.mask.begin(), e.mask.end());
    }
    const int64_t L = 1 + static_cast<int64_t>(rng() % 7);
    absl::StatusOr<EpochRows> rows = EpochRows::Build(ds, order, Options(L, true));
    ASSERT_TRUE(rows.ok()) << rows.status();
    const int64_t N = static_cast<int64_t>(stream.size());
    ASSERT_EQ(rows->num_rows(), (N - 1 + L - 1) / L);
    const std::vector<Row> r = AllRows(*rows);
    int64_t labels = 0;
    for (int64_t q = 0; q < rows->num_rows() * L; ++q) {  // flat input position
      const Row& row = r[static_cast<size_t>(q / L)];
      const int64_t input = row.inputs[static_cast<size_t>(q % L)];
      const int64_t label = row.labels[static_cast<size_t>(q % L)];
      if (q + 1 < N) {
        EXPECT_EQ(input, stream[static_cast<size_t>(q)]);
        EXPECT_EQ(label,
                  stream_mask[static_cast<size_t>(q + 1)] ? stream[static_cast<size_t>(q + 1)] : X);
      } else {
        EXPECT_EQ(input, kPad);
        EXPECT_EQ(label, X);
      }
      labels += label != X;
    }
    EXPECT_EQ(rows->stats().labels, labels);
    EXPECT_EQ(rows->stats().padding, rows->num_rows() * L - (N - 1));
  }
}

TEST(PackingTest, UnpackedRowsPadAndTruncate) {
  const Dataset ds = TwoExamples();
  absl::StatusOr<EpochRows> rows = EpochRows::Build(ds, {0, 1}, Options(3, false));
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::vector<Row> r = AllRows(*rows);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_THAT(r[0].inputs, ElementsAre(10, 11, 12));
  EXPECT_THAT(r[0].labels, ElementsAre(11, 12, 13));
  EXPECT_THAT(r[1].inputs, ElementsAre(20, 21, kPad));
  EXPECT_THAT(r[1].labels, ElementsAre(X, 22, X));
  EXPECT_EQ(rows->stats().truncated_examples, 0);
  EXPECT_EQ(rows->stats().padding, 1);
  EXPECT_EQ(rows->stats().labels, 4);

  rows = EpochRows::Build(ds, {1, 0}, Options(2, false));
  ASSERT_TRUE(rows.ok()) << rows.status();
  r = AllRows(*rows);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_THAT(r[0].inputs, ElementsAre(20, 21));  // B fits exactly (L + 1 tokens)
  EXPECT_THAT(r[0].labels, ElementsAre(X, 22));
  EXPECT_THAT(r[1].inputs, ElementsAre(10, 11));  // A loses its last token
  EXPECT_THAT(r[1].labels, ElementsAre(11, 12));
  EXPECT_EQ(rows->stats().truncated_examples, 1);
  EXPECT_EQ(rows->stats().truncated_supervised, 1);
  EXPECT_EQ(rows->stats().labels, 3);
  EXPECT_EQ(rows->stats().padding, 0);

  rows = EpochRows::Build(ds, {0, 1}, Options(8, false));
  ASSERT_TRUE(rows.ok());
  r = AllRows(*rows);
  EXPECT_THAT(r[0].inputs, ElementsAre(10, 11, 12, kPad, kPad, kPad, kPad, kPad));
  EXPECT_THAT(r[0].labels, ElementsAre(11, 12, 13, X, X, X, X, X));
  EXPECT_EQ(rows->stats().padding, 5 + 6);
}

TEST(PackingTest, LayoutStatsUseFileOrder) {
  const Dataset ds = TwoExamples();
  absl::StatusOr<PackingStats> packed = LayoutStats(ds, Options(4, true));
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_EQ(packed->rows, 2);
  EXPECT_EQ(packed->labels, 4);
  EXPECT_EQ(packed->padding, 2);
  absl::StatusOr<PackingStats> unpacked = LayoutStats(ds, Options(2, false));
  ASSERT_TRUE(unpacked.ok()) << unpacked.status();
  EXPECT_EQ(unpacked->rows, 2);
  EXPECT_EQ(unpacked->truncated_examples, 1);
  EXPECT_FALSE(LayoutStats(Dataset{}, Options(2, false)).ok());
}

TEST(PackingTest, RejectsBadInputs) {
  const Dataset ds = TwoExamples();
  EXPECT_FALSE(EpochRows::Build(ds, {0, 1}, Options(0, true)).ok());
  PackingOptions negative_pad = Options(4, true);
  negative_pad.pad_id = -1;
  EXPECT_FALSE(EpochRows::Build(ds, {0, 1}, negative_pad).ok());
  EXPECT_FALSE(EpochRows::Build(ds, {0}, Options(4, true)).ok());
  EXPECT_FALSE(EpochRows::Build(ds, {0, 0}, Options(4, true)).ok());
  EXPECT_FALSE(EpochRows::Build(ds, {0, 2}, Options(4, true)).ok());
  EXPECT_FALSE(EpochRows::Build(Dataset{}, {}, Options(4, true)).ok());
}

TEST(ShuffleTest, PermutationsAreDeterministicAndPinned) {
  const std::vector<int64_t> p = Permutation(1000, 42);
  EXPECT_EQ(p, Permutation(1000, 42));
  EXPECT_NE(p, Permutation(1000, 43));
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  // Pinned: a change here changes every shuffled job's data order.
  EXPECT_THAT(Permutation(10, 42),
              ElementsAreArray(std::vector<int64_t>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6}));
  EXPECT_TRUE(Permutation(0, 1).empty());
  EXPECT_THAT(Permutation(1, 1), ElementsAre(0));
}

TEST(ShuffleTest, DerivedSeedsSeparateStreamsAndNeighbours) {
  std::set<uint64_t> seeds;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    for (uint64_t index = 0; index < 4; ++index) {
      seeds.insert(DeriveSeed(seed, RandomStream::kEpochShuffle, index));
      seeds.insert(DeriveSeed(seed, RandomStream::kEvalSplit, index));
    }
  }
  EXPECT_EQ(seeds.size(), 32u);
  EXPECT_EQ(DeriveSeed(5, RandomStream::kEpochShuffle, 2),
            DeriveSeed(5, RandomStream::kEpochShuffle, 2));
}

}  // namespace
}  // namespace qwha::data

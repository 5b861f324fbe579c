#include "worker/train/checkpoint.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "worker/io/atomic_file.h"
#include "worker/train/test_util.h"

namespace qwha::train {
namespace {

namespace fs = std::filesystem;
using TensorMap = std::map<std::string, torch::Tensor>;

std::string FreshDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(tmp != nullptr ? tmp : "/tmp") / ("train_checkpoint_test_" + name);
  EXPECT_TRUE(io::RemoveTree(dir.string()).ok());
  return dir.string();
}

void ExpectSameTensors(const TensorMap& a, const TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [key, value] : a) {
    ASSERT_EQ(b.count(key), 1u) << key;
    EXPECT_EQ(value.scalar_type(), b.at(key).scalar_type()) << key;
    EXPECT_TRUE(torch::equal(value, b.at(key))) << key;
  }
}

TrainingCheckpoint MakeCheckpoint(int64_t step) {
  torch::manual_seed(step);
  TrainingCheckpoint c;
  c.step = step;
  c.epoch = step / 4;
  c.tokens_seen = step * 1000;
  c.data_position = "{\"file\": \"shard-3.jsonl\", \"offset\": 12345, \"note\": \"é\\n\\\"\"}";
  c.metrics = {{"loss", 2.5 / (step + 1)}, {"eval_loss", std::nan("")}};
  c.adapter_state = {{"model.layers.0.mlp.up_proj/spectrum_values", torch::randn({10})},
                     {"model.layers.0.mlp.up_proj/spectrum_index", torch::arange(10)}};
  c.optimizer_state = {{"p/step", torch::tensor({step}, torch::kInt64)},
                       {"p/exp_avg", torch::randn({10})},
                       {"p/master", torch::randn({3, 2})}};
  c.rng_state = CaptureRngState();
  return c;
}

TEST(CheckpointTest, RoundTripsEveryField) {
  const std::string root = FreshDir("roundtrip");
  const TrainingCheckpoint saved = MakeCheckpoint(7);
  auto dir = SaveCheckpoint(root, saved, 3);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, (fs::path(root) / "step-7").string());
  for (const char* f :
       {"adapters.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer_state.json"}) {
    EXPECT_TRUE(fs::is_regular_file(fs::path(*dir) / f)) << f;
  }
  EXPECT_FALSE(fs::exists(fs::path(root) / "step-7.tmp"));

  auto found = FindLatestCheckpoint(root);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, *dir);
  auto loaded = LoadLatestCheckpoint(root);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->step, 7);
  EXPECT_EQ(loaded->epoch, 1);
  EXPECT_EQ(loaded->tokens_seen, 7000);
  EXPECT_EQ(loaded->data_position, saved.data_position);
  ASSERT_EQ(loaded->metrics.size(), 2u);
  EXPECT_EQ(loaded->metrics.at("loss"), saved.metrics.at("loss"));
  EXPECT_TRUE(std::isnan(loaded->metrics.at("eval_loss")));
  ExpectSameTensors(loaded->adapter_state, saved.adapter_state);
  ExpectSameTensors(loaded->optimizer_state, saved.optimizer_state);
  ExpectSameTensors(loaded->rng_state, saved.rng_state);
}

TEST(CheckpointTest, KeepsTheNewestAndMovesLatest) {
  const std::string root = FreshDir("keep");
  for (int64_t step : {2, 4, 6, 8}) ASSERT_TRUE(SaveCheckpoint(root, MakeCheckpoint(step), 2).ok());
  EXPECT_FALSE(fs::exists(fs::path(root) / "step-2"));
  EXPECT_FALSE(fs::exists(fs::path(root) / "step-4"));
  EXPECT_TRUE(fs::exists(fs::path(root) / "step-6"));
  EXPECT_TRUE(fs::exists(fs::path(root) / "step-8"));
  auto loaded = LoadLatestCheckpoint(root);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->step, 8);

  // Saving a step again replaces it.
  TrainingCheckpoint again = MakeCheckpoint(8);
  again.data_position = "second";
  ASSERT_TRUE(SaveCheckpoint(root, again, 2).ok());
  EXPECT_EQ(LoadLatestCheckpoint(root)->data_position, "second");
  EXPECT_FALSE(fs::exists(fs::path(root) / "step-8.old"));

  // keep_last <= 0 keeps everything.
  const std::string all = FreshDir("keep_all");
  for (int64_t step : {1, 2, 3}) ASSERT_TRUE(SaveCheckpoint(all, MakeCheckpoint(step), 0).ok());
  for (int64_t step : {1, 2, 3}) {
    EXPECT_TRUE(fs::exists(fs::path(all) / ("step-" + std::to_string(step))));
  }
}

TEST(CheckpointTest, CrashMidWriteIsIgnored) {
  const std::string root = FreshDir("crash");
  ASSERT_TRUE(SaveCheckpoint(root, MakeCheckpoint(5), 3).ok());
  // A writer died while writing step 10: a partial .tmp directory.
  const fs::path partial = fs::path(root) / "step-10.tmp";
  fs::create_directories(partial);
  std::ofstream(partial / "adapters.safetensors") << "garbage";
  // Also a directory renamed into place but whose `latest` update was lost is
  // fine; here: an incomplete step directory without trainer_state.json.
  fs::create_directories(fs::path(root) / "step-12");
  std::ofstream(fs::path(root) / "step-12" / "adapters.safetensors") << "garbage";

  auto loaded = LoadLatestCheckpoint(root);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->step, 5);

  // Without the pointer, the highest complete step directory wins.
  fs::remove(fs::path(root) / "latest");
  auto fallback = LoadLatestCheckpoint(root);
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  EXPECT_EQ(fallback->step, 5);
  // A pointer to a directory that no longer exists falls back too.
  std::ofstream(fs::path(root) / "latest") << "step-99\n";
  EXPECT_EQ(LoadLatestCheckpoint(root)->step, 5);

  // The next successful save cleans up the leftovers.
  ASSERT_TRUE(SaveCheckpoint(root, MakeCheckpoint(6), 3).ok());
  EXPECT_FALSE(fs::exists(partial));
  EXPECT_EQ(LoadLatestCheckpoint(root)->step, 6);
}

TEST(CheckpointTest, ErrorsNameTheProblem) {
  EXPECT_EQ(LoadLatestCheckpoint(FreshDir("absent")).status().code(), absl::StatusCode::kNotFound);
  const std::string empty = FreshDir("empty");
  fs::create_directories(empty);
  EXPECT_EQ(FindLatestCheckpoint(empty).status().code(), absl::StatusCode::kNotFound);

  const std::string root = FreshDir("corrupt");
  auto dir = SaveCheckpoint(root, MakeCheckpoint(3), 3);
  ASSERT_TRUE(dir.ok());
  std::ofstream(fs::path(*dir) / "trainer_state.json")
      << "{\"format\": \"qwha-train-checkpoint-v1\"}";
  auto bad = LoadCheckpoint(*dir);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("trainer_state.json"), std::string::npos);
  EXPECT_NE(std::string(bad.status().message()).find("step"), std::string::npos);
  fs::remove(fs::path(*dir) / "optimizer.safetensors");
  std::ofstream(fs::path(*dir) / "trainer_state.json")
      << "{\"format\": \"qwha-train-checkpoint-v1\", \"step\": 3, \"epoch\": 0, "
         "\"tokens_seen\": 0, \"data_position\": \"\"}";
  auto missing = LoadCheckpoint(*dir);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();

  TrainingCheckpoint negative = MakeCheckpoint(1);
  negative.step = -1;
  EXPECT_EQ(SaveCheckpoint(root, negative, 3).status().code(), absl::StatusCode::kInvalidArgument);
  TrainingCheckpoint binary = MakeCheckpoint(1);
  binary.data_position = std::string("\xff\xfe", 2);
  EXPECT_EQ(SaveCheckpoint(root, binary, 3).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CheckpointTest, RngStateRestoresTheSequence) {
  torch::manual_seed(123);
  torch::randn({5});
  const TensorMap state = CaptureRngState();
  ASSERT_EQ(state.count("cpu"), 1u);
  const torch::Tensor expected = torch::randn({8});
  torch::randn({100});
  ASSERT_TRUE(RestoreRngState(state).ok());
  EXPECT_TRUE(torch::equal(torch::randn({8}), expected));
  // Through a checkpoint file.
  const std::string root = FreshDir("rng");
  TrainingCheckpoint c = MakeCheckpoint(1);
  c.rng_state = state;
  ASSERT_TRUE(SaveCheckpoint(root, c, 1).ok());
  auto loaded = LoadLatestCheckpoint(root);
  ASSERT_TRUE(loaded.ok());
  ASSERT_TRUE(RestoreRngState(loaded->rng_state).ok());
  EXPECT_TRUE(torch::equal(torch::randn({8}), expected));
  // A GPU this machine lacks is skipped; an unknown name is not.
  TensorMap gpu = state;
  gpu["cuda:63"] = torch::zeros({16}, torch::kUInt8);
  EXPECT_TRUE(RestoreRngState(gpu).ok());
  EXPECT_EQ(RestoreRngState({{"tpu", state.at("cpu")}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RestoreRngState({{"cpu", torch::zeros({3}, torch::kUInt8)}}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckpointTest, AdapterStateRoundTripsThroughTheModel) {
  for (auto [type, key] : {std::pair{adapters::AdapterType::kQwhaDataFree, "spectrum_values"},
                           std::pair{adapters::AdapterType::kLora, "lora_A"}}) {
    auto source = testing::MakeTinyAdaptedModel(type, 1);
    const TensorMap state = CollectAdapterState(*source);
    EXPECT_EQ(state.size(), 14u * 2);  // two state entries per adapter, 14 slots
    ASSERT_EQ(state.count(std::string("model.layers.1.mlp.down_proj/") + key), 1u);
    EXPECT_EQ(state.begin()->second.device(), torch::Device(torch::kCPU));

    // A model with differently initialized adapters takes the state over.
    auto target = testing::MakeTinyAdaptedModel(type, 2);
    ASSERT_FALSE(torch::equal(
        CollectAdapterState(*target).at(std::string("model.layers.1.mlp.down_proj/") + key),
        state.at(std::string("model.layers.1.mlp.down_proj/") + key)));
    ASSERT_TRUE(RestoreAdapterState(*target, state).ok());
    ExpectSameTensors(CollectAdapterState(*target), state);
    for (const model::LinearSlot* slot : target->LinearSlots()) {
      for (const torch::Tensor& p : slot->adapter()->TrainableParameters()) {
        EXPECT_TRUE(p.is_leaf() && p.requires_grad()) << slot->name();
      }
    }

    // Errors: a missing entry, an unknown slot, a malformed key.
    TensorMap missing = state;
    missing.erase(missing.begin());
    EXPECT_EQ(RestoreAdapterState(*target, missing).code(), absl::StatusCode::kInvalidArgument);
    TensorMap unknown = state;
    unknown["model.layers.9.mlp.up_proj/x"] = torch::zeros({1});
    auto st = RestoreAdapterState(*target, unknown);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(st.message()).find("model.layers.9.mlp.up_proj"), std::string::npos);
    TensorMap malformed = state;
    malformed["noslash"] = torch::zeros({1});
    EXPECT_EQ(RestoreAdapterState(*target, malformed).code(), absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace qwha::train

// Our exported PEFT adapter against peft itself: tests/fixtures/peft/adapter/
// (written by //worker/pipeline:make_peft_fixture for the llama2 model
// fixture) applied by our model, compared with the logits that
// transformers + peft computed for the same files
// (scripts/fixtures/make_peft_fixture.py → tests/fixtures/peft/logits.safetensors).
// The logits comparison skips until that file has been produced.
//
// Fixture root, first that exists: $QWHA_FIXTURES; $TEST_SRCDIR/qwha/tests/fixtures
// (Bazel runfiles); QWHA_SOURCE_DIR/tests/fixtures (CMake).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "worker/io/safetensors.h"
#include "worker/model/llama.h"
#include "worker/pipeline/export.h"

namespace qwha::pipeline {
namespace {

namespace fs = std::filesystem;

fs::path FixtureRoot() {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("QWHA_FIXTURES")) candidates.emplace_back(env);
  if (const char* srcdir = std::getenv("TEST_SRCDIR")) {
    candidates.push_back(fs::path(srcdir) / "qwha/tests/fixtures");
  }
#ifdef QWHA_SOURCE_DIR
  candidates.push_back(fs::path(QWHA_SOURCE_DIR) / "tests/fixtures");
#endif
  for (const fs::path& c : candidates) {
    std::error_code ec;
    if (fs::exists(c / "peft/adapter/adapter_config.json", ec)) return c;
  }
  return {};
}

// The adapted model: the llama2 fixture (dense, float32) with the exported
// adapter read back and attached.
std::unique_ptr<model::LlamaModel> AdaptedModel(const fs::path& root) {
  auto model = model::LoadModel((root / "model/llama2").string(), torch::kCPU, torch::kFloat32);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  auto adapter = ReadPeftAdapter((root / "peft/adapter").string());
  EXPECT_TRUE(adapter.ok()) << adapter.status();
  if (!adapter.ok()) return nullptr;
  EXPECT_EQ(adapter->layers.size(), 14u);
  EXPECT_EQ(adapter->r, 4);
  EXPECT_EQ(adapter->layers.at("model.layers.1.mlp.down_proj").a.size(0), 2);
  EXPECT_EQ(adapter->layers.at("model.layers.1.mlp.down_proj").scale, 0.5);
  EXPECT_EQ(adapter->layers.at("model.layers.0.self_attn.q_proj").scale, 0.75);
  EXPECT_TRUE(AttachPeftAdapter(**model, *adapter).ok());
  return *std::move(model);
}

TEST(PeftFixtureTest, CommittedAdapterAttaches) {
  const fs::path root = FixtureRoot();
  if (root.empty()) GTEST_SKIP() << "tests/fixtures/peft/adapter is absent";
  auto model = AdaptedModel(root);
  ASSERT_NE(model, nullptr);
  torch::NoGradGuard no_grad;
  torch::Tensor logits = model->Forward(torch::arange(8, torch::kInt64).unsqueeze(0));
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
}

TEST(PeftFixtureTest, LogitsMatchPeft) {
  const fs::path root = FixtureRoot();
  const fs::path golden = root / "peft/logits.safetensors";
  std::error_code ec;
  if (root.empty() || !fs::exists(golden, ec)) {
    GTEST_SKIP() << "tests/fixtures/peft/logits.safetensors is not there yet: run "
                    "scripts/fixtures/make_peft_fixture.py on a machine with transformers and "
                    "peft, and commit its output";
  }
  auto file = io::ReadSafetensors(golden.string());
  ASSERT_TRUE(file.ok()) << file.status();
  for (const char* name : {"input_ids", "logits", "base_logits"}) {
    ASSERT_TRUE(file->tensors.count(name)) << name;
  }
  auto model = AdaptedModel(root);
  ASSERT_NE(model, nullptr);
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = file->tensors.at("input_ids").to(torch::kInt64);
  const torch::Tensor ours = model->Forward(ids);
  const torch::Tensor peft = file->tensors.at("logits").to(torch::kFloat32);
  const torch::Tensor base = file->tensors.at("base_logits").to(torch::kFloat32);
  ASSERT_EQ(ours.sizes(), peft.sizes());
  const double err = (ours - peft).abs().max().item<double>();
  const double effect = (peft - base).abs().max().item<double>();
  std::printf("max |ours - peft| = %.3g; max |peft - base| = %.3g\n", err, effect);
  EXPECT_LT(err, 1e-4);
  EXPECT_GT(effect, 1e-2);  // the adapter matters, so a mismatch would show
}

}  // namespace
}  // namespace qwha::pipeline

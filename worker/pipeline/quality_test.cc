// Quality on a real (small) pretrained model, on the CPU: the demo LLaMA of
// tests/fixtures/demo, pretrained on the KJV text. 2-bit quantization raises
// its eval loss; QWHA initialization alone recovers part of the increase, more
// than LoftQ at the same budget; fine-tuning lowers train and eval loss.
// Sizes are kept small because Debian's CPU LibTorch uses a reference BLAS.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "worker/io/atomic_file.h"
#include "worker/pipeline/recipe.h"

namespace qwha::pipeline {
namespace {

namespace fs = std::filesystem;

fs::path DemoDir() {
  if (const char* dir = std::getenv("QWHA_DEMO_FIXTURES")) return dir;
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return (srcdir != nullptr ? fs::path(srcdir) / "qwha" : fs::path(".")) / "tests/fixtures/demo";
}

RecipeOptions DemoOptions(adapters::AdapterType type, const std::string& out) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  RecipeOptions o;
  o.model_dir = (DemoDir() / "model").string();
  o.train_data = (DemoDir() / "data/train.jsonl").string();
  o.eval_data = (DemoDir() / "data/eval.jsonl").string();
  o.eval_fraction = 0;
  o.output_dir = (fs::path(tmp != nullptr ? tmp : "/tmp") / out).string();
  EXPECT_TRUE(io::RemoveTree(o.output_dir).ok());
  o.quant.bits = 2;
  o.quant.group_size = 64;
  o.adapter.type = type;
  o.adapter.rank = 8;
  o.seq_len = 64;
  o.batch_size = 4;
  o.calibration_batches = 4;
  o.eval_batches = 4;
  o.train.max_steps = 12;
  o.train.lr = 1e-2;
  return o;
}

TEST(QualityTest, QwhaRecoversQuantizationLossAndTrains) {
  // Mean training loss of the first and of the second half of the steps
  // (single micro-batches are too noisy to compare one by one).
  std::vector<double> train_losses;
  auto on_progress = [&](const train::Progress& p) {
    if (p.phase == "train") train_losses.push_back(p.loss);
  };
  auto qwha =
      RunRecipe(DemoOptions(adapters::AdapterType::kQwha, "quality_qwha"), nullptr, on_progress);
  ASSERT_TRUE(qwha.ok()) << qwha.status();
  RecipeOptions loftq_options = DemoOptions(adapters::AdapterType::kLoftq, "quality_loftq");
  loftq_options.train.max_steps = 1;
  auto loftq = RunRecipe(loftq_options, nullptr, nullptr);
  ASSERT_TRUE(loftq.ok()) << loftq.status();
  ASSERT_GE(train_losses.size(), 4u);
  const size_t half = train_losses.size() / 2;
  double first_train_loss = 0, last_train_loss = 0;
  for (size_t i = 0; i < half; ++i) first_train_loss += train_losses[i] / half;
  for (size_t i = half; i < 2 * half; ++i) last_train_loss += train_losses[i] / half;
  std::printf(
      "eval loss: base %.4f, 2-bit %.4f, QWHA init %.4f (LoftQ init %.4f), QWHA trained %.4f; "
      "train loss %.4f -> %.4f\n",
      qwha->eval_loss_base, qwha->eval_loss_quantized, qwha->eval_loss_initialized,
      loftq->eval_loss_initialized, qwha->eval_loss_final, first_train_loss, last_train_loss);

  EXPECT_GT(qwha->eval_loss_quantized, qwha->eval_loss_base + 0.1);
  EXPECT_LT(qwha->eval_loss_initialized, qwha->eval_loss_quantized);
  EXPECT_LT(qwha->eval_loss_initialized, loftq->eval_loss_initialized);
  EXPECT_DOUBLE_EQ(loftq->eval_loss_quantized, qwha->eval_loss_quantized);  // same base
  EXPECT_LT(qwha->eval_loss_final, qwha->eval_loss_initialized);
  EXPECT_LT(last_train_loss, first_train_loss);
}

}  // namespace
}  // namespace qwha::pipeline

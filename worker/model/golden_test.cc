// Compares the model with transformers on the fixtures written by
// scripts/fixtures/make_model_fixtures.py (tests/fixtures/model/<family>/:
// a transformers model directory plus golden.safetensors). Skips when the
// fixtures are absent.
//
// Fixture location, first that exists: $QWHA_MODEL_FIXTURES;
// $TEST_SRCDIR/qwha/tests/fixtures/model (Bazel runfiles);
// QWHA_SOURCE_DIR/tests/fixtures/model (CMake sets QWHA_SOURCE_DIR).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "worker/io/safetensors.h"
#include "worker/model/llama.h"

namespace qwha::model {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> Candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("QWHA_MODEL_FIXTURES")) out.push_back(env);
  if (const char* srcdir = std::getenv("TEST_SRCDIR")) {
    out.push_back(std::string(srcdir) + "/qwha/tests/fixtures/model");
  }
#ifdef QWHA_SOURCE_DIR
  out.push_back(std::string(QWHA_SOURCE_DIR) + "/tests/fixtures/model");
#endif
  return out;
}

// Directories holding config.json and golden.safetensors, sorted.
std::vector<std::string> FixtureDirs() {
  for (const std::string& root : Candidates()) {
    std::error_code ec;
    if (!fs::is_directory(root, ec)) continue;
    std::vector<std::string> dirs;
    for (const auto& entry : fs::directory_iterator(root, ec)) {
      const fs::path p = entry.path();
      if (fs::exists(p / "config.json", ec) && fs::exists(p / "golden.safetensors", ec)) {
        dirs.push_back(p.string());
      }
    }
    if (!dirs.empty()) {
      std::sort(dirs.begin(), dirs.end());
      return dirs;
    }
  }
  return {};
}

struct Golden {
  torch::Tensor input_ids, logits, prompt_ids, generated, eos_token_ids;
};

Golden ReadGolden(const std::string& dir) {
  auto file = io::ReadSafetensors(dir + "/golden.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  Golden g;
  if (!file.ok()) return g;
  auto get = [&](const char* name) {
    auto it = file->tensors.find(name);
    EXPECT_NE(it, file->tensors.end()) << dir << ": golden.safetensors lacks " << name;
    return it == file->tensors.end() ? torch::Tensor() : it->second;
  };
  g.input_ids = get("input_ids");
  g.logits = get("logits");
  g.prompt_ids = get("prompt_ids");
  g.generated = get("generated");
  g.eos_token_ids = get("eos_token_ids");
  return g;
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

TEST(GoldenTest, LogitsMatchTransformers) {
  const std::vector<std::string> dirs = FixtureDirs();
  if (dirs.empty())
    GTEST_SKIP() << "no model fixtures (see scripts/fixtures/make_model_fixtures.py)";
  for (const std::string& dir : dirs) {
    SCOPED_TRACE(dir);
    auto model = LoadModel(dir, torch::kCPU, torch::kFloat32);
    ASSERT_TRUE(model.ok()) << model.status();
    Golden g = ReadGolden(dir);
    ASSERT_TRUE(g.input_ids.defined() && g.logits.defined());
    torch::NoGradGuard no_grad;
    torch::Tensor logits = (*model)->Forward(g.input_ids);
    ASSERT_EQ(logits.sizes(), g.logits.sizes());
    const double err = MaxAbsDiff(logits, g.logits);
    EXPECT_LT(err, 1e-4) << "max |logits - transformers| = " << err;
    std::cout << dir << ": max abs logits error " << err << " (|logits| max "
              << g.logits.abs().max().item<double>() << ")\n";

    // Incremental decoding reproduces the same logits.
    KvCache cache;
    torch::Tensor head = (*model)->Forward(g.input_ids.narrow(1, 0, 7), &cache);
    torch::Tensor tail = (*model)->Forward(g.input_ids.narrow(1, 7, 5), &cache);
    EXPECT_LT(MaxAbsDiff(torch::cat({head, tail}, 1), g.logits), 1e-4);

    // bfloat16 stays close.
    auto bf16 = LoadModel(dir, torch::kCPU, torch::kBFloat16);
    ASSERT_TRUE(bf16.ok()) << bf16.status();
    torch::Tensor lb = (*bf16)->Forward(g.input_ids).to(torch::kFloat64);
    torch::Tensor ref = g.logits.to(torch::kFloat64);
    EXPECT_LT(((lb - ref).norm() / ref.norm()).item<double>(), 5e-2);
  }
}

TEST(GoldenTest, GreedyGenerationMatchesTransformers) {
  const std::vector<std::string> dirs = FixtureDirs();
  if (dirs.empty())
    GTEST_SKIP() << "no model fixtures (see scripts/fixtures/make_model_fixtures.py)";
  for (const std::string& dir : dirs) {
    SCOPED_TRACE(dir);
    auto model = LoadModel(dir, torch::kCPU, torch::kFloat32);
    ASSERT_TRUE(model.ok()) << model.status();
    Golden g = ReadGolden(dir);
    ASSERT_TRUE(g.prompt_ids.defined() && g.generated.defined() && g.eos_token_ids.defined());
    GenerateOptions opt;
    opt.max_new_tokens = 8;
    const auto eos = g.eos_token_ids.contiguous();
    opt.eos_token_ids.assign(eos.data_ptr<int64_t>(), eos.data_ptr<int64_t>() + eos.numel());
    auto out = (*model)->Generate(g.prompt_ids, opt);
    ASSERT_TRUE(out.ok()) << out.status();
    if (torch::equal(*out, g.generated)) continue;

    // Accept a divergence only at a near-tie of the top two logits.
    const int64_t n = std::min(out->size(1), g.generated.size(1));
    int64_t first = n;
    for (int64_t t = 0; t < n; ++t) {
      if ((*out)[0][t].item<int64_t>() != g.generated[0][t].item<int64_t>()) {
        first = t;
        break;
      }
    }
    ASSERT_GE(first, g.prompt_ids.size(1)) << "prompt differs";
    ASSERT_LT(first, n) << "lengths differ: ours " << *out << " transformers " << g.generated;
    torch::NoGradGuard no_grad;
    torch::Tensor last = (*model)->Forward(g.generated.narrow(1, 0, first)).select(1, first - 1)[0];
    const double gap = last.max().item<double>() - last[g.generated[0][first]].item<double>();
    EXPECT_LT(gap, 1e-4) << "generation diverges at " << first << ": ours " << *out
                         << " transformers " << g.generated;
  }
}

}  // namespace
}  // namespace qwha::model

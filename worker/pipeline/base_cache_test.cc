#include "worker/pipeline/base_cache.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "worker/io/atomic_file.h"
#include "worker/io/sha256.h"
#include "worker/train/test_util.h"

namespace qwha::pipeline {
namespace {

namespace fs = std::filesystem;
using train::testing::TinyConfig;

fs::path TempDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(tmp != nullptr ? tmp : "/tmp") / ("base_cache_test_" + name);
  EXPECT_TRUE(io::RemoveTree(dir.string()).ok());
  fs::create_directories(dir);
  return dir;
}

std::vector<torch::Tensor> Batches(int count, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> batches;
  for (int i = 0; i < count; ++i) batches.push_back(torch::randint(0, 50, {2, 16}, torch::kInt64));
  return batches;
}

BaseCacheKey Key(const std::vector<torch::Tensor>& batches) {
  BaseCacheKey key;
  key.model_digest = std::string(64, 'a');
  key.quant.bits = 3;
  key.quant.group_size = 32;
  key.quant.method = quant::QuantMethod::kGptq;
  key.target_modules = AllTargetModules();
  key.calibration_digest = CalibrationDigest(batches);
  return key;
}

// A dense model, its calibration Grams and GPTQ-quantized weights (the model
// is left quantized; returned as a QuantizedBase as the recipe stores it).
QuantizedBase Prepare(model::LlamaModel& model, const BaseCacheKey& key,
                      const std::vector<torch::Tensor>& batches) {
  auto grams = CollectCalibration(model, batches, key.target_modules);
  EXPECT_TRUE(grams.ok()) << grams.status();
  auto originals = QuantizeModel(model, key.quant, *grams, key.target_modules);
  EXPECT_TRUE(originals.ok()) << originals.status();
  QuantizedBase base;
  for (const model::LinearSlot* slot : model.LinearSlots()) {
    base.weights[slot->name()] = *slot->quantized();
  }
  base.grams = *grams;
  return base;
}

TEST(BaseCacheTest, ModelDigestCoversConfigAndWeightsOnly) {
  fs::path dir = TempDir("digest");
  auto model = model::LlamaModel::RandomInit(TinyConfig(), 1, torch::kCPU, torch::kFloat32);
  ASSERT_TRUE(model::SaveModel(*model, dir.string()).ok());
  auto digest = ModelDigest(dir.string());
  ASSERT_TRUE(digest.ok()) << digest.status();

  // Independent reference: sha256 of "<name> <sha256 of the bytes>\n" lines
  // in name order.
  std::string lines;
  for (const char* name : {"config.json", "model.safetensors"}) {
    auto bytes = io::ReadFile((dir / name).string());
    ASSERT_TRUE(bytes.ok());
    lines += std::string(name) + " " + io::Sha256Hex(*bytes) + "\n";
  }
  EXPECT_EQ(*digest, io::Sha256Hex(lines));

  // Tokenizer files do not matter; a changed weight byte does.
  std::ofstream(dir / "tokenizer.json") << "{}";
  EXPECT_EQ(*ModelDigest(dir.string()), *digest);
  auto bytes = io::ReadFile((dir / "model.safetensors").string());
  std::string changed = *bytes;
  changed[changed.size() - 1] ^= 1;
  ASSERT_TRUE(io::WriteFileAtomically((dir / "model.safetensors").string(), changed).ok());
  EXPECT_NE(*ModelDigest(dir.string()), *digest);

  EXPECT_EQ(ModelDigest((dir / "missing").string()).status().code(), absl::StatusCode::kNotFound);
}

TEST(BaseCacheTest, KeysSeparateWhatTheResultDependsOn) {
  const BaseCacheKey key = Key(Batches(2, 1));
  EXPECT_EQ(QuantConfigKey(key).rfind("gptq-b3-g32-", 0), 0u) << QuantConfigKey(key);
  BaseCacheKey reordered = key;
  std::reverse(reordered.target_modules.begin(), reordered.target_modules.end());
  EXPECT_EQ(QuantConfigKey(reordered), QuantConfigKey(key));
  std::vector<BaseCacheKey> variants(6, key);
  variants[0].quant.bits = 4;
  variants[1].quant.gptq_damp = 0.010000000000000002;
  variants[2].target_modules = {"q_proj"};
  variants[3].calibration_digest = CalibrationDigest(Batches(2, 2));
  variants[4].compute_dtype = torch::kBFloat16;
  variants[5].device_type = torch::kCUDA;
  for (const BaseCacheKey& v : variants) EXPECT_NE(QuantConfigKey(v), QuantConfigKey(key));
  EXPECT_EQ(BaseCacheEntryDir("/c", key), "/c/" + key.model_digest + "/" + QuantConfigKey(key));
}

TEST(BaseCacheTest, StoreThenLoadIsExact) {
  fs::path dir = TempDir("roundtrip");
  const auto batches = Batches(3, 5);
  const BaseCacheKey key = Key(batches);
  auto model = model::LlamaModel::RandomInit(TinyConfig(), 2, torch::kCPU, torch::kFloat32);
  const QuantizedBase base = Prepare(*model, key, batches);
  const std::string entry = BaseCacheEntryDir(dir.string(), key);

  auto fresh = model::LlamaModel::RandomInit(TinyConfig(), 2, torch::kCPU, torch::kFloat32);
  EXPECT_EQ(LoadQuantizedBase(entry, key, *fresh, torch::kCPU).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(StoreQuantizedBase(entry, key, base).ok());
  EXPECT_TRUE(StoreQuantizedBase(entry, key, base).ok());  // present: no-op
  // One Gram file per distinct input: q/k/v and gate/up share theirs.
  int grams = 0;
  for (const auto& e : fs::directory_iterator(entry)) {
    grams += e.path().string().find(".gram.") != std::string::npos ? 1 : 0;
  }
  EXPECT_EQ(grams, 2 * 4);

  auto loaded = LoadQuantizedBase(entry, key, *fresh, torch::kCPU);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->weights.size(), 14u);
  for (const auto& [name, q] : base.weights) {
    const quant::QuantizedWeight& l = loaded->weights.at(name);
    EXPECT_EQ(l.bits, q.bits);
    EXPECT_EQ(l.group_size, q.group_size);
    EXPECT_TRUE(torch::equal(l.packed, q.packed)) << name;
    EXPECT_TRUE(torch::equal(l.scales, q.scales)) << name;
    EXPECT_TRUE(torch::equal(l.zeros, q.zeros)) << name;
    EXPECT_TRUE(torch::equal(loaded->grams.at(name), base.grams.at(name))) << name;
  }
  EXPECT_TRUE(loaded->grams.at("model.layers.1.self_attn.q_proj")
                  .is_same(loaded->grams.at("model.layers.1.self_attn.k_proj")));

  // Applying the loaded weights quantizes the fresh model exactly like the
  // original and hands back its dense weights.
  auto originals = SetQuantizedWeights(*fresh, loaded->weights, key.target_modules);
  ASSERT_TRUE(originals.ok()) << originals.status();
  EXPECT_EQ(originals->size(), 14u);
  torch::Tensor ids = Batches(1, 9)[0];
  EXPECT_TRUE(torch::equal(fresh->Forward(ids), model->Forward(ids)));

  // A different key (another calibration set) does not read this entry.
  BaseCacheKey other = key;
  other.calibration_digest = CalibrationDigest(Batches(3, 6));
  EXPECT_EQ(LoadQuantizedBase(entry, other, *fresh, torch::kCPU).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(BaseCacheTest, CorruptEntriesAreReportedNotTrusted) {
  fs::path dir = TempDir("corrupt");
  const auto batches = Batches(2, 7);
  const BaseCacheKey key = Key(batches);
  auto model = model::LlamaModel::RandomInit(TinyConfig(), 4, torch::kCPU, torch::kFloat32);
  const QuantizedBase base = Prepare(*model, key, batches);
  const std::string entry = BaseCacheEntryDir(dir.string(), key);
  auto fresh = model::LlamaModel::RandomInit(TinyConfig(), 4, torch::kCPU, torch::kFloat32);
  const fs::path weight = fs::path(entry) / "model.layers.0.mlp.up_proj.quant.safetensors";
  const fs::path gram = fs::path(entry) / "model.layers.0.mlp.gate_proj.gram.safetensors";

  auto corrupt_with = [&](const std::function<void()>& damage, const std::string& names) {
    ASSERT_TRUE(io::RemoveTree(entry).ok());
    ASSERT_TRUE(StoreQuantizedBase(entry, key, base).ok());
    damage();
    auto r = LoadQuantizedBase(entry, key, *fresh, torch::kCPU);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
    EXPECT_NE(r.status().message().find(names), std::string::npos) << r.status();
  };
  // Truncated weight file (size differs from the manifest).
  corrupt_with([&] { fs::resize_file(weight, fs::file_size(weight) / 2); }, "up_proj");
  // Same size, garbage header: a parse error.
  corrupt_with(
      [&] {
        std::string bytes = *io::ReadFile(gram.string());
        for (size_t i = 0; i < 16; ++i) bytes[i] = 'x';
        ASSERT_TRUE(io::WriteFileAtomically(gram.string(), bytes).ok());
      },
      "gate_proj");
  corrupt_with([&] { fs::remove(weight); }, "up_proj");
  corrupt_with([&] { std::ofstream(fs::path(entry) / "manifest.json") << "{not json"; },
               "manifest.json");
  corrupt_with([&] { fs::remove(fs::path(entry) / "manifest.json"); }, "manifest.json");

  // After removal the entry can be rebuilt and read.
  ASSERT_TRUE(io::RemoveTree(entry).ok());
  ASSERT_TRUE(StoreQuantizedBase(entry, key, base).ok());
  EXPECT_TRUE(LoadQuantizedBase(entry, key, *fresh, torch::kCPU).ok());
}

}  // namespace
}  // namespace qwha::pipeline

#include "worker/serve/serving_adapter.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/io/atomic_file.h"
#include "worker/serve/adapter_loader.h"
#include "worker/serve/serving_model.h"
#include "worker/serve/test_util.h"

namespace qwha::serve {
namespace {

using adapters::AdapterType;

class ServingAdapterTest : public ::testing::TestWithParam<AdapterType> {};

TEST_P(ServingAdapterTest, DeltaEqualsTheAdaptersOwnForwardAndMemoryIsAsEstimated) {
  auto model = testing::QuantizedModel("llama2");
  auto serving = ServingModel::FromModel(*model, testing::TestQuant(), {}, 64);
  ASSERT_TRUE(serving.ok()) << serving.status();
  testing::AdapterSet set = testing::RandomAdapters(*model, GetParam(), 3);
  const std::string dir = testing::TempDir("delta");
  ASSERT_TRUE(testing::WriteAdapterDir(set, GetParam(), dir).ok());

  AdapterLoader loader(serving->get(), dir, "digest-1");
  auto estimate = loader.EstimateMemory();
  ASSERT_TRUE(estimate.ok()) << estimate.status();
  ASSERT_TRUE(loader.Load().ok());
  const ServingAdapter& adapter = *loader.adapter();
  EXPECT_EQ(adapter.digest(), "digest-1");
  // Exact for LoRA; an upper bound for packed spectra (padding and fillers
  // depend on the indices, which the estimate does not read).
  if (GetParam() == AdapterType::kLora) {
    EXPECT_EQ(adapter.memory_bytes(), *estimate);
  } else {
    EXPECT_LE(adapter.memory_bytes(), *estimate);
    EXPECT_GE(adapter.memory_bytes(), *estimate / 2);
  }
  int64_t owned = 0;
  adapter.ForEachTensor([&](const torch::Tensor& t) { owned += TensorBytes(t); });
  EXPECT_EQ(adapter.memory_bytes(), owned);
  EXPECT_GT(adapter.memory_bytes(), 0);

  torch::manual_seed(5);
  for (const auto& [name, reference] : set) {
    const int64_t index = *(*serving)->SlotIndex(name);
    torch::Tensor x = torch::randn({5, reference->in_features()});
    torch::Tensor expected = reference->Forward(x).detach();
    torch::Tensor got = adapter.ApplyDelta(index, x, torch::Tensor());
    ASSERT_EQ(got.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(torch::allclose(got, expected, 1e-4, 1e-4))
        << name << " max diff " << (got - expected).abs().max().item<double>();
  }
  loader.Unload();
  EXPECT_EQ(loader.adapter(), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Types, ServingAdapterTest,
                         ::testing::Values(AdapterType::kQwha, AdapterType::kLora),
                         [](const auto& info) {
                           return std::string(adapters::AdapterTypeName(info.param)) == "qwha"
                                      ? "Qwha"
                                      : "Lora";
                         });

// Rewrites one field of adapter_config.json.
void EditConfig(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  auto text = io::ReadFile(dir + "/adapter_config.json");
  ASSERT_TRUE(text.ok());
  nlohmann::json j = nlohmann::json::parse(*text);
  edit(j);
  ASSERT_TRUE(io::WriteFileAtomically(dir + "/adapter_config.json", j.dump()).ok());
}

TEST(ServingAdapterErrors, AnotherBaseOrMalformedFilesAreRefusedNamingTheProblem) {
  auto model = testing::QuantizedModel("llama2");
  auto serving = ServingModel::FromModel(*model, testing::TestQuant(), {}, 64);
  ASSERT_TRUE(serving.ok());
  testing::AdapterSet set = testing::RandomAdapters(*model, AdapterType::kQwha, 4);

  auto load = [&](const std::string& dir) {
    AdapterLoader loader(serving->get(), dir, "d");
    absl::Status st = loader.Load();
    EXPECT_EQ(loader.adapter() == nullptr, !st.ok());
    return st;
  };
  {
    const std::string dir = testing::TempDir("bits");
    ASSERT_TRUE(testing::WriteAdapterDir(set, AdapterType::kQwha, dir).ok());
    EditConfig(dir, [](nlohmann::json& j) { j["quantization"]["bits"] = 3; });
    absl::Status st = load(dir);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
    EXPECT_NE(st.message().find("3-bit"), std::string::npos) << st;
  }
  {
    const std::string dir = testing::TempDir("modules");
    ASSERT_TRUE(testing::WriteAdapterDir(set, AdapterType::kQwha, dir).ok());
    EditConfig(dir, [](nlohmann::json& j) { j["target_modules"] = {"q_proj", "v_proj"}; });
    absl::Status st = load(dir);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  }
  {
    const std::string dir = testing::TempDir("gptq");
    ASSERT_TRUE(testing::WriteAdapterDir(set, AdapterType::kQwha, dir).ok());
    EditConfig(dir, [](nlohmann::json& j) { j["quantization"]["method"] = "gptq"; });
    EXPECT_EQ(load(dir).code(), absl::StatusCode::kFailedPrecondition);
  }
  {
    const std::string dir = testing::TempDir("truncated");
    ASSERT_TRUE(testing::WriteAdapterDir(set, AdapterType::kQwha, dir).ok());
    auto bytes = io::ReadFile(dir + "/adapter.safetensors");
    ASSERT_TRUE(
        io::WriteFileAtomically(dir + "/adapter.safetensors", bytes->substr(0, bytes->size() / 2))
            .ok());
    absl::Status st = load(dir);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find("adapter.safetensors"), std::string::npos) << st;
  }
  {
    // A slot the model does not have.
    testing::AdapterSet other;
    other["model.layers.9.mlp.up_proj"] = std::move(set.begin()->second);
    const std::string dir = testing::TempDir("slot");
    ASSERT_TRUE(testing::WriteAdapterDir(other, AdapterType::kQwha, dir).ok());
    absl::Status st = load(dir);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find("model.layers.9.mlp.up_proj"), std::string::npos) << st;
  }
  {
    const std::string dir = testing::TempDir("missing");
    absl::Status st = load(dir);
    EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  }
}

}  // namespace
}  // namespace qwha::serve

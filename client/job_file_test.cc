#include "client/job_file.h"

#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace qwha::client {
namespace {

using ::testing::HasSubstr;

constexpr char kYaml[] = R"(# a full job
base_model_id: m-llama
name: "2-bit qwha"
quantization: {bits: 2, group_size: 64, method: gptq}
adapter:
  type: qwha
  rank: 32
  alpha: 1.5
  target_modules: [q_proj, "v_proj"]
train_dataset_id: d-train
eval_dataset_id: d-eval
training:
  max_steps: 200
  learning_rate: 1.0e-2
  batch_size: 4
  seq_len: 512
  seed: 18446744073709551615
  schedule: linear
  max_grad_norm: -1
resources: {require_gpu: true, min_memory_bytes: 8000000000}
priority: -5
labels: {team: nlp, version: 3}
)";

constexpr char kJson[] = R"({
  "base_model_id": "m-llama",
  "name": "2-bit qwha",
  "quantization": {"bits": 2, "group_size": 64, "method": "gptq"},
  "adapter": {"type": "qwha", "rank": 32, "alpha": 1.5, "target_modules": ["q_proj", "v_proj"]},
  "train_dataset_id": "d-train",
  "eval_dataset_id": "d-eval",
  "training": {"max_steps": 200, "learning_rate": 0.01, "batch_size": 4, "seq_len": 512,
               "seed": 18446744073709551615, "schedule": "linear", "max_grad_norm": -1},
  "resources": {"require_gpu": true, "min_memory_bytes": 8000000000},
  "priority": -5,
  "labels": {"team": "nlp", "version": "3"}
})";

TEST(JobFileTest, YamlAndJsonGiveTheSameSpec) {
  auto from_yaml = ParseJobFile(kYaml, DocumentFormat::kYaml, "job.yaml");
  ASSERT_TRUE(from_yaml.ok()) << from_yaml.status();
  auto from_json = ParseJobFile(kJson, DocumentFormat::kJson, "job.json");
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*from_yaml, *from_json))
      << from_yaml->DebugString() << "\nvs\n"
      << from_json->DebugString();

  const qwha::v1::JobSpec& spec = *from_yaml;
  EXPECT_EQ(spec.base_model_id(), "m-llama");
  EXPECT_EQ(spec.quantization().bits(), 2);
  EXPECT_EQ(spec.quantization().group_size(), 64);
  EXPECT_EQ(spec.quantization().method(), "gptq");
  EXPECT_EQ(spec.adapter().rank(), 32);
  EXPECT_DOUBLE_EQ(spec.adapter().alpha(), 1.5);
  ASSERT_EQ(spec.adapter().target_modules_size(), 2);
  EXPECT_EQ(spec.adapter().target_modules(1), "v_proj");
  EXPECT_EQ(spec.training().max_steps(), 200);
  EXPECT_DOUBLE_EQ(spec.training().learning_rate(), 0.01);
  EXPECT_EQ(spec.training().seed(), 18446744073709551615ull);
  EXPECT_DOUBLE_EQ(spec.training().max_grad_norm(), -1);
  EXPECT_TRUE(spec.resources().require_gpu());
  EXPECT_EQ(spec.resources().min_memory_bytes(), 8000000000);
  EXPECT_EQ(spec.priority(), -5);
  EXPECT_EQ(spec.labels().at("version"), "3");
  EXPECT_EQ(spec.name(), "2-bit qwha");
}

// protobuf's JSON form of a spec (64-bit integers as strings, every field
// printed) parses back to the same spec.
TEST(JobFileTest, ProtobufJsonOfASpecParsesBack) {
  auto spec = ParseJobFile(kYaml, DocumentFormat::kYaml, "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(*spec, &json, options).ok());
  ASSERT_THAT(json, HasSubstr("\"max_steps\":\"200\""));
  auto back = ParseJobFile(json, DocumentFormat::kJson, "spec.json");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << json;
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*spec, *back))
      << spec->DebugString() << "\nvs\n"
      << back->DebugString();
}

TEST(JobFileTest, NullAndMissingKeysKeepDefaults) {
  auto spec = ParseJobFile("base_model_id: m\ntraining:\nadapter: {rank: ~}\n",
                           DocumentFormat::kYaml, "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->adapter().rank(), 0);
  EXPECT_FALSE(spec->has_training());
}

struct BadCase {
  const char* content;
  DocumentFormat format;
  const char* expected;  // substring of the error
};

class JobFileErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(JobFileErrorTest, NamesTheKeyPath) {
  const BadCase& c = GetParam();
  auto spec = ParseJobFile(c.content, c.format, "job.file");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr(c.expected));
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("job.file"));
}

constexpr DocumentFormat kY = DocumentFormat::kYaml;
constexpr DocumentFormat kJ = DocumentFormat::kJson;

INSTANTIATE_TEST_SUITE_P(
    Errors, JobFileErrorTest,
    ::testing::Values(
        BadCase{"training:\n  max_steps: ten\n", kY,
                "job.file:2: training.max_steps: expected an integer, got ten"},
        BadCase{R"({"training": {"max_steps": "ten"}})", kJ,
                "training.max_steps: expected an integer, got the string \"ten\""},
        BadCase{R"({"training": {"max_steps": "1e3"}})", kJ,
                "training.max_steps: expected an integer, got the string \"1e3\""},
        BadCase{"training: {max_steps: 1.5}", kY, "training.max_steps: expected an integer"},
        BadCase{"quantization: {bitz: 2}", kY,
                "quantization.bitz: unknown key (did you mean bits?)"},
        BadCase{"quantization: {groupSize: 2}", kY,
                "quantization.groupSize: unknown key (did you mean group_size?)"},
        BadCase{"colour: red", kY, "colour: unknown key"},
        BadCase{R"({"adapter": {"target_modules": ["q_proj", 3]}})", kJ,
                "adapter.target_modules[1]: expected a string, got 3"},
        BadCase{"adapter: {target_modules: q_proj}", kY,
                "adapter.target_modules: expected a list, got q_proj"},
        BadCase{"quantization: {bits: 99999999999}", kY,
                "quantization.bits: expected an integer in [-2147483648, 2147483647]"},
        BadCase{"training: {seed: -1}", kY, "training.seed: expected a non-negative integer"},
        BadCase{"training: {learning_rate: fast}", kY,
                "training.learning_rate: expected a number, got fast"},
        BadCase{"resources: {require_gpu: maybe}", kY,
                "resources.require_gpu: expected true or false, got maybe"},
        BadCase{R"({"resources": {"require_gpu": 1}})", kJ,
                "resources.require_gpu: expected true or false"},
        BadCase{R"({"name": 12})", kJ, "name: expected a string, got 12"},
        BadCase{"training: 5", kY, "training: expected a mapping of TrainingConfig fields"},
        BadCase{"labels: [a, b]", kY, "labels: expected a mapping"},
        BadCase{"labels: {team: [a]}", kY, "labels.team: expected a string, got a list"},
        BadCase{"labels: {team: }", kY, "labels.team: expected a value"},
        BadCase{"priority: 1\npriority: 2\n", kY, "priority: duplicate key"},
        BadCase{"- a\n- b\n", kY, "expected a mapping of JobSpec fields"},
        BadCase{"training: {max_steps: [1\n", kY, "invalid YAML"},
        BadCase{R"({"training": )", kJ, "invalid JSON"}, BadCase{"", kY, "the job file is empty"}));

TEST(JobFileTest, TheExampleParses) {
  auto spec = ReadJobFile("client/examples/job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->quantization().bits(), 2);
  EXPECT_EQ(spec->adapter().target_modules_size(), 7);
  EXPECT_EQ(spec->labels().at("experiment"), "bits-sweep");
}

TEST(JobFileTest, ReadJobFileNamesAMissingPath) {
  auto spec = ReadJobFile("/nonexistent/job.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("/nonexistent/job.yaml"));
}

}  // namespace
}  // namespace qwha::client

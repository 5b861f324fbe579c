#include "worker/runtime/job_options.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "worker/runtime/device_info.h"

namespace qwha::runtime {
namespace {

JobPaths Paths() {
  JobPaths p;
  p.model_dir = "/w/models/abc";
  p.train_data = "/w/datasets/1/train.jsonl";
  p.output_dir = "/w/jobs/j1/out";
  p.cache_dir = "/w/cache";
  return p;
}

qwha::v1::JobSpec MinimalSpec() {
  qwha::v1::JobSpec spec;
  spec.set_base_model_id("m1");
  spec.set_train_dataset_id("d1");
  spec.mutable_quantization()->set_bits(2);
  return spec;
}

TEST(JobOptionsTest, ZeroFieldsGiveTheDocumentedDefaults) {
  auto o = JobSpecToRecipeOptions(MinimalSpec(), Paths(), torch::kCPU);
  ASSERT_TRUE(o.ok()) << o.status();
  const pipeline::RecipeOptions d;  // the library defaults
  EXPECT_EQ(o->model_dir, "/w/models/abc");
  EXPECT_EQ(o->train_data, "/w/datasets/1/train.jsonl");
  EXPECT_EQ(o->eval_data, "");
  EXPECT_EQ(o->output_dir, "/w/jobs/j1/out");
  EXPECT_EQ(o->cache_dir, "/w/cache");
  EXPECT_FALSE(o->resume);
  EXPECT_EQ(o->quant.bits, 2);
  EXPECT_EQ(o->quant.group_size, d.quant.group_size);
  EXPECT_EQ(o->quant.method, d.quant.method);
  EXPECT_EQ(o->adapter.type, adapters::AdapterType::kQwha);
  EXPECT_EQ(o->adapter.rank, d.adapter.rank);
  EXPECT_EQ(o->adapter.num_params, 0);
  EXPECT_EQ(o->adapter.alloc_alpha, d.adapter.alloc_alpha);
  EXPECT_EQ(o->adapter.scaling, d.adapter.scaling);
  EXPECT_TRUE(o->target_modules.empty());
  EXPECT_EQ(o->train.max_steps, 100);        // job.proto: 0 means 100
  EXPECT_EQ(o->train.checkpoint_every, 50);  // job.proto: 0 means 50
  EXPECT_DOUBLE_EQ(o->train.lr, 1e-2);       // spectrum adapter
  EXPECT_EQ(o->batch_size, d.batch_size);
  EXPECT_EQ(o->seq_len, d.seq_len);
  EXPECT_EQ(o->train.grad_accum, d.train.grad_accum);
  EXPECT_EQ(o->train.adamw.weight_decay, 0);
  EXPECT_EQ(o->train.schedule.warmup_steps, 0);
  EXPECT_EQ(o->train.schedule.type, train::ScheduleType::kCosine);
  EXPECT_EQ(o->train.clip_norm, d.train.clip_norm);
  EXPECT_EQ(o->train.eval_every, 0);
  EXPECT_EQ(o->calibration_batches, d.calibration_batches);
  EXPECT_EQ(o->seed, 0u);
  EXPECT_EQ(o->dtype, torch::kFloat32);  // CPU
  EXPECT_EQ(o->eval_fraction, d.eval_fraction);
  EXPECT_EQ(o->exact_match_samples, 0);
  EXPECT_EQ(o->device, torch::Device(torch::kCPU));
}

TEST(JobOptionsTest, DefaultsThatDependOnDeviceAndAdapter) {
  auto cuda = JobSpecToRecipeOptions(MinimalSpec(), Paths(), torch::Device(torch::kCUDA, 1));
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  EXPECT_EQ(cuda->dtype, torch::kBFloat16);
  EXPECT_EQ(cuda->device, torch::Device(torch::kCUDA, 1));
  for (const char* type : {"lora", "loftq", "cloq"}) {
    qwha::v1::JobSpec spec = MinimalSpec();
    spec.mutable_adapter()->set_type(type);
    auto o = JobSpecToRecipeOptions(spec, Paths(), torch::kCPU);
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_DOUBLE_EQ(o->train.lr, 2e-4) << type;
  }
  qwha::v1::JobSpec spec = MinimalSpec();
  spec.mutable_adapter()->set_type("random-wht");
  EXPECT_DOUBLE_EQ(JobSpecToRecipeOptions(spec, Paths(), torch::kCPU)->train.lr, 1e-2);
}

TEST(JobOptionsTest, MapsEveryField) {
  qwha::v1::JobSpec spec = MinimalSpec();
  auto* q = spec.mutable_quantization();
  q->set_bits(3);
  q->set_group_size(128);
  q->set_method("gptq");
  auto* a = spec.mutable_adapter();
  a->set_type("qwha");
  a->set_rank(16);
  a->set_param_count(5000);
  a->set_alpha(0.5);
  a->set_scaling(70);
  a->add_target_modules("q_proj");
  a->add_target_modules("v_proj");
  auto* t = spec.mutable_training();
  t->set_max_steps(300);
  t->set_learning_rate(3e-3);
  t->set_batch_size(4);
  t->set_seq_len(128);
  t->set_grad_accum(2);
  t->set_activation_checkpointing(true);
  t->set_weight_decay(0.01);
  t->set_warmup_steps(20);
  t->set_schedule("linear");
  t->set_max_grad_norm(-1);
  t->set_eval_every(25);
  t->set_checkpoint_every(10);
  t->set_calibration_batches(3);
  t->set_seed(42);
  t->set_dtype("bfloat16");
  t->set_eval_fraction(0.1);
  t->set_exact_match_samples(16);
  JobPaths paths = Paths();
  paths.resume = true;
  auto o = JobSpecToRecipeOptions(spec, paths, torch::kCPU);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->resume);
  EXPECT_EQ(o->quant.bits, 3);
  EXPECT_EQ(o->quant.group_size, 128);
  EXPECT_EQ(o->quant.method, quant::QuantMethod::kGptq);
  EXPECT_EQ(o->adapter.type, adapters::AdapterType::kQwha);
  EXPECT_EQ(o->adapter.rank, 16);
  EXPECT_EQ(o->adapter.num_params, 5000);
  EXPECT_DOUBLE_EQ(o->adapter.alloc_alpha, 0.5);
  EXPECT_DOUBLE_EQ(o->adapter.scaling, 70);
  EXPECT_EQ(o->target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(o->train.max_steps, 300);
  EXPECT_DOUBLE_EQ(o->train.lr, 3e-3);
  EXPECT_EQ(o->batch_size, 4);
  EXPECT_EQ(o->seq_len, 128);
  EXPECT_EQ(o->train.grad_accum, 2);
  EXPECT_TRUE(o->train.activation_checkpointing);
  EXPECT_DOUBLE_EQ(o->train.adamw.weight_decay, 0.01);
  EXPECT_EQ(o->train.schedule.warmup_steps, 20);
  EXPECT_EQ(o->train.schedule.type, train::ScheduleType::kLinear);
  EXPECT_LE(o->train.clip_norm, 0);  // clipping off
  EXPECT_EQ(o->train.eval_every, 25);
  EXPECT_EQ(o->train.checkpoint_every, 10);
  EXPECT_EQ(o->calibration_batches, 3);
  EXPECT_EQ(o->seed, 42u);
  EXPECT_EQ(o->train.seed, 42u);
  EXPECT_EQ(o->adapter.seed, 42u);
  EXPECT_EQ(o->dtype, torch::kBFloat16);
  EXPECT_DOUBLE_EQ(o->eval_fraction, 0.1);
  EXPECT_EQ(o->exact_match_samples, 16);
  t->set_dtype("float32");
  EXPECT_EQ(JobSpecToRecipeOptions(spec, paths, torch::kCUDA)->dtype, torch::kFloat32);
}

TEST(JobOptionsTest, EvalDatasetReplacesTheHeldOutShare) {
  qwha::v1::JobSpec spec = MinimalSpec();
  spec.mutable_training()->set_eval_fraction(0.2);
  JobPaths paths = Paths();
  paths.eval_data = "/w/datasets/2/eval.jsonl";
  auto o = JobSpecToRecipeOptions(spec, paths, torch::kCPU);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->eval_data, "/w/datasets/2/eval.jsonl");
  EXPECT_EQ(o->eval_fraction, 0);
}

// Each case breaks one field; the error must be InvalidArgument and start
// with the proto field's name.
TEST(JobOptionsTest, InvalidValuesNameTheProtoField) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  using Edit = std::function<void(qwha::v1::JobSpec&)>;
  const std::vector<std::pair<std::string, Edit>> cases = {
      {"quantization.bits", [](auto& s) { s.mutable_quantization()->set_bits(0); }},
      {"quantization.bits", [](auto& s) { s.mutable_quantization()->set_bits(8); }},
      {"quantization.group_size", [](auto& s) { s.mutable_quantization()->set_group_size(48); }},
      {"quantization.group_size", [](auto& s) { s.mutable_quantization()->set_group_size(-64); }},
      {"quantization.method", [](auto& s) { s.mutable_quantization()->set_method("awq"); }},
      {"adapter.type", [](auto& s) { s.mutable_adapter()->set_type("dora"); }},
      {"adapter.rank", [](auto& s) { s.mutable_adapter()->set_rank(-1); }},
      {"adapter.param_count", [](auto& s) { s.mutable_adapter()->set_param_count(-5); }},
      {"adapter.param_count",
       [](auto& s) {
         s.mutable_adapter()->set_type("lora");
         s.mutable_adapter()->set_param_count(100);
       }},
      {"adapter.alpha", [](auto& s) { s.mutable_adapter()->set_alpha(-1); }},
      {"adapter.alpha", [nan](auto& s) { s.mutable_adapter()->set_alpha(nan); }},
      {"adapter.scaling", [](auto& s) { s.mutable_adapter()->set_scaling(-2); }},
      {"adapter.scaling", [inf](auto& s) { s.mutable_adapter()->set_scaling(inf); }},
      {"adapter.target_modules",
       [](auto& s) { s.mutable_adapter()->add_target_modules("lm_head"); }},
      {"training.max_steps", [](auto& s) { s.mutable_training()->set_max_steps(-1); }},
      {"training.learning_rate", [](auto& s) { s.mutable_training()->set_learning_rate(-1e-3); }},
      {"training.learning_rate", [nan](auto& s) { s.mutable_training()->set_learning_rate(nan); }},
      {"training.batch_size", [](auto& s) { s.mutable_training()->set_batch_size(-8); }},
      {"training.seq_len", [](auto& s) { s.mutable_training()->set_seq_len(1); }},
      {"training.seq_len", [](auto& s) { s.mutable_training()->set_seq_len(-3); }},
      {"training.grad_accum", [](auto& s) { s.mutable_training()->set_grad_accum(-1); }},
      {"training.weight_decay", [](auto& s) { s.mutable_training()->set_weight_decay(-0.1); }},
      {"training.warmup_steps", [](auto& s) { s.mutable_training()->set_warmup_steps(-1); }},
      {"training.warmup_steps",
       [](auto& s) {
         s.mutable_training()->set_max_steps(10);
         s.mutable_training()->set_warmup_steps(11);
       }},
      {"training.schedule", [](auto& s) { s.mutable_training()->set_schedule("step"); }},
      {"training.max_grad_norm", [nan](auto& s) { s.mutable_training()->set_max_grad_norm(nan); }},
      {"training.eval_every", [](auto& s) { s.mutable_training()->set_eval_every(-1); }},
      {"training.checkpoint_every",
       [](auto& s) { s.mutable_training()->set_checkpoint_every(-1); }},
      {"training.calibration_batches",
       [](auto& s) { s.mutable_training()->set_calibration_batches(-1); }},
      {"training.dtype", [](auto& s) { s.mutable_training()->set_dtype("float16"); }},
      {"training.eval_fraction", [](auto& s) { s.mutable_training()->set_eval_fraction(1.0); }},
      {"training.eval_fraction", [](auto& s) { s.mutable_training()->set_eval_fraction(-0.1); }},
      {"training.exact_match_samples",
       [](auto& s) { s.mutable_training()->set_exact_match_samples(-2); }},
  };
  for (const auto& [field, edit] : cases) {
    qwha::v1::JobSpec spec = MinimalSpec();
    edit(spec);
    auto o = JobSpecToRecipeOptions(spec, Paths(), torch::kCPU);
    ASSERT_FALSE(o.ok()) << field << " accepted: " << spec.ShortDebugString();
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument) << o.status();
    EXPECT_EQ(std::string(o.status().message()).rfind(field + ":", 0), 0u)
        << "expected the message to start with " << field << ": " << o.status();
  }
}

TEST(JobOptionsTest, MissingPathsNameThePath) {
  for (const char* field : {"model_dir", "train_data", "output_dir"}) {
    JobPaths paths = Paths();
    if (std::string(field) == "model_dir") paths.model_dir.clear();
    if (std::string(field) == "train_data") paths.train_data.clear();
    if (std::string(field) == "output_dir") paths.output_dir.clear();
    auto o = JobSpecToRecipeOptions(MinimalSpec(), paths, torch::kCPU);
    ASSERT_FALSE(o.ok());
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(o.status().message()).rfind(field, 0), 0u) << o.status();
  }
}

TEST(DeviceTest, ParsesTheDeviceFlag) {
  EXPECT_EQ(*ParseDevice("cpu"), torch::Device(torch::kCPU));
  EXPECT_EQ(*ParseDevice("cuda"), torch::Device(torch::kCUDA, 0));
  EXPECT_EQ(*ParseDevice("cuda:3"), torch::Device(torch::kCUDA, 3));
  for (const char* bad : {"", "gpu", "cuda:", "cuda:-1", "cuda:x", "CPU"}) {
    EXPECT_EQ(ParseDevice(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(CheckDeviceExists(torch::Device(torch::kCUDA, 0)).code(),
              absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_TRUE(CheckDeviceExists(torch::kCPU).ok());
  DeviceProbe probe(torch::kCPU);
  DeviceSample s = probe.Sample();
  EXPECT_EQ(s.name, "cpu");
  EXPECT_EQ(s.gpu_count, 0);
  EXPECT_GT(s.total_bytes, 0);
  EXPECT_GT(s.free_bytes, 0);
  EXPECT_LE(s.free_bytes, s.total_bytes);
}

}  // namespace
}  // namespace qwha::runtime

// qwha-train: the whole QWHA recipe from the command line, without any
// service (worker/pipeline/recipe.h):
//
//   qwha-train --model DIR --data TRAIN.jsonl --output DIR [options]
//
// Options (defaults in brackets):
//   --eval-data FILE | --eval-fraction F [0.05]
//   --bits 2|3|4 [4]  --group-size 32|64|128 [64]  --quant rtn|gptq [rtn]
//   --adapter qwha|qwha-datafree|lora|loftq|cloq|random-wht [qwha]
//   --rank R [64] (budget R·(in+out) per layer)  --alpha A [1]  --scaling S [1]
//   --target-modules q_proj,k_proj,... [all seven]
//   --steps N [100]  --lr LR [1e-2 for qwha/random-wht, 2e-4 for LoRA types]  --warmup N [0]
//   --batch-size B [8]
//   --seq-len L [256]  --grad-accum N [1]  --eval-every N [0]
//   --checkpoint-every N [0]  --calibration-batches N [8]  --seed N [0]
//   --device cpu|cuda [cuda if available]  --dtype float32|bfloat16 [bfloat16 on cuda]
//   --adapter-dtype float32|bfloat16 [float32; bfloat16 values keep a float32
//     master copy in the optimizer, but steps below a value's bfloat16 spacing do
//     not reach the forward pass, so small learning rates train more slowly]
//   --loss-chunk N [1024] (positions whose logits the loss forms at a time; 0: all)
//   --attention fused|eager [fused where LibTorch >= 2.0]
//   --profile-phases (per-phase step times, with a device sync after each phase)
//   --activation-checkpointing (recompute each layer's activations in backward:
//     less memory, one more forward pass of the layers, same result)
//   --resume (continue from OUTPUT/checkpoints)
//   --cache-dir DIR (reuse/store the quantized base and calibration Grams) [none]
//   --exact-match N (greedy exact match on N eval prompts after training) [0: off]
//   --export-merged (also write OUTPUT/merged: deq(Q) + ΔW as a transformers model)
// Exit status: 0 success, 2 bad arguments or input, 1 any other failure.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "worker/bench/bench_util.h"
#include "worker/model/llama.h"
#include "worker/pipeline/recipe.h"
#include "worker/train/progress.h"

namespace qwha::pipeline {
namespace {

[[noreturn]] void Fail(int code, const std::string& message) {
  std::cerr << "qwha-train: " << message << "\n";
  std::exit(code);
}

double ParseDouble(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    double d = std::stod(v, &used);
    if (used == v.size()) return d;
  } catch (...) {
  }
  Fail(2, flag + ": expected a number, got '" + v + "'");
}

int64_t ParseInt(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    long long i = std::stoll(v, &used);
    if (used == v.size()) return i;
  } catch (...) {
  }
  Fail(2, flag + ": expected an integer, got '" + v + "'");
}

RecipeOptions ParseArgs(int argc, char** argv) {
  RecipeOptions o;
  const bool cuda = torch::cuda::is_available();
  o.device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  o.dtype = cuda ? torch::kBFloat16 : torch::kFloat32;
  o.train.max_steps = 100;
  bool eval_fraction_given = false;
  bool lr_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << "usage: qwha-train --model DIR --data TRAIN.jsonl --output DIR [options]\n"
                   "see the header of worker/pipeline/qwha_train_main.cc or README.md\n";
      std::exit(0);
    }
    if (a == "--resume") {
      o.resume = true;
      continue;
    }
    if (a == "--export-merged") {
      o.export_merged = true;
      continue;
    }
    if (a == "--activation-checkpointing") {
      o.train.activation_checkpointing = true;
      continue;
    }
    if (a == "--profile-phases") {
      o.train.profile_phases = true;
      continue;
    }
    if (i + 1 >= argc) Fail(2, a + ": missing value");
    const std::string v = argv[++i];
    if (a == "--model") {
      o.model_dir = v;
    } else if (a == "--tokenizer") {
      o.tokenizer_path = v;
    } else if (a == "--data") {
      o.train_data = v;
    } else if (a == "--eval-data") {
      o.eval_data = v;
    } else if (a == "--eval-fraction") {
      o.eval_fraction = ParseDouble(a, v);
      eval_fraction_given = true;
    } else if (a == "--output") {
      o.output_dir = v;
    } else if (a == "--bits") {
      o.quant.bits = static_cast<int>(ParseInt(a, v));
    } else if (a == "--group-size") {
      o.quant.group_size = static_cast<int>(ParseInt(a, v));
    } else if (a == "--quant") {
      auto m = quant::ParseQuantMethod(v);
      if (!m.ok()) Fail(2, "--quant: " + std::string(m.status().message()));
      o.quant.method = *m;
    } else if (a == "--adapter") {
      auto t = adapters::ParseAdapterType(v);
      if (!t.ok()) Fail(2, "--adapter: " + std::string(t.status().message()));
      o.adapter.type = *t;
    } else if (a == "--rank") {
      o.adapter.rank = ParseInt(a, v);
    } else if (a == "--alpha") {
      o.adapter.alloc_alpha = ParseDouble(a, v);
    } else if (a == "--scaling") {
      o.adapter.scaling = ParseDouble(a, v);
    } else if (a == "--target-modules") {
      o.target_modules = absl::StrSplit(v, ',', absl::SkipEmpty());
    } else if (a == "--steps") {
      o.train.max_steps = ParseInt(a, v);
    } else if (a == "--lr") {
      o.train.lr = ParseDouble(a, v);
      lr_given = true;
    } else if (a == "--warmup") {
      o.train.schedule.warmup_steps = ParseInt(a, v);
    } else if (a == "--batch-size") {
      o.batch_size = ParseInt(a, v);
    } else if (a == "--seq-len") {
      o.seq_len = ParseInt(a, v);
    } else if (a == "--grad-accum") {
      o.train.grad_accum = ParseInt(a, v);
    } else if (a == "--eval-every") {
      o.train.eval_every = ParseInt(a, v);
    } else if (a == "--checkpoint-every") {
      o.train.checkpoint_every = ParseInt(a, v);
    } else if (a == "--calibration-batches") {
      o.calibration_batches = ParseInt(a, v);
    } else if (a == "--cache-dir") {
      o.cache_dir = v;
    } else if (a == "--exact-match") {
      o.exact_match_samples = ParseInt(a, v);
    } else if (a == "--seed") {
      o.seed = static_cast<uint64_t>(ParseInt(a, v));
      o.train.seed = o.seed;
      o.adapter.seed = o.seed;
    } else if (a == "--device") {
      if (v == "cpu") {
        o.device = torch::kCPU;
      } else if (v == "cuda") {
        if (!cuda) Fail(2, "--device cuda: no CUDA device is available");
        o.device = torch::Device(torch::kCUDA);
      } else {
        Fail(2, "--device: expected cpu or cuda, got '" + v + "'");
      }
    } else if (a == "--dtype") {
      if (v == "float32") {
        o.dtype = torch::kFloat32;
      } else if (v == "bfloat16") {
        o.dtype = torch::kBFloat16;
      } else {
        Fail(2, "--dtype: expected float32 or bfloat16, got '" + v + "'");
      }
    } else if (a == "--adapter-dtype") {
      if (v == "float32") {
        o.train.adapter_dtype = torch::kFloat32;
      } else if (v == "bfloat16") {
        o.train.adapter_dtype = torch::kBFloat16;
      } else {
        Fail(2, "--adapter-dtype: expected float32 or bfloat16, got '" + v + "'");
      }
    } else if (a == "--loss-chunk") {
      o.train.loss_chunk_tokens = ParseInt(a, v);
    } else if (a == "--attention") {
      if (v == "eager") {
        o.eager_attention = true;
      } else if (v == "fused") {
        if (!model::FusedAttentionAvailable()) {
          Fail(2, "--attention fused: this LibTorch has no scaled_dot_product_attention (< 2.0)");
        }
        o.eager_attention = false;
      } else {
        Fail(2, "--attention: expected fused or eager, got '" + v + "'");
      }
    } else {
      Fail(2, "unknown flag '" + a + "' (see --help)");
    }
  }
  if (!o.eval_data.empty() && !eval_fraction_given) o.eval_fraction = 0;
  // Spectrum adapters (ΔW = (s/n)·F·H with s = 1) move ΔW by about lr/n per
  // unit step of F, so they need a larger rate than LoRA's 2e-4 (on the demo
  // model, 1e-2 trains where 2e-4 barely moves: docs/results.md).
  if (!lr_given && (o.adapter.type == adapters::AdapterType::kQwha ||
                    o.adapter.type == adapters::AdapterType::kQwhaDataFree ||
                    o.adapter.type == adapters::AdapterType::kRandomWht)) {
    o.train.lr = 1e-2;
  }
  return o;
}

int Main(int argc, char** argv) {
  RecipeOptions options = ParseArgs(argc, argv);
  if (absl::Status st = ValidateRecipeOptions(options); !st.ok()) {
    Fail(2, std::string(st.message()));
  }
  const bool tty = isatty(fileno(stderr));
  // Peak device memory of the whole run, and of training alone (reset when it starts).
  int64_t peak_before_training = 0;
  auto on_phase = [&](const std::string& phase, const std::string& detail) {
    std::cerr << "[" << phase << "] " << detail << "\n";
    if (phase == "training") {
      peak_before_training = bench::PeakMemoryBytes(options.device);
      bench::ResetPeakMemory(options.device);
    }
  };
  auto on_progress = [&](const train::Progress& p) {
    if (tty) {
      std::cerr << "\r" << train::FormatProgressBar(p, 100) << std::flush;
      if (p.step == p.total_steps) std::cerr << "\n";
    } else {
      std::cerr << train::FormatProgressBar(p, 100) << "\n";
    }
  };
  absl::StatusOr<RecipeResult> result = RunRecipe(options, on_phase, on_progress);
  if (!result.ok()) {
    Fail(result.status().code() == absl::StatusCode::kInvalidArgument ||
                 result.status().code() == absl::StatusCode::kNotFound
             ? 2
             : 1,
         std::string(result.status().message()));
  }
  for (const std::string& w : result->warnings) std::cerr << "qwha-train: warning: " << w << "\n";
  std::printf("eval loss: base %.4f, quantized %.4f, initialized %.4f, trained %.4f\n",
              result->eval_loss_base, result->eval_loss_quantized, result->eval_loss_initialized,
              result->eval_loss_final);
  if (result->exact_match_samples > 0) {
    std::printf("exact match: %.4f (token accuracy %.4f) on %lld eval prompts\n",
                result->exact_match, result->exact_match_token_accuracy,
                static_cast<long long>(result->exact_match_samples));
  }
  if (result->quantized_base_cache_hit) std::printf("quantized base: from the cache\n");
  if (!result->merged_path.empty()) std::printf("merged model: %s\n", result->merged_path.c_str());
  if (!result->peft_path.empty()) std::printf("PEFT adapter: %s\n", result->peft_path.c_str());
  const double tokens_per_second =
      result->train.seconds > 0
          ? static_cast<double>(result->train.tokens_seen) / result->train.seconds
          : 0.0;
  const int64_t peak_training = bench::PeakMemoryBytes(options.device);
  const double gib = 1 << 30;
  std::printf(
      "training: %lld tokens in %.2f s, %.0f tokens/s; peak device memory %.2f GiB in "
      "training, %.2f GiB in the whole run\n",
      static_cast<long long>(result->train.tokens_seen), result->train.seconds, tokens_per_second,
      static_cast<double>(peak_training) / gib,
      static_cast<double>(std::max(peak_training, peak_before_training)) / gib);
  const train::TrainSummary& t = result->train;
  if (t.steady_steps > 0) {
    std::printf(
        "steady state (the first %lld steps left out): %lld tokens in %.3f s over %lld steps, "
        "%.0f tokens/s, %.1f ms/step\n",
        static_cast<long long>(options.train.throughput_warmup_steps),
        static_cast<long long>(t.steady_tokens), t.steady_seconds,
        static_cast<long long>(t.steady_steps),
        static_cast<double>(t.steady_tokens) / t.steady_seconds,
        1e3 * t.steady_seconds / static_cast<double>(t.steady_steps));
  }
  if (!t.phase_seconds.empty() && t.steady_steps > 0) {
    std::printf("phases (ms/step, device synchronized after each):");
    for (const auto& [name, seconds] : t.phase_seconds) {
      std::printf(" %s %.1f", name.c_str(), 1e3 * seconds / static_cast<double>(t.steady_steps));
    }
    std::printf("\n");
  }
  std::printf("trainable parameters: %lld; steps: %lld; adapter: %s\n",
              static_cast<long long>(result->trainable_params),
              static_cast<long long>(result->train.step), result->adapter_path.c_str());
  return 0;
}

}  // namespace
}  // namespace qwha::pipeline

int main(int argc, char** argv) { return qwha::pipeline::Main(argc, argv); }

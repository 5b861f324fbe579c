#include "worker/model/llama.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "worker/adapters/adapter.h"
#include "worker/io/atomic_file.h"
#include "worker/model/rope.h"
#include "worker/quant/quantizer.h"

namespace qwha::model {
namespace {

namespace fs = std::filesystem;
using TensorMap = std::map<std::string, torch::Tensor>;

std::vector<torch::Device> Devices() {
  std::vector<torch::Device> devices = {torch::kCPU};
  if (torch::cuda::is_available()) devices.emplace_back(torch::kCUDA);
  return devices;
}

std::string FreshDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(tmp != nullptr ? tmp : "/tmp") / ("llama_test_" + name);
  EXPECT_TRUE(io::RemoveTree(dir.string()).ok());
  return dir.string();
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64))
      .abs()
      .max()
      .item<double>();
}

double RelErr(const torch::Tensor& a, const torch::Tensor& b) {
  auto a64 = a.to(torch::kCPU, torch::kFloat64);
  auto b64 = b.to(torch::kCPU, torch::kFloat64);
  return ((a64 - b64).norm() / b64.norm()).item<double>();
}

// hidden 32 = 4 heads × 8, 2 kv heads, intermediate 64 (powers of two so
// QWHA adapters fit every projection).
ModelConfig SmallConfig() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 50;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.eos_token_ids = {2};
  return c;
}

torch::Tensor RandomIds(int64_t b, int64_t t, int64_t vocab, int64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, vocab, {b, t}, torch::kInt64);
}

// ---------------------------------------------------------------------------
// An independent float64 reference: the transformers equations written out
// with loops (RoPE per pair of dimensions, attention per head and position).

std::vector<double> ReferenceInvFreq(const ModelConfig& c) {
  const int64_t d = c.head_dim;
  std::vector<double> inv(static_cast<size_t>(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) {
    double f = std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    const RopeScaling& r = c.rope_scaling;
    if (r.type == RopeType::kLinear) {
      f /= r.factor;
    } else if (r.type == RopeType::kLlama3) {
      const double old = static_cast<double>(r.original_max_position_embeddings);
      const double wavelen = 2 * M_PI / f;
      if (wavelen < old / r.high_freq_factor) {
        // high frequency: unchanged
      } else if (wavelen > old / r.low_freq_factor) {
        f /= r.factor;
      } else {
        const double smooth =
            (old / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        f = (1 - smooth) * f / r.factor + smooth * f;
      }
    }
    inv[static_cast<size_t>(i)] = f;
  }
  return inv;
}

// Rotates x[0..d) for position pos: dimension i pairs with i + d/2.
void ReferenceRotate(double* x, int64_t d, int64_t pos, const std::vector<double>& inv) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * inv[static_cast<size_t>(i)];
    const double a = x[i];
    const double b = x[i + half];
    x[i] = a * std::cos(angle) - b * std::sin(angle);
    x[i + half] = b * std::cos(angle) + a * std::sin(angle);
  }
}

torch::Tensor ReferenceRmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return x / torch::sqrt(x.pow(2).mean(-1, true) + eps) * w;
}

torch::Tensor ReferenceLinear(const torch::Tensor& x, const TensorMap& sd,
                              const std::string& name) {
  torch::Tensor y = torch::matmul(x, sd.at(name + ".weight").t());
  auto bias = sd.find(name + ".bias");
  if (bias != sd.end()) y = y + bias->second;
  return y.contiguous();
}

torch::Tensor ReferenceLogits(const ModelConfig& c, const TensorMap& sd64,
                              const torch::Tensor& ids) {
  const int64_t B = ids.size(0), T = ids.size(1), H = c.hidden_size, D = c.head_dim;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, G = nh / nkv;
  const std::vector<double> inv = ReferenceInvFreq(c);
  torch::Tensor h =
      sd64.at("model.embed_tokens.weight").index_select(0, ids.flatten()).view({B, T, H});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    torch::Tensor n = ReferenceRmsNorm(h, sd64.at(p + "input_layernorm.weight"), c.rms_norm_eps);
    torch::Tensor q = ReferenceLinear(n, sd64, p + "self_attn.q_proj");
    torch::Tensor k = ReferenceLinear(n, sd64, p + "self_attn.k_proj");
    torch::Tensor v = ReferenceLinear(n, sd64, p + "self_attn.v_proj");
    double* qd = q.data_ptr<double>();
    double* kd = k.data_ptr<double>();
    const double* vd = v.data_ptr<double>();
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t j = 0; j < nh; ++j)
          ReferenceRotate(qd + ((b * T + t) * nh + j) * D, D, t, inv);
        for (int64_t j = 0; j < nkv; ++j) {
          ReferenceRotate(kd + ((b * T + t) * nkv + j) * D, D, t, inv);
        }
      }
    }
    torch::Tensor attn = torch::zeros({B, T, nh * D}, torch::kFloat64);
    double* ad = attn.data_ptr<double>();
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < nh; ++j) {
        const int64_t kvh = j / G;  // repeat_kv: G consecutive query heads per kv head
        for (int64_t t = 0; t < T; ++t) {
          const bool window = c.UsesSlidingWindow(l);
          std::vector<double> scores;
          std::vector<int64_t> keys;
          for (int64_t s = 0; s <= t; ++s) {
            if (window && t - s >= c.sliding_window) continue;
            double dot = 0;
            for (int64_t e = 0; e < D; ++e) {
              dot += qd[((b * T + t) * nh + j) * D + e] * kd[((b * T + s) * nkv + kvh) * D + e];
            }
            scores.push_back(dot / std::sqrt(static_cast<double>(D)));
            keys.push_back(s);
          }
          double mx = -1e300, z = 0;
          for (double sc : scores) mx = std::max(mx, sc);
          for (double& sc : scores) z += (sc = std::exp(sc - mx));
          for (size_t i = 0; i < keys.size(); ++i) {
            for (int64_t e = 0; e < D; ++e) {
              ad[((b * T + t) * nh + j) * D + e] +=
                  scores[i] / z * vd[((b * T + keys[i]) * nkv + kvh) * D + e];
            }
          }
        }
      }
    }
    h = h + ReferenceLinear(attn, sd64, p + "self_attn.o_proj");
    n = ReferenceRmsNorm(h, sd64.at(p + "post_attention_layernorm.weight"), c.rms_norm_eps);
    torch::Tensor g = ReferenceLinear(n, sd64, p + "mlp.gate_proj");
    torch::Tensor u = ReferenceLinear(n, sd64, p + "mlp.up_proj");
    h = h + ReferenceLinear(g / (1 + torch::exp(-g)) * u, sd64, p + "mlp.down_proj");
  }
  torch::Tensor n = ReferenceRmsNorm(h, sd64.at("model.norm.weight"), c.rms_norm_eps);
  const torch::Tensor& lm =
      c.tie_word_embeddings ? sd64.at("model.embed_tokens.weight") : sd64.at("lm_head.weight");
  return torch::matmul(n, lm.t());
}

// ---------------------------------------------------------------------------

TEST(LlamaTest, MatchesFloat64ReferenceForEveryVariant) {
  struct Variant {
    const char* name;
    std::function<void(ModelConfig&)> edit;
  };
  const Variant variants[] = {
      {"llama", [](ModelConfig&) {}},
      {"biases, tied, llama3 rope",
       [](ModelConfig& c) {
         c.qkv_bias = c.o_bias = c.mlp_bias = true;
         c.tie_word_embeddings = true;
         c.rope_scaling = {RopeType::kLlama3, 8.0, 1.0, 4.0, 64};
       }},
      {"qwen2, linear rope, head_dim 16",
       [](ModelConfig& c) {
         c.model_type = "qwen2";
         c.qkv_bias = true;
         c.head_dim = 16;
         c.rope_scaling.type = RopeType::kLinear;
         c.rope_scaling.factor = 2.0;
       }},
      {"mistral, sliding window 3, MQA",
       [](ModelConfig& c) {
         c.model_type = "mistral";
         c.num_key_value_heads = 1;
         c.sliding_window = 3;
         c.sliding_layers = {true, true};
       }},
  };
  for (const Variant& variant : variants) {
    ModelConfig c = SmallConfig();
    variant.edit(c);
    auto model = LlamaModel::RandomInit(c, 11, torch::kCPU, torch::kFloat64);
    const torch::Tensor ids = RandomIds(2, 7, c.vocab_size, 3);
    torch::Tensor logits = model->Forward(ids);
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{2, 7, c.vocab_size}));
    EXPECT_EQ(logits.scalar_type(), torch::kFloat32);
    // Forward returns float32: compare the float64 hidden path through lm_head.
    torch::Tensor hidden = model->ForwardHidden(ids);
    const TensorMap sd = model->ExportStateDict(torch::kFloat64);
    const torch::Tensor& lm =
        c.tie_word_embeddings ? sd.at("model.embed_tokens.weight") : sd.at("lm_head.weight");
    torch::Tensor logits64 = torch::matmul(hidden, lm.t());
    torch::Tensor ref = ReferenceLogits(c, sd, ids);
    EXPECT_LT(MaxAbsDiff(logits64, ref), 1e-10) << variant.name;
    EXPECT_LT(MaxAbsDiff(logits, ref), 1e-4) << variant.name;
    EXPECT_GT(ref.abs().max().item<double>(), 0.5) << variant.name;  // not a trivial output
  }
}

TEST(LlamaTest, SlidingWindowChangesTheOutput) {
  ModelConfig c = SmallConfig();
  c.model_type = "mistral";
  auto full = LlamaModel::RandomInit(c, 5, torch::kCPU, torch::kFloat64);
  c.sliding_window = 3;
  c.sliding_layers = {true, true};
  auto windowed = LlamaModel::RandomInit(c, 5, torch::kCPU, torch::kFloat64);
  const torch::Tensor ids = RandomIds(1, 6, c.vocab_size, 1);
  torch::Tensor a = full->ForwardHidden(ids), b = windowed->ForwardHidden(ids);
  // Positions < window see the same keys; later ones do not.
  EXPECT_LT(MaxAbsDiff(a.narrow(1, 0, 3), b.narrow(1, 0, 3)), 1e-12);
  EXPECT_GT(MaxAbsDiff(a.narrow(1, 3, 3), b.narrow(1, 3, 3)), 1e-3);
}

TEST(LlamaTest, RopeMatchesDirectFormula) {
  ModelConfig c = SmallConfig();
  c.head_dim = 16;
  c.rope_scaling = {RopeType::kLlama3, 8.0, 1.0, 4.0, 256};
  for (RopeType type : {RopeType::kDefault, RopeType::kLinear, RopeType::kLlama3}) {
    c.rope_scaling.type = type;
    const std::vector<double> expected = ReferenceInvFreq(c);
    torch::Tensor inv64 = RopeInverseFrequencies(c, torch::kFloat64);
    torch::Tensor inv32 = RopeInverseFrequencies(c, torch::kFloat32);
    ASSERT_EQ(inv64.numel(), 8);
    EXPECT_EQ(inv32.scalar_type(), torch::kFloat32);
    for (int64_t i = 0; i < 8; ++i) {
      EXPECT_NEAR(inv64[i].item<double>(), expected[i], 1e-15 * expected[i]) << i;
      EXPECT_NEAR(inv32[i].item<double>(), expected[i], 1e-6 * expected[i]) << i;
    }
  }
  // This llama3 setting has frequencies in all three bands.
  c.rope_scaling.type = RopeType::kLlama3;
  ModelConfig plain = c;
  plain.rope_scaling.type = RopeType::kDefault;
  const std::vector<double> scaled = ReferenceInvFreq(c), base = ReferenceInvFreq(plain);
  int unchanged = 0, divided = 0, smoothed = 0;
  for (size_t i = 0; i < scaled.size(); ++i) {
    const double ratio = scaled[i] / base[i];
    if (std::abs(ratio - 1) < 1e-12) {
      ++unchanged;
    } else if (std::abs(ratio - 1 / 8.0) < 1e-12) {
      ++divided;
    } else {
      ++smoothed;
    }
  }
  EXPECT_GT(unchanged, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(smoothed, 0);

  // Applying the tables rotates each pair (i, i + d/2) by position · inv_freq_i.
  const std::vector<double> inv = ReferenceInvFreq(c);
  torch::manual_seed(0);
  torch::Tensor x = torch::randn({2, 3, 5, 16}, torch::kFloat64);
  auto [cos, sin] = RopeTables(RopeInverseFrequencies(c, torch::kFloat64), 4, 5);
  torch::Tensor y = ApplyRope(x, cos, sin);
  torch::Tensor expect = x.clone();
  double* e = expect.data_ptr<double>();
  for (int64_t row = 0; row < 2 * 3 * 5; ++row) ReferenceRotate(e + row * 16, 16, 4 + row % 5, inv);
  EXPECT_LT(MaxAbsDiff(y, expect), 1e-12);

  // Relative positions: <rope(q, p), rope(k, s)> depends on p - s only.
  torch::Tensor q = torch::randn({16}, torch::kFloat64), k = torch::randn({16}, torch::kFloat64);
  auto dot_at = [&](int64_t p, int64_t s) {
    auto [cp, sp] = RopeTables(RopeInverseFrequencies(c, torch::kFloat64), p, 1);
    auto [cs, ss] = RopeTables(RopeInverseFrequencies(c, torch::kFloat64), s, 1);
    return (ApplyRope(q.view({1, 16}), cp, sp) * ApplyRope(k.view({1, 16}), cs, ss))
        .sum()
        .item<double>();
  };
  EXPECT_NEAR(dot_at(7, 3), dot_at(104, 100), 1e-10);
}

TEST(LlamaTest, GroupedQueryAttentionEqualsMhaWithRepeatedKv) {
  ModelConfig gqa = SmallConfig();
  gqa.qkv_bias = gqa.o_bias = true;
  auto model = LlamaModel::RandomInit(gqa, 21, torch::kCPU, torch::kFloat64);
  TensorMap sd = model->ExportStateDict(torch::kFloat64);
  ModelConfig mha = gqa;
  mha.num_key_value_heads = gqa.num_attention_heads;
  const int64_t groups = gqa.num_attention_heads / gqa.num_key_value_heads;
  for (int64_t l = 0; l < gqa.num_hidden_layers; ++l) {
    for (const char* proj : {"k_proj", "v_proj"}) {
      const std::string p = "model.layers." + std::to_string(l) + ".self_attn." + proj;
      torch::Tensor& w = sd[p + ".weight"];
      w = w.view({gqa.num_key_value_heads, gqa.head_dim, gqa.hidden_size})
              .repeat_interleave(groups, 0)
              .reshape({-1, gqa.hidden_size});
      torch::Tensor& b = sd[p + ".bias"];
      b = b.view({gqa.num_key_value_heads, gqa.head_dim}).repeat_interleave(groups, 0).flatten();
    }
  }
  auto expanded = LlamaModel::FromTensors(mha, sd, torch::kCPU, torch::kFloat64);
  ASSERT_TRUE(expanded.ok()) << expanded.status();
  const torch::Tensor ids = RandomIds(2, 9, gqa.vocab_size, 4);
  EXPECT_LT(MaxAbsDiff(model->ForwardHidden(ids), (*expanded)->ForwardHidden(ids)), 1e-12);
}

TEST(LlamaTest, KvCacheDecodingEqualsFullForward) {
  for (const auto& device : Devices()) {
    for (int64_t window : {0, 3}) {
      ModelConfig c = SmallConfig();
      if (window > 0) {
        c.model_type = "mistral";
        c.sliding_window = window;
        c.sliding_layers = {true, true};
      }
      auto model = LlamaModel::RandomInit(c, 8, device, torch::kFloat32);
      const torch::Tensor ids = RandomIds(2, 10, c.vocab_size, 6);
      torch::Tensor full = model->Forward(ids);
      KvCache cache;
      std::vector<torch::Tensor> parts;
      parts.push_back(model->Forward(ids.narrow(1, 0, 4), &cache));  // prefill
      parts.push_back(model->Forward(ids.narrow(1, 4, 3), &cache));  // a chunk
      for (int64_t t = 7; t < 10; ++t) parts.push_back(model->Forward(ids.narrow(1, t, 1), &cache));
      EXPECT_EQ(cache.length(), 10);
      EXPECT_LT(MaxAbsDiff(torch::cat(parts, 1), full), 1e-5) << device << " window " << window;
      cache.Clear();
      EXPECT_EQ(cache.length(), 0);
      EXPECT_LT(MaxAbsDiff(model->Forward(ids, &cache), full), 1e-6);
      // A cache is tied to its batch size.
      EXPECT_THROW(model->Forward(ids.narrow(0, 0, 1).narrow(1, 0, 1), &cache), c10::Error);
    }
  }
}

// The fused attention (scaled_dot_product_attention) computes the eager one's
// function: logits and adapter gradients, with GQA, MQA + sliding window (the
// masked path), and incremental decoding; on CUDA also in bfloat16 (flash /
// memory-efficient kernels) against the float64 reference.
TEST(LlamaTest, FusedAttentionEqualsEager) {
  if (!FusedAttentionAvailable()) {
    auto probe = LlamaModel::RandomInit(SmallConfig(), 1, torch::kCPU, torch::kFloat32);
    EXPECT_EQ(probe->attention_impl(), AttentionImpl::kEager);
    EXPECT_EQ(probe->SetAttentionImpl(AttentionImpl::kFused).code(),
              absl::StatusCode::kInvalidArgument);
    GTEST_SKIP() << "LibTorch < 2.0: only the eager attention exists";
  }
  for (const auto& device : Devices()) {
    for (int variant = 0; variant < 2; ++variant) {
      ModelConfig c = SmallConfig();
      if (variant == 1) {
        c.model_type = "mistral";
        c.num_key_value_heads = 1;
        c.sliding_window = 3;
        c.sliding_layers = {true, false};
      }
      auto model = LlamaModel::RandomInit(c, 31, device, torch::kFloat32);
      EXPECT_EQ(model->attention_impl(), AttentionImpl::kFused);
      int index = 0;
      for (LinearSlot* slot : model->LinearSlots()) {
        adapters::AdapterConfig acfg;
        acfg.type = adapters::AdapterType::kLora;
        acfg.rank = 2;
        acfg.seed = static_cast<uint64_t>(index++);
        const torch::Tensor w = slot->weight();
        auto adapter = adapters::InitializeAdapter(acfg, {w, w, torch::Tensor()});
        ASSERT_TRUE(adapter.ok()) << adapter.status();
        {
          torch::NoGradGuard no_grad;
          for (auto& p : (*adapter)->TrainableParameters()) p.add_(0.1 * torch::randn_like(p));
        }
        ASSERT_TRUE(slot->AttachAdapter(std::move(*adapter)).ok());
      }
      const torch::Tensor ids = RandomIds(2, 7, c.vocab_size, 4);
      const torch::Tensor weights = torch::randn({2, 7, c.vocab_size}).to(device);
      auto run = [&](AttentionImpl impl) {
        EXPECT_TRUE(model->SetAttentionImpl(impl).ok());
        for (LinearSlot* slot : model->LinearSlots()) {
          for (auto& p : slot->adapter()->TrainableParameters()) p.mutable_grad().reset();
        }
        torch::Tensor logits = model->Forward(ids);
        (logits * weights).sum().backward();
        std::vector<torch::Tensor> grads = {logits.detach()};
        for (LinearSlot* slot : model->LinearSlots()) {
          for (auto& p : slot->adapter()->TrainableParameters()) grads.push_back(p.grad().clone());
        }
        return grads;
      };
      const std::vector<torch::Tensor> eager = run(AttentionImpl::kEager);
      const std::vector<torch::Tensor> fused = run(AttentionImpl::kFused);
      ASSERT_EQ(eager.size(), fused.size());
      EXPECT_LT(MaxAbsDiff(fused[0], eager[0]), 1e-4) << device << " variant " << variant;
      for (size_t i = 1; i < eager.size(); ++i) {
        EXPECT_LT(RelErr(fused[i], eager[i]), 1e-4) << device << " variant " << variant << " " << i;
      }
      // Incremental decoding takes the masked path (queries after cached keys).
      {
        torch::NoGradGuard no_grad;
        KvCache cache;
        torch::Tensor first = model->Forward(ids.narrow(1, 0, 4), &cache);
        torch::Tensor rest = model->Forward(ids.narrow(1, 4, 3), &cache);
        EXPECT_LT(MaxAbsDiff(torch::cat({first, rest}, 1), eager[0]), 1e-4) << device;
      }
    }
    // bfloat16 (on CUDA: the flash / memory-efficient kernels) against float64.
    ModelConfig c = SmallConfig();
    c.head_dim = 16;
    auto f64 = LlamaModel::RandomInit(c, 41, torch::kCPU, torch::kFloat64);
    auto bf16 = LlamaModel::RandomInit(c, 41, device, torch::kBFloat16);
    const torch::Tensor ids = RandomIds(3, 33, c.vocab_size, 6);
    const torch::Tensor ref = f64->Forward(ids);
    const double err = RelErr(bf16->Forward(ids), ref);
    EXPECT_LT(err, 3e-2) << device;
    EXPECT_GT(err, 1e-5) << device;  // really computed in bfloat16
  }
}

TEST(LlamaTest, Bfloat16IsCloseToFloat32) {
  ModelConfig c = SmallConfig();
  c.qkv_bias = true;
  auto f32 = LlamaModel::RandomInit(c, 9, torch::kCPU, torch::kFloat32);
  auto bf16 = LlamaModel::RandomInit(c, 9, torch::kCPU, torch::kBFloat16);
  EXPECT_EQ(bf16->dtype(), torch::kBFloat16);
  const torch::Tensor ids = RandomIds(2, 8, c.vocab_size, 7);
  torch::Tensor a = f32->Forward(ids), b = bf16->Forward(ids);
  EXPECT_EQ(b.scalar_type(), torch::kFloat32);
  EXPECT_EQ(bf16->ForwardHidden(ids).scalar_type(), torch::kBFloat16);
  const double err = RelErr(b, a);
  EXPECT_LT(err, 3e-2);
  EXPECT_GT(err, 1e-5);  // really computed in bfloat16
  const double agree = a.argmax(-1).eq(b.argmax(-1)).to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(agree, 0.8);
}

// Quantized slots with adapters compute x (deq(Q) + ΔW)ᵀ + b in both adapter
// modes: the model equals a dense model holding those weights.
TEST(LlamaTest, QuantizedSlotsWithAdaptersEqualDenseDeqPlusDelta) {
  for (const auto& device : Devices()) {
    ModelConfig c = SmallConfig();
    c.model_type = "qwen2";
    c.qkv_bias = true;
    auto model = LlamaModel::RandomInit(c, 13, device, torch::kFloat32);
    TensorMap dense = model->ExportStateDict(torch::kFloat32);
    quant::QuantConfig qcfg;
    qcfg.bits = 3;
    qcfg.group_size = 32;
    int index = 0;
    for (LinearSlot* slot : model->LinearSlots()) {
      torch::Tensor w = slot->weight();
      adapters::AdapterConfig acfg;
      acfg.type =
          index % 2 == 0 ? adapters::AdapterType::kQwhaDataFree : adapters::AdapterType::kLora;
      acfg.rank = 2;
      acfg.seed = static_cast<uint64_t>(index);
      if (index % 7 == 3) {  // keep a few slots dense, still with an adapter
        adapters::LayerData layer{w, w, torch::Tensor()};
        auto adapter = adapters::InitializeAdapter(acfg, layer);
        ASSERT_TRUE(adapter.ok()) << adapter.status();
        {
          torch::NoGradGuard no_grad;
          for (auto& p : (*adapter)->TrainableParameters()) p.add_(0.05 * torch::randn_like(p));
        }
        dense[slot->name() + ".weight"] = w + (*adapter)->DeltaWeight().detach();
        ASSERT_TRUE(slot->AttachAdapter(std::move(*adapter)).ok());
      } else {
        auto q = quant::QuantizeRtn(w, qcfg);
        ASSERT_TRUE(q.ok()) << q.status();
        torch::Tensor deq = quant::Dequantize(*q, torch::kFloat32);
        adapters::LayerData layer{w, deq, torch::Tensor()};
        auto adapter = adapters::InitializeAdapter(acfg, layer);
        ASSERT_TRUE(adapter.ok()) << adapter.status();
        {
          torch::NoGradGuard no_grad;
          for (auto& p : (*adapter)->TrainableParameters()) p.add_(0.05 * torch::randn_like(p));
        }
        dense[slot->name() + ".weight"] = deq + (*adapter)->DeltaWeight().detach();
        ASSERT_TRUE(slot->SetQuantizedWeight(*q).ok());
        EXPECT_TRUE(slot->is_quantized());
        EXPECT_FALSE(slot->weight().defined());
        ASSERT_TRUE(slot->AttachAdapter(std::move(*adapter)).ok());
      }
      ++index;
    }
    auto reference = LlamaModel::FromTensors(c, dense, device, torch::kFloat32);
    ASSERT_TRUE(reference.ok()) << reference.status();
    const torch::Tensor ids = RandomIds(2, 6, c.vocab_size, 8);
    torch::Tensor expected = (*reference)->Forward(ids);
    model->SetAdapterMode(AdapterMode::kMerged);
    torch::Tensor merged = model->Forward(ids);
    model->SetAdapterMode(AdapterMode::kUnmerged);
    torch::Tensor unmerged = model->Forward(ids);
    EXPECT_LT(MaxAbsDiff(merged, expected), 1e-4) << device;
    EXPECT_LT(MaxAbsDiff(unmerged, expected), 1e-4) << device;
    // The merged export (deq(Q) + ΔW per slot) is the same model.
    auto exported = LlamaModel::FromTensors(c, model->ExportStateDict(torch::kFloat32), device,
                                            torch::kFloat32);
    ASSERT_TRUE(exported.ok()) << exported.status();
    EXPECT_LT(MaxAbsDiff((*exported)->Forward(ids), expected), 1e-4) << device;

    // Gradients reach the adapters (merged path), none the frozen base.
    model->SetAdapterMode(AdapterMode::kMerged);
    torch::Tensor loss = model->Forward(ids).logsumexp(-1).mean();
    loss.backward();
    for (LinearSlot* slot : model->LinearSlots()) {
      for (const auto& p : slot->adapter()->TrainableParameters()) {
        ASSERT_TRUE(p.grad().defined()) << slot->name();
      }
    }
    double grad_norm = 0;
    for (const auto& p :
         model->FindLinear("model.layers.0.self_attn.q_proj")->adapter()->TrainableParameters()) {
      grad_norm += p.grad().norm().item<double>();
    }
    EXPECT_GT(grad_norm, 0);
  }
}

// Adapters on every slot of a model: QWHA on even slots, LoRA on odd ones,
// with values moved away from their initialization. Dense slots for float64
// (no quantized base there), RTN 3-bit ones otherwise.
void AttachPerturbedAdapters(LlamaModel& model) {
  int index = 0;
  for (LinearSlot* slot : model.LinearSlots()) {
    torch::Tensor w = slot->weight();
    adapters::AdapterConfig acfg;
    acfg.type =
        index % 2 == 0 ? adapters::AdapterType::kQwhaDataFree : adapters::AdapterType::kLora;
    acfg.rank = 2;
    acfg.seed = static_cast<uint64_t>(index++);
    torch::Tensor base = w;
    if (model.dtype() != torch::kFloat64) {
      quant::QuantConfig qcfg;
      qcfg.bits = 3;
      qcfg.group_size = 32;
      auto q = quant::QuantizeRtn(w, qcfg);
      ASSERT_TRUE(q.ok()) << q.status();
      base = quant::Dequantize(*q, torch::kFloat32);
      ASSERT_TRUE(slot->SetQuantizedWeight(*q).ok());
    }
    auto adapter = adapters::InitializeAdapter(acfg, {w, base, torch::Tensor()});
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    {
      torch::NoGradGuard no_grad;
      for (auto& p : (*adapter)->TrainableParameters()) p.add_(0.05 * torch::randn_like(p));
    }
    (*adapter)->To(slot->device(),
                   model.dtype() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
    ASSERT_TRUE(slot->AttachAdapter(std::move(*adapter)).ok());
  }
}

// Loss and adapter gradients of one forward/backward.
std::pair<double, std::vector<torch::Tensor>> LossAndGradients(LlamaModel& model,
                                                               const torch::Tensor& ids) {
  std::vector<torch::Tensor> params;
  for (LinearSlot* slot : model.LinearSlots()) {
    for (auto& p : slot->adapter()->TrainableParameters()) {
      p.mutable_grad() = torch::Tensor();
      params.push_back(p);
    }
  }
  torch::Tensor logits = model.Forward(ids);
  torch::Tensor loss =
      (logits.to(torch::kFloat64).logsumexp(-1) - logits.to(torch::kFloat64).select(-1, 3)).mean();
  loss.backward();
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    EXPECT_TRUE(p.grad().defined());
    grads.push_back(p.grad().detach().clone());
  }
  return {loss.item<double>(), grads};
}

// With activation checkpointing the layers run again in backward (each
// projection sees its input twice), and the loss and every adapter gradient
// equal those of the plain path: to float64 rounding on a float64 model, to
// float32 rounding on a quantized float32 one (merged and unmerged), on every
// device. Without grad mode or with a KV cache nothing is recomputed.
TEST(LlamaTest, ActivationCheckpointingRecomputesAndKeepsGradients) {
  struct Case {
    torch::Device device;
    torch::ScalarType dtype;
    AdapterMode mode;
    double tol;
  };
  std::vector<Case> cases;
  for (const auto& device : Devices()) {
    if (device.is_cpu()) cases.push_back({device, torch::kFloat64, AdapterMode::kMerged, 1e-12});
    cases.push_back({device, torch::kFloat32, AdapterMode::kMerged, 1e-5});
    cases.push_back({device, torch::kFloat32, AdapterMode::kUnmerged, 1e-5});
  }
  for (const Case& k : cases) {
    SCOPED_TRACE(c10::str(k.device, " ", k.dtype, " mode ", static_cast<int>(k.mode)));
    ModelConfig c = SmallConfig();
    c.model_type = "qwen2";
    c.qkv_bias = true;
    auto model = LlamaModel::RandomInit(c, 21, k.device, k.dtype);
    torch::manual_seed(4);
    AttachPerturbedAdapters(*model);
    model->SetAdapterMode(k.mode);
    const torch::Tensor ids = RandomIds(2, 7, c.vocab_size, 5);

    int calls = 0;
    model->SetLinearInputHook([&](const LinearSlot&, const torch::Tensor&) { ++calls; });
    auto [plain_loss, plain_grads] = LossAndGradients(*model, ids);
    EXPECT_EQ(calls, 14);
    calls = 0;
    EXPECT_FALSE(model->activation_checkpointing());
    model->SetActivationCheckpointing(true);
    auto [ckpt_loss, ckpt_grads] = LossAndGradients(*model, ids);
    EXPECT_EQ(calls, 28);  // 14 projections, each run again in backward
    EXPECT_NEAR(ckpt_loss, plain_loss, k.tol * std::abs(plain_loss));
    ASSERT_EQ(ckpt_grads.size(), plain_grads.size());
    for (size_t i = 0; i < plain_grads.size(); ++i) {
      const double scale = plain_grads[i].abs().max().item<double>();
      EXPECT_GT(scale, 0) << i;
      EXPECT_LE(MaxAbsDiff(ckpt_grads[i], plain_grads[i]), k.tol * scale) << "parameter " << i;
    }

    calls = 0;
    {
      torch::NoGradGuard no_grad;
      model->Forward(ids);
    }
    KvCache cache;
    model->Forward(ids, &cache);
    EXPECT_EQ(calls, 28);  // once each per Forward, no recomputation
    model->SetLinearInputHook(nullptr);
  }
}

TEST(LlamaTest, SlotMutatorsValidateShapes) {
  auto model = LlamaModel::RandomInit(SmallConfig(), 1, torch::kCPU, torch::kFloat32);
  LinearSlot* slot = model->FindLinear("model.layers.1.mlp.down_proj");
  ASSERT_NE(slot, nullptr);
  EXPECT_EQ(slot->in_features(), 64);
  EXPECT_EQ(slot->out_features(), 32);
  EXPECT_EQ(model->FindLinear("model.layers.2.mlp.down_proj"), nullptr);
  EXPECT_EQ(slot->SetDenseWeight(torch::zeros({64, 32})).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(slot->SetBias(torch::zeros({64})).code(), absl::StatusCode::kInvalidArgument);
  quant::QuantConfig qcfg;
  qcfg.group_size = 32;
  auto wrong = quant::QuantizeRtn(torch::randn({64, 32}), qcfg);
  ASSERT_TRUE(wrong.ok());
  absl::Status st = slot->SetQuantizedWeight(*wrong);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("model.layers.1.mlp.down_proj"), std::string::npos);
  auto adapter = adapters::CreateEmptyAdapter(adapters::AdapterConfig{}, 64, 32);
  ASSERT_TRUE(adapter.ok());
  EXPECT_EQ(slot->AttachAdapter(std::move(*adapter)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(slot->adapter(), nullptr);

  // A borrowed adapter stays with its owner.
  adapters::AdapterConfig lora;
  lora.type = adapters::AdapterType::kLora;
  lora.rank = 2;
  auto owned = adapters::InitializeAdapter(lora, {slot->weight(), slot->weight(), {}});
  ASSERT_TRUE(owned.ok());
  ASSERT_TRUE(slot->AttachBorrowedAdapter(owned->get()).ok());
  EXPECT_EQ(slot->adapter(), owned->get());
  EXPECT_EQ(slot->DetachAdapter(), nullptr);
  EXPECT_EQ(slot->adapter(), nullptr);

  auto f64 = LlamaModel::RandomInit(SmallConfig(), 1, torch::kCPU, torch::kFloat64);
  auto q = quant::QuantizeRtn(f64->LinearSlots()[0]->weight().to(torch::kFloat32), qcfg);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(f64->LinearSlots()[0]->SetQuantizedWeight(*q).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(LlamaTest, LinearSlotsAreNamedAndHooked) {
  ModelConfig c = SmallConfig();
  auto model = LlamaModel::RandomInit(c, 2, torch::kCPU, torch::kFloat32);
  std::vector<LinearSlot*> slots = model->LinearSlots();
  ASSERT_EQ(slots.size(), 14u);
  const char* names[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                         "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                         "mlp.down_proj"};
  for (size_t i = 0; i < slots.size(); ++i) {
    EXPECT_EQ(slots[i]->name(), "model.layers." + std::to_string(i / 7) + "." + names[i % 7]);
    EXPECT_EQ(model->FindLinear(slots[i]->name()), slots[i]);
  }
  std::map<std::string, std::vector<int64_t>> seen;
  std::map<std::string, int> calls;
  model->SetLinearInputHook([&](const LinearSlot& slot, const torch::Tensor& x) {
    seen[slot.name()] = x.sizes().vec();
    ++calls[slot.name()];
  });
  model->Forward(RandomIds(3, 5, c.vocab_size, 1));
  ASSERT_EQ(seen.size(), 14u);
  for (const LinearSlot* s : slots) {
    EXPECT_EQ(seen[s->name()], (std::vector<int64_t>{3, 5, s->in_features()})) << s->name();
    EXPECT_EQ(calls[s->name()], 1);
  }
  model->SetLinearInputHook(nullptr);
  model->Forward(RandomIds(1, 2, c.vocab_size, 1));
  EXPECT_EQ(calls["model.layers.0.self_attn.q_proj"], 1);
}

TEST(LlamaTest, SaveLoadRoundTrip) {
  ModelConfig c = SmallConfig();
  c.model_type = "qwen2";
  c.qkv_bias = true;
  c.tie_word_embeddings = true;
  auto model = LlamaModel::RandomInit(c, 3, torch::kCPU, torch::kFloat32);
  const torch::Tensor ids = RandomIds(2, 5, c.vocab_size, 2);
  const torch::Tensor expected = model->Forward(ids);
  for (int64_t shard : {int64_t{0}, int64_t{8192}}) {
    const std::string dir = FreshDir("roundtrip_" + std::to_string(shard));
    SaveOptions opt;
    opt.max_shard_bytes = shard;
    ASSERT_TRUE(SaveModel(*model, dir, opt).ok());
    auto loaded = LoadModel(dir, torch::kCPU, torch::kFloat32);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ((*loaded)->config().model_type, "qwen2");
    EXPECT_TRUE((*loaded)->config().tie_word_embeddings);
    EXPECT_TRUE(torch::equal((*loaded)->Forward(ids), expected)) << shard;
  }

  // Merged export of a quantized model with an adapter.
  quant::QuantConfig qcfg;
  qcfg.group_size = 32;
  LinearSlot* slot = model->FindLinear("model.layers.0.mlp.up_proj");
  auto q = quant::QuantizeRtn(slot->weight(), qcfg);
  ASSERT_TRUE(q.ok());
  adapters::AdapterConfig acfg;
  acfg.type = adapters::AdapterType::kQwhaDataFree;
  acfg.rank = 2;
  auto adapter =
      adapters::InitializeAdapter(acfg, {slot->weight(), quant::Dequantize(*q), torch::Tensor()});
  ASSERT_TRUE(adapter.ok());
  ASSERT_TRUE(slot->SetQuantizedWeight(*q).ok());
  ASSERT_TRUE(slot->AttachAdapter(std::move(*adapter)).ok());
  const torch::Tensor quantized_logits = model->Forward(ids);
  const std::string dir = FreshDir("merged");
  ASSERT_TRUE(SaveModel(*model, dir).ok());
  auto merged = LoadModel(dir, torch::kCPU, torch::kFloat32);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_LT(MaxAbsDiff((*merged)->Forward(ids), quantized_logits), 1e-4);

  // bf16 export loads back in bf16 and float32.
  const std::string bf = FreshDir("bf16");
  SaveOptions bopt;
  bopt.dtype = torch::kBFloat16;
  ASSERT_TRUE(SaveModel(*model, bf, bopt).ok());
  auto as_bf16 = LoadModel(bf, torch::kCPU, torch::kBFloat16);
  ASSERT_TRUE(as_bf16.ok()) << as_bf16.status();
  EXPECT_LT(RelErr((*as_bf16)->Forward(ids), quantized_logits), 3e-2);
}

TEST(LlamaTest, LoadModelErrorsNameTheFile) {
  auto missing = LoadModel(FreshDir("absent"), torch::kCPU, torch::kFloat32);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(missing.status().message()).find("config.json"), std::string::npos);

  TensorMap tensors = LlamaModel::RandomInit(SmallConfig(), 1, torch::kCPU, torch::kFloat32)
                          ->ExportStateDict(torch::kFloat32);
  tensors.erase("model.norm.weight");
  auto bad = LlamaModel::FromTensors(SmallConfig(), tensors, torch::kCPU, torch::kFloat32);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("model.norm.weight"), std::string::npos);
  EXPECT_EQ(
      LlamaModel::FromTensors(SmallConfig(), tensors, torch::kCPU, torch::kInt32).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(LlamaTest, GenerateGreedyMatchesStepwiseArgmax) {
  ModelConfig c = SmallConfig();
  auto model = LlamaModel::RandomInit(c, 4, torch::kCPU, torch::kFloat32);
  const torch::Tensor prompt = RandomIds(2, 4, c.vocab_size, 5);
  GenerateOptions opt;
  opt.max_new_tokens = 6;
  auto out = model->Generate(prompt, opt);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->sizes(), (std::vector<int64_t>{2, 10}));
  torch::Tensor seq = prompt.clone();
  for (int i = 0; i < 6; ++i) {
    torch::Tensor next = model->Forward(seq).select(1, seq.size(1) - 1).argmax(-1);
    seq = torch::cat({seq, next.unsqueeze(1)}, 1);
  }
  EXPECT_TRUE(torch::equal(*out, seq)) << *out << seq;

  // Stop on EOS: make the first generated token of row 0 the eos id.
  const int64_t eos = seq[0][4].item<int64_t>();
  opt.eos_token_ids = {eos};
  auto stopped = model->Generate(prompt.narrow(0, 0, 1), opt);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->size(1), 5);
  // In a batch the finished row is padded while the other continues.
  if (seq[1][4].item<int64_t>() != eos) {
    auto batch = model->Generate(prompt, opt);
    ASSERT_TRUE(batch.ok());
    EXPECT_GT(batch->size(1), 5);
    for (int64_t t = 5; t < batch->size(1); ++t) EXPECT_EQ((*batch)[0][t].item<int64_t>(), eos);
  }

  // Sampling is deterministic in the seed.
  GenerateOptions sample;
  sample.greedy = false;
  sample.temperature = 0.8;
  sample.max_new_tokens = 5;
  sample.seed = 42;
  auto s1 = model->Generate(prompt, sample), s2 = model->Generate(prompt, sample);
  ASSERT_TRUE(s1.ok() && s2.ok());
  EXPECT_TRUE(torch::equal(*s1, *s2));

  // Invalid requests.
  EXPECT_FALSE(model->Generate(torch::tensor({1, 2}), opt).ok());
  EXPECT_FALSE(model->Generate(torch::full({1, 2}, c.vocab_size, torch::kInt64), opt).ok());
  opt.max_new_tokens = -1;
  EXPECT_FALSE(model->Generate(prompt, opt).ok());
  sample.temperature = 0;
  EXPECT_FALSE(model->Generate(prompt, sample).ok());
  EXPECT_THROW(model->Forward(torch::full({1, 2}, -1, torch::kInt64)), c10::Error);
}

}  // namespace
}  // namespace qwha::model

#include "worker/quant/quantizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include "kernels/dequant.h"
#include "worker/io/safetensors.h"
#include "worker/testing/synthetic.h"

namespace qwha::quant {
namespace {

using ::qwha::testing::MakeSyntheticLayer;
using ::qwha::testing::SyntheticLayerOptions;

std::string TempPath(const std::string& name) {
  const char* d = std::getenv("TEST_TMPDIR");
  return std::string(d != nullptr ? d : "/tmp") + "/" + name;
}

bool Contains(const absl::Status& st, const std::string& s) {
  return std::string(st.message()).find(s) != std::string::npos;
}

qwha::testing::SyntheticLayer Layer(int64_t out, int64_t in, int64_t tokens, uint64_t seed) {
  SyntheticLayerOptions o;
  o.out_features = out;
  o.in_features = in;
  o.tokens = tokens;
  o.seed = seed;
  return MakeSyntheticLayer(o);
}

// ‖X (W − Ŵ)ᵀ‖_F in float64.
double OutputError(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& w_hat) {
  torch::Tensor d = (w.to(torch::kCPU, torch::kFloat64) - w_hat.to(torch::kCPU, torch::kFloat64));
  return x.to(torch::kCPU, torch::kFloat64).mm(d.t()).norm().item<double>();
}

QuantConfig Config(int bits, int group, QuantMethod method = QuantMethod::kRtn,
                   torch::ScalarType pd = torch::kFloat16) {
  QuantConfig c;
  c.bits = bits;
  c.group_size = group;
  c.method = method;
  c.param_dtype = pd;
  return c;
}

TEST(QuantConfigTest, ValidationNamesTheField) {
  EXPECT_TRUE(ValidateQuantConfig(Config(4, 64), 256).ok());
  struct Case {
    QuantConfig cfg;
    int64_t in;
    const char* field;
  };
  QuantConfig damp0 = Config(4, 64), damp_nan = Config(4, 64);
  damp0.gptq_damp = 0;
  damp_nan.gptq_damp = std::nan("");
  const Case cases[] = {
      {Config(5, 64), 256, "bits"},
      {Config(1, 64), 256, "bits"},
      {Config(4, 48), 240, "group_size"},
      {Config(4, 64), 96, "group_size"},
      {Config(4, 128), 0, "group_size"},
      {damp0, 256, "gptq_damp"},
      {damp_nan, 256, "gptq_damp"},
      {Config(4, 64, QuantMethod::kRtn, torch::kInt8), 256, "param_dtype"},
  };
  for (const Case& c : cases) {
    absl::Status st = ValidateQuantConfig(c.cfg, c.in);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_TRUE(Contains(st, c.field)) << st;
  }
}

TEST(QuantConfigTest, ParseMethod) {
  EXPECT_EQ(*ParseQuantMethod("GPTQ"), QuantMethod::kGptq);
  EXPECT_EQ(*ParseQuantMethod("rtn"), QuantMethod::kRtn);
  EXPECT_STREQ(QuantMethodName(QuantMethod::kGptq), "gptq");
  auto bad = ParseQuantMethod("awq");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(bad.status(), "awq"));
}

// Element-wise bound, code range and an independent float64 dequantization,
// for every bit width, group size and parameter dtype on fresh random layers.
TEST(RtnTest, ErrorWithinHalfScaleAndDequantMatchesFloat64Reference) {
  const uint64_t base_seed = std::random_device()();
  SCOPED_TRACE("base seed " + std::to_string(base_seed));
  uint64_t seed = base_seed;
  for (auto pd : {torch::kFloat16, torch::kBFloat16, torch::kFloat32}) {
    for (int bits : {2, 3, 4}) {
      for (int g : {32, 64, 128}) {
        SCOPED_TRACE(std::string(c10::toString(pd)) + " bits " + std::to_string(bits) + " g " +
                     std::to_string(g));
        torch::Tensor w = Layer(96, 384, 1, seed++).weight * 3.0;
        auto q = QuantizeRtn(w, Config(bits, g, QuantMethod::kRtn, pd));
        ASSERT_TRUE(q.ok()) << q.status();
        ASSERT_EQ(q->packed.size(1), kernels::PackedWordsPerRow(384, bits));
        EXPECT_EQ(q->scales.scalar_type(), pd);
        const int maxq = (1 << bits) - 1;
        torch::Tensor codes = kernels::UnpackCodes(q->packed, bits, 384).to(torch::kFloat64);
        EXPECT_LE(codes.max().item<double>(), maxq);
        torch::Tensor s = q->scales.to(torch::kFloat64).repeat_interleave(g, 1);
        torch::Tensor z = q->zeros.to(torch::kFloat64).repeat_interleave(g, 1);
        EXPECT_TRUE((q->scales.to(torch::kFloat64) > 0).all().item<bool>());
        EXPECT_TRUE((z == z.round()).all().item<bool>());
        EXPECT_TRUE(((z >= 0) & (z <= maxq)).all().item<bool>());

        torch::Tensor ref = (codes - z) * s;  // float64 reference dequantization
        torch::Tensor deq = Dequantize(*q).to(torch::kFloat64);
        EXPECT_LE(((deq - ref).abs() - 1e-7 * ref.abs()).max().item<double>(), 0.0);

        torch::Tensor wd = w.to(torch::kFloat64);
        torch::Tensor excess = (wd - ref).abs() - s / 2 - 1e-6 * (wd.abs() + s);
        EXPECT_LE(excess.max().item<double>(), 0.0);

        // Codes agree with a float64 recomputation from the stored parameters
        // except at float32 near-ties, where they differ by one.
        torch::Tensor ref_codes = (torch::round(wd / s) + z).clamp(0, maxq);
        torch::Tensor diff = (ref_codes - codes).abs();
        EXPECT_LE(diff.max().item<double>(), 1.0);
        EXPECT_LE(diff.sum().item<double>(), 3.0);
      }
    }
  }
}

TEST(RtnTest, ConstantAndTinyGroupsAreReproduced) {
  for (auto pd : {torch::kFloat16, torch::kBFloat16}) {
    const double rel = pd == torch::kFloat16 ? 1.0 / 1024 : 1.0 / 128;
    torch::Tensor w = torch::randn({4, 256});
    w.slice(1, 0, 64).fill_(0.3);
    w.slice(1, 64, 128).fill_(-2.0);
    w.slice(1, 128, 192).zero_();
    w.slice(1, 192, 256).uniform_(-1e-9, 1e-9);
    w[2].slice(0, 0, 64).fill_(7.0);
    auto q = QuantizeRtn(w, Config(3, 64, QuantMethod::kRtn, pd));
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_TRUE((q->scales.to(torch::kFloat32) > 0).all().item<bool>());
    torch::Tensor deq = Dequantize(*q);
    EXPECT_TRUE(torch::isfinite(deq).all().item<bool>());
    EXPECT_LE(((deq - w).abs() - rel * w.abs() - 1e-8).max().item<double>(), 0.0);
    EXPECT_TRUE((deq.slice(1, 128, 192) == 0).all().item<bool>());
  }
}

TEST(QuantizeTest, RejectsBadInputsNamingThem) {
  const QuantConfig cfg = Config(4, 64);
  torch::Tensor w = torch::randn({8, 128});
  torch::Tensor nan = w.clone(), inf = w.clone();
  nan[3][7] = std::nan("");
  inf[1][1] = INFINITY;
  EXPECT_TRUE(Contains(QuantizeRtn(nan, cfg).status(), "weight contains NaN"));
  EXPECT_TRUE(Contains(QuantizeRtn(inf, cfg).status(), "weight contains Inf"));
  EXPECT_TRUE(Contains(QuantizeRtn(torch::randn({128}), cfg).status(), "2-D"));
  EXPECT_TRUE(
      Contains(QuantizeRtn(torch::ones({8, 128}, torch::kInt32), cfg).status(), "floating"));
  EXPECT_TRUE(Contains(QuantizeRtn(torch::randn({8, 96}), cfg).status(), "group_size"));
  EXPECT_TRUE(Contains(QuantizeRtn(w * 1e6, cfg).status(), "param_dtype"));  // fp16 overflow

  QuantConfig gptq = Config(4, 64, QuantMethod::kGptq);
  EXPECT_TRUE(Contains(Quantize(w, torch::Tensor(), gptq).status(), "gram"));
  EXPECT_TRUE(Contains(QuantizeGptq(w, torch::eye(64), gptq).status(), "gram must be [128, 128]"));
  torch::Tensor gnan = torch::eye(128);
  gnan[0][0] = std::nan("");
  EXPECT_TRUE(Contains(QuantizeGptq(w, gnan, gptq).status(), "gram contains NaN"));
  EXPECT_TRUE(Contains(QuantizeGptq(w, -torch::eye(128), gptq).status(), "positive definite"));
}

TEST(GptqTest, BeatsRtnOnCorrelatedInputs) {
  const auto layer = Layer(256, 512, 4096, 7);
  const torch::Tensor gram =
      layer.inputs.to(torch::kFloat64).t().mm(layer.inputs.to(torch::kFloat64));
  for (int bits : {2, 3, 4}) {
    auto rtn = Quantize(layer.weight, gram, Config(bits, 64, QuantMethod::kRtn));
    auto gptq = Quantize(layer.weight, gram, Config(bits, 64, QuantMethod::kGptq));
    ASSERT_TRUE(rtn.ok() && gptq.ok()) << rtn.status() << gptq.status();
    const double e_rtn = OutputError(layer.inputs, layer.weight, Dequantize(*rtn));
    const double e_gptq = OutputError(layer.inputs, layer.weight, Dequantize(*gptq));
    const double ratio = e_gptq / e_rtn;
    std::printf("GPTQ/RTN output error, %d bits, g64: %.4f (rtn %.4g, gptq %.4g)\n", bits, ratio,
                e_rtn, e_gptq);
    RecordProperty("gptq_over_rtn_" + std::to_string(bits) + "bit", std::to_string(ratio));
    EXPECT_LE(ratio, 0.9) << bits << " bits";
  }
}

// Textbook GPTQ in float64: no blocking, the whole remaining matrix is
// updated after every column; group parameters from the current weights.
torch::Tensor ReferenceGptqDequant(torch::Tensor w, torch::Tensor h, int bits, int g, double damp) {
  w = w.to(torch::kFloat64).clone();
  h = h.to(torch::kFloat64).clone();
  const double maxq = (1 << bits) - 1;
  const int64_t n = w.size(1);
  h.diagonal().add_(damp * h.diagonal().mean().item<double>());
  torch::Tensor hinv = torch::linalg_cholesky(torch::linalg_inv(h)).t();  // upper factor
  torch::Tensor out = torch::empty_like(w), scale, zero;
  for (int64_t j = 0; j < n; ++j) {
    if (j % g == 0) {
      torch::Tensor grp = w.slice(1, j, j + g);
      torch::Tensor lo = std::get<0>(grp.min(1)).clamp_max(0),
                    hi = std::get<0>(grp.max(1)).clamp_min(0);
      scale = (hi - lo) / maxq;
      zero = torch::round(-lo / scale).clamp(0, maxq);
    }
    torch::Tensor col = w.select(1, j);
    torch::Tensor deq = ((torch::round(col / scale) + zero).clamp(0, maxq) - zero) * scale;
    out.select(1, j).copy_(deq);
    torch::Tensor err = (col - deq) / hinv[j][j];
    w.slice(1, j + 1) -= err.unsqueeze(1) * hinv[j].slice(0, j + 1).unsqueeze(0);
  }
  return out;
}

TEST(GptqTest, MatchesUnblockedFloat64Reference) {
  const auto layer = Layer(64, 384, 2048, 13);  // 3 blocks of 128, groups of 32 and 128
  const torch::Tensor x = layer.inputs.to(torch::kFloat64);
  const torch::Tensor gram = x.t().mm(x);
  for (int g : {32, 128}) {
    QuantConfig cfg = Config(3, g, QuantMethod::kGptq, torch::kFloat32);
    auto q = QuantizeGptq(layer.weight, gram, cfg);
    ASSERT_TRUE(q.ok()) << q.status();
    const torch::Tensor deq = Dequantize(*q).to(torch::kFloat64);
    const torch::Tensor ref = ReferenceGptqDequant(layer.weight, gram, 3, g, cfg.gptq_damp);
    const double same =
        (deq - ref).abs().le(1e-5 * ref.abs().max()).to(torch::kFloat64).mean().item<double>();
    const double e = OutputError(x, layer.weight, deq), e_ref = OutputError(x, layer.weight, ref);
    std::printf("GPTQ vs float64 reference, g%d: %.4f%% entries equal, error ratio %.5f\n", g,
                100 * same, e / e_ref);
    EXPECT_GE(same, 0.99);
    EXPECT_NEAR(e / e_ref, 1.0, 0.01);
  }
}

TEST(GptqTest, IdentityGramEqualsRtnAndUncorrelatedIsNoWorse) {
  const torch::Tensor w = Layer(128, 256, 1, 11).weight;
  auto rtn = QuantizeRtn(w, Config(3, 64));
  auto eye = QuantizeGptq(w, 100.0 * torch::eye(256), Config(3, 64, QuantMethod::kGptq));
  ASSERT_TRUE(rtn.ok() && eye.ok()) << eye.status();
  EXPECT_TRUE(torch::equal(rtn->packed, eye->packed));
  EXPECT_TRUE(torch::equal(rtn->scales, eye->scales));

  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({4096, 256});
  auto gptq = QuantizeGptq(w, x.t().mm(x), Config(3, 64, QuantMethod::kGptq));
  ASSERT_TRUE(gptq.ok()) << gptq.status();
  const double ratio = OutputError(x, w, Dequantize(*gptq)) / OutputError(x, w, Dequantize(*rtn));
  std::printf("GPTQ/RTN output error, uncorrelated inputs, 3 bits: %.4f\n", ratio);
  EXPECT_LE(ratio, 1.02);
}

TEST(GptqTest, DeadInputsAreZeroed) {
  auto layer = Layer(64, 128, 1024, 5);
  layer.inputs.select(1, 5).zero_();
  layer.inputs.select(1, 77).zero_();
  auto q = QuantizeGptq(layer.weight, layer.inputs.t().mm(layer.inputs),
                        Config(4, 32, QuantMethod::kGptq));
  ASSERT_TRUE(q.ok()) << q.status();
  torch::Tensor deq = Dequantize(*q);
  EXPECT_TRUE(torch::isfinite(deq).all().item<bool>());
  EXPECT_TRUE((deq.select(1, 5) == 0).all().item<bool>());
  EXPECT_TRUE((deq.select(1, 77) == 0).all().item<bool>());
}

TEST(QuantizedWeightTest, StorageBytes) {
  auto q = QuantizeRtn(torch::randn({256, 256}), Config(4, 64));
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->StorageBytes(), 256 * 32 * 4 + 2 * (256 * 4 * 2));
}

TEST(QuantizedWeightTest, SaveLoadRoundTripIsExact) {
  for (int bits : {2, 3, 4}) {
    auto q = QuantizeRtn(Layer(48, 192, 1, bits).weight,
                         Config(bits, 32, QuantMethod::kRtn, torch::kBFloat16));
    ASSERT_TRUE(q.ok());
    const std::string path = TempPath("qw" + std::to_string(bits) + ".safetensors");
    ASSERT_TRUE(SaveQuantizedWeight(*q, path).ok());
    auto r = LoadQuantizedWeight(path);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->bits, bits);
    EXPECT_EQ(r->group_size, 32);
    EXPECT_EQ(r->rows, 48);
    EXPECT_EQ(r->cols, 192);
    EXPECT_TRUE(torch::equal(r->packed, q->packed));
    EXPECT_TRUE(torch::equal(r->scales, q->scales));
    EXPECT_TRUE(torch::equal(r->zeros, q->zeros));
    EXPECT_TRUE(torch::equal(Dequantize(*r), Dequantize(*q)));
  }
}

TEST(QuantizedWeightTest, CorruptedFilesNameTheField) {
  auto q = QuantizeRtn(torch::randn({16, 128}), Config(4, 64));
  ASSERT_TRUE(q.ok());
  const std::map<std::string, std::string> meta = {{"format", "qwha.quantized_weight.v1"},
                                                   {"bits", "4"},
                                                   {"group_size", "64"},
                                                   {"rows", "16"},
                                                   {"cols", "128"}};
  const std::map<std::string, torch::Tensor> tensors = {
      {"packed", q->packed}, {"scales", q->scales}, {"zeros", q->zeros}};
  struct Case {
    const char* name;
    std::map<std::string, std::string> meta;
    std::map<std::string, torch::Tensor> tensors;
    const char* field;
  };
  std::vector<Case> cases;
  auto with_meta = [&](const char* name, const std::string& k, const std::string& v,
                       const char* field) {
    Case c{name, meta, tensors, field};
    if (v.empty())
      c.meta.erase(k);
    else
      c.meta[k] = v;
    cases.push_back(c);
  };
  with_meta("no_bits", "bits", "", "\"bits\"");
  with_meta("bits_text", "bits", "four", "\"bits\"");
  with_meta("bits_8", "bits", "8", "\"bits\"");
  with_meta("no_format", "format", "", "\"format\"");
  with_meta("wrong_format", "format", "other.v9", "\"format\"");
  with_meta("group_size", "group_size", "48", "\"group_size\"");
  with_meta("rows", "rows", "17", "\"packed\"");
  with_meta("cols", "cols", "256", "\"packed\"");
  auto with_tensor = [&](const char* name, const std::string& k, torch::Tensor t,
                         const char* field) {
    Case c{name, meta, tensors, field};
    if (t.defined())
      c.tensors[k] = t;
    else
      c.tensors.erase(k);
    cases.push_back(c);
  };
  with_tensor("no_zeros", "zeros", torch::Tensor(), "\"zeros\"");
  with_tensor("scales_shape", "scales", q->scales.slice(1, 0, 1), "\"scales\"");
  with_tensor("zeros_range", "zeros", q->zeros + 20, "\"zeros\"");
  with_tensor("scales_negative", "scales", -q->scales, "\"scales\"");
  with_tensor("packed_dtype", "packed", q->packed.to(torch::kInt64), "\"packed\"");
  for (const Case& c : cases) {
    const std::string path = TempPath(std::string("corrupt_") + c.name + ".safetensors");
    ASSERT_TRUE(io::WriteSafetensors(path, c.tensors, c.meta).ok()) << c.name;
    auto r = LoadQuantizedWeight(path);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_TRUE(Contains(r.status(), c.field)) << c.name << ": " << r.status();
    EXPECT_TRUE(Contains(r.status(), path)) << c.name << ": " << r.status();
  }
  // Truncated file: the safetensors layer reports it, naming the path.
  const std::string path = TempPath("truncated.safetensors");
  ASSERT_TRUE(SaveQuantizedWeight(*q, path).ok());
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size() - 10);
  auto r = LoadQuantizedWeight(path);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status(), path)) << r.status();
}

// CUDA and CPU agree up to ties; compared through layer-output error norms.
TEST(QuantizeCudaTest, MatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto layer = Layer(256, 512, 4096, 21);
  const torch::Tensor gram =
      layer.inputs.to(torch::kFloat64).t().mm(layer.inputs.to(torch::kFloat64));
  const torch::Device cuda(torch::kCUDA);
  for (auto method : {QuantMethod::kRtn, QuantMethod::kGptq}) {
    for (int bits : {2, 3, 4}) {
      const QuantConfig cfg = Config(bits, 64, method);
      auto cpu = Quantize(layer.weight, gram, cfg);
      auto gpu = Quantize(layer.weight.to(cuda), gram.to(cuda), cfg);
      ASSERT_TRUE(cpu.ok() && gpu.ok()) << cpu.status() << gpu.status();
      EXPECT_TRUE(gpu->packed.is_cuda());
      const torch::Tensor deq_gpu = Dequantize(*gpu);
      EXPECT_TRUE(torch::equal(deq_gpu.cpu(), Dequantize(ToDevice(*gpu, torch::kCPU))));
      const double e_cpu = OutputError(layer.inputs, layer.weight, Dequantize(*cpu));
      const double e_gpu = OutputError(layer.inputs, layer.weight, deq_gpu);
      std::printf("%s %d bits: output error cpu %.6g cuda %.6g\n", QuantMethodName(method), bits,
                  e_cpu, e_gpu);
      EXPECT_NEAR(e_gpu / e_cpu, 1.0, method == QuantMethod::kRtn ? 1e-3 : 0.02);
    }
  }
}

}  // namespace
}  // namespace qwha::quant

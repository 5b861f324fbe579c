#include "worker/adapters/adapter.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/fwht.h"
#include "worker/adapters/lora.h"
#include "worker/adapters/qwha.h"

namespace qwha::adapters {
namespace {

constexpr std::pair<AdapterType, const char*> kTypeNames[] = {
    {AdapterType::kQwha, "qwha"}, {AdapterType::kQwhaDataFree, "qwha-datafree"},
    {AdapterType::kLora, "lora"}, {AdapterType::kLoftq, "loftq"},
    {AdapterType::kCloq, "cloq"}, {AdapterType::kRandomWht, "random-wht"},
};

bool NeedsGram(AdapterType t) { return t == AdapterType::kQwha || t == AdapterType::kCloq; }

std::string ShapeString(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) absl::StrAppend(&s, d ? ", " : "", t.size(d));
  return s + "]";
}

double LoraScale(const AdapterConfig& cfg, int64_t rank) {
  return cfg.type == AdapterType::kLora ? cfg.scaling / static_cast<double>(rank) : 1.0;
}

absl::Status CheckLayer(const AdapterConfig& cfg, const LayerData& layer) {
  const torch::Tensor& w = layer.weight;
  if (!w.defined() || w.dim() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer.weight must be [out, in], got ", ShapeString(w)));
  }
  if (!layer.dequantized.defined() || !layer.dequantized.sizes().equals(w.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat("layer.dequantized must be ", ShapeString(w),
                                                   ", got ", ShapeString(layer.dequantized)));
  }
  if (NeedsGram(cfg.type)) {
    if (!layer.gram.defined()) {
      return absl::FailedPreconditionError(absl::StrCat(
          AdapterTypeName(cfg.type), " initialization needs layer.gram (calibration data)"));
    }
    if (layer.gram.dim() != 2 || layer.gram.size(0) != w.size(1) ||
        layer.gram.size(1) != w.size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer.gram must be [", w.size(1), ", ", w.size(1), "], got ", ShapeString(layer.gram)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Adapter>> InitializeLora(const AdapterConfig& cfg,
                                                        const LayerData& layer) {
  const int64_t out = layer.weight.size(0), in = layer.weight.size(1);
  const int64_t rank = LoraRank(cfg, out, in);
  const torch::Device device = layer.weight.device();
  LoraFactors f;
  if (cfg.type == AdapterType::kLora) {
    // PEFT: kaiming_uniform_(a=√5) gives U(-1/√in, 1/√in); B = 0.
    torch::Generator gen = at::detail::createCPUGenerator(cfg.seed);
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    f.a = (torch::rand({rank, in}, gen, torch::kFloat64) * 2 - 1) * bound;
    f.b = torch::zeros({out, rank}, torch::kFloat64);
  } else {
    // SVDs in float64 on the CPU, float32 on CUDA (speed); CLoQ's Cholesky
    // is float64 everywhere.
    const torch::ScalarType work = device.is_cuda() ? torch::kFloat32 : torch::kFloat64;
    const torch::Tensor error =
        layer.weight.to(torch::kFloat64) - layer.dequantized.to(device, torch::kFloat64);
    absl::StatusOr<LoraFactors> factors;
    if (cfg.type == AdapterType::kLoftq) {
      factors = LoftqFactors(error.to(work), rank);
    } else {
      torch::Tensor g = layer.gram.to(device, torch::kFloat64);
      const double mean_diag = g.diagonal().mean().item<double>();
      g = g + cfg.damp * (mean_diag > 0 ? mean_diag : 1.0) * torch::eye(in, g.options());
      factors = CloqFactors(error.to(work), g, rank);
    }
    if (!factors.ok()) return factors.status();
    f = *factors;
  }
  return std::make_unique<LoraAdapter>(cfg.type, out, in, rank, LoraScale(cfg, rank),
                                       f.a.to(device, torch::kFloat32),
                                       f.b.to(device, torch::kFloat32));
}

}  // namespace

absl::StatusOr<AdapterType> ParseAdapterType(const std::string& name) {
  for (const auto& [type, type_name] : kTypeNames) {
    if (name == type_name) return type;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown adapter type \"", name,
                   "\" (expected qwha, qwha-datafree, lora, loftq, cloq or random-wht)"));
}

const char* AdapterTypeName(AdapterType type) {
  for (const auto& [t, name] : kTypeNames) {
    if (t == type) return name;
  }
  return "unknown";
}

bool IsSpectrumType(AdapterType t) {
  return t == AdapterType::kQwha || t == AdapterType::kQwhaDataFree || t == AdapterType::kRandomWht;
}

absl::Status ValidateAdapterConfig(const AdapterConfig& cfg, int64_t out_features,
                                   int64_t in_features) {
  if (out_features <= 0 || in_features <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("out_features and in_features must be > 0, got ",
                                                   out_features, ", ", in_features));
  }
  if (cfg.num_params == 0 && cfg.rank <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("rank must be > 0, got ", cfg.rank));
  }
  if (cfg.num_params < 0 || cfg.num_params > out_features * in_features) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_params must be in [0, out * in = ", out_features * in_features, "], got ",
                     cfg.num_params));
  }
  if (!(cfg.alloc_alpha >= 0) || !std::isfinite(cfg.alloc_alpha)) {
    return absl::InvalidArgumentError(
        absl::StrCat("alloc_alpha must be finite and >= 0, got ", cfg.alloc_alpha));
  }
  if (!(cfg.scaling > 0) || !std::isfinite(cfg.scaling)) {
    return absl::InvalidArgumentError(
        absl::StrCat("scaling must be finite and > 0, got ", cfg.scaling));
  }
  if (!(cfg.damp >= 0) || !std::isfinite(cfg.damp)) {
    return absl::InvalidArgumentError(absl::StrCat("damp must be finite and >= 0, got ", cfg.damp));
  }
  if (IsSpectrumType(cfg.type)) {
    if (absl::StatusOr<kernels::HadamardFactors> f = kernels::FactorHadamardSize(in_features);
        !f.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("in_features ", in_features, " has no supported Hadamard size for ",
                       AdapterTypeName(cfg.type), ": ", f.status().message()));
    }
  }
  return absl::OkStatus();
}

int64_t BudgetParams(const AdapterConfig& cfg, int64_t out_features, int64_t in_features) {
  const int64_t full = out_features * in_features;
  if (cfg.num_params > 0) return std::min(cfg.num_params, full);
  // rank * (in + out), capped at out * in (compared by division: no overflow).
  if (cfg.rank >= full / (in_features + out_features) + 1) return full;
  return std::min(cfg.rank * (in_features + out_features), full);
}

int64_t Adapter::NumTrainableParams() const {
  int64_t total = 0;
  for (const torch::Tensor& p : TrainableParameters()) total += p.numel();
  return total;
}

absl::StatusOr<std::unique_ptr<Adapter>> InitializeAdapter(const AdapterConfig& cfg,
                                                           const LayerData& layer) {
  if (absl::Status s = CheckLayer(cfg, layer); !s.ok()) return s;
  const int64_t out = layer.weight.size(0), in = layer.weight.size(1);
  if (absl::Status s = ValidateAdapterConfig(cfg, out, in); !s.ok()) return s;
  const torch::Device device = layer.weight.device();
  try {
    switch (cfg.type) {
      case AdapterType::kQwha:
      case AdapterType::kQwhaDataFree: {
        absl::StatusOr<SparseSpectrum> init =
            ComputeQwhaInit(cfg, layer, cfg.type == AdapterType::kQwhaDataFree);
        if (!init.ok()) return init.status();
        return std::make_unique<QwhaAdapter>(cfg.type, out, in, cfg.scaling, init->index.numel(),
                                             init->index.to(device),
                                             init->values.to(device, torch::kFloat32));
      }
      case AdapterType::kRandomWht: {
        const int64_t count = BudgetParams(cfg, out, in);
        return std::make_unique<QwhaAdapter>(
            cfg.type, out, in, cfg.scaling, count,
            RandomSpectrumIndex(out, in, count, cfg.seed).to(device),
            torch::zeros({count}, torch::TensorOptions().dtype(torch::kFloat32).device(device)));
      }
      case AdapterType::kLora:
      case AdapterType::kLoftq:
      case AdapterType::kCloq:
        return InitializeLora(cfg, layer);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(AdapterTypeName(cfg.type), " initialization: ", e.what_without_backtrace()));
  }
  return absl::InvalidArgumentError("unknown adapter type");
}

absl::StatusOr<std::unique_ptr<Adapter>> CreateEmptyAdapter(const AdapterConfig& cfg,
                                                            int64_t out_features,
                                                            int64_t in_features) {
  if (absl::Status s = ValidateAdapterConfig(cfg, out_features, in_features); !s.ok()) return s;
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  if (IsSpectrumType(cfg.type)) {
    const int64_t count = BudgetParams(cfg, out_features, in_features);
    // A valid placeholder state (first `count` flat positions, zero values).
    return std::make_unique<QwhaAdapter>(cfg.type, out_features, in_features, cfg.scaling, count,
                                         torch::arange(count, torch::kLong),
                                         torch::zeros({count}, f32));
  }
  const int64_t rank = LoraRank(cfg, out_features, in_features);
  return std::make_unique<LoraAdapter>(cfg.type, out_features, in_features, rank,
                                       LoraScale(cfg, rank), torch::zeros({rank, in_features}, f32),
                                       torch::zeros({out_features, rank}, f32));
}

double RelativeOutputError(const LayerData& layer, const torch::Tensor& delta) {
  const torch::Device device = layer.weight.device();
  const torch::Tensor w = layer.weight.to(torch::kFloat64);
  torch::Tensor m = w - layer.dequantized.to(device, torch::kFloat64);
  if (delta.defined()) m = m - delta.detach().to(device, torch::kFloat64);
  // tr(M G Mᵀ) = Σ (M G) ∘ M; G = I without calibration data.
  auto energy = [&](const torch::Tensor& a) {
    if (!layer.gram.defined()) return a.square().sum().item<double>();
    return (a.matmul(layer.gram.to(device, torch::kFloat64)) * a).sum().item<double>();
  };
  const double num = energy(m), den = energy(w);
  if (den <= 0) return num <= 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(std::max(0.0, num) / den);
}

}  // namespace qwha::adapters

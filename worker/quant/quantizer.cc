#include "worker/quant/quantizer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/dequant.h"
#include "worker/io/safetensors.h"

namespace qwha::quant {
namespace {

constexpr char kFormat[] = "qwha.quantized_weight.v1";
constexpr int64_t kGptqBlock = 128;  // lazy-batch block; every allowed group size divides it

bool IsParamDtype(torch::ScalarType t) {
  return t == torch::kFloat16 || t == torch::kBFloat16 || t == torch::kFloat32;
}

absl::Status CheckFinite(const torch::Tensor& t, const char* name) {
  if (torch::isnan(t).any().item<bool>())
    return absl::InvalidArgumentError(absl::StrCat(name, " contains NaN"));
  if (torch::isinf(t).any().item<bool>())
    return absl::InvalidArgumentError(absl::StrCat(name, " contains Inf"));
  return absl::OkStatus();
}

absl::Status ValidateWeight(const torch::Tensor& w, const QuantConfig& cfg) {
  if (!w.defined()) return absl::InvalidArgumentError("weight is undefined");
  if (w.dim() != 2)
    return absl::InvalidArgumentError(
        absl::StrCat("weight must be 2-D [out, in], got ", w.dim(), "-D"));
  if (!w.is_floating_point()) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight must be floating point, got ", c10::toString(w.scalar_type())));
  }
  if (w.size(0) == 0) return absl::InvalidArgumentError("weight has no rows");
  if (absl::Status st = ValidateQuantConfig(cfg, w.size(1)); !st.ok()) return st;
  return CheckFinite(w, "weight");
}

// Rounds positive float32 values to dtype, upward, and returns them as float32.
// Rounding up keeps (max - min) / scale <= 2^b - 1, so clamping never adds
// error beyond scale / 2.
torch::Tensor RoundUpTo(const torch::Tensor& x, torch::ScalarType dtype) {
  if (dtype == torch::kFloat32) return x;
  torch::Tensor r = x.to(dtype);
  // For positive finite values the next representable number is bits + 1.
  torch::Tensor next = (r.view(torch::kInt16) + 1).view(dtype);
  return torch::where(r.to(torch::kFloat32) < x, next, r).to(torch::kFloat32);
}

// Group parameters of wg [..., g] (float32): scale and zero as float32 values
// exactly representable in param_dtype. The range always includes 0 (as in
// GPTQ), so zero = round(-min / scale) lies in [0, 2^b - 1]; an all-zero group
// gets scale 1 (any positive scale reproduces it).
std::pair<torch::Tensor, torch::Tensor> GroupParams(const torch::Tensor& wg, int bits,
                                                    torch::ScalarType param_dtype) {
  const double maxq = (1 << bits) - 1;
  torch::Tensor lo = std::get<0>(wg.min(-1)).clamp_max(0);
  torch::Tensor hi = std::get<0>(wg.max(-1)).clamp_min(0);
  torch::Tensor scale = (hi - lo) / maxq;
  scale = torch::where(scale > 0, scale, torch::ones_like(scale));
  scale = RoundUpTo(scale, param_dtype);
  torch::Tensor zero = torch::round(-lo / scale).clamp_(0, maxq);
  return {scale, zero};
}

torch::Tensor QuantizeCodes(const torch::Tensor& w, const torch::Tensor& scale,
                            const torch::Tensor& zero, int bits) {
  return (torch::round(w / scale) + zero).clamp_(0, (1 << bits) - 1);
}

absl::StatusOr<QuantizedWeight> Assemble(const torch::Tensor& codes, const torch::Tensor& scales,
                                         const torch::Tensor& zeros, const QuantConfig& cfg) {
  if (!torch::isfinite(scales).all().item<bool>()) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight: a group's range overflows QuantConfig.param_dtype ",
                     c10::toString(cfg.param_dtype)));
  }
  QuantizedWeight q;
  q.bits = cfg.bits;
  q.group_size = cfg.group_size;
  q.rows = codes.size(0);
  q.cols = codes.size(1);
  q.packed = kernels::PackCodes(codes.to(torch::kUInt8), cfg.bits);
  q.scales = scales.to(cfg.param_dtype).contiguous();
  q.zeros = zeros.to(cfg.param_dtype).contiguous();
  return q;
}

absl::Status Internal(const char* what, const c10::Error& e) {
  return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
}

}  // namespace

absl::StatusOr<QuantMethod> ParseQuantMethod(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (lower == "rtn") return QuantMethod::kRtn;
  if (lower == "gptq") return QuantMethod::kGptq;
  return absl::InvalidArgumentError(
      absl::StrCat("quantization method \"", name, "\": expected rtn or gptq"));
}

const char* QuantMethodName(QuantMethod method) {
  return method == QuantMethod::kGptq ? "gptq" : "rtn";
}

absl::Status ValidateQuantConfig(const QuantConfig& cfg, int64_t in_features) {
  if (cfg.bits < 2 || cfg.bits > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantConfig.bits = ", cfg.bits, ": must be 2, 3 or 4"));
  }
  if (cfg.group_size != 32 && cfg.group_size != 64 && cfg.group_size != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantConfig.group_size = ", cfg.group_size, ": must be 32, 64 or 128"));
  }
  if (in_features <= 0 || in_features % cfg.group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("QuantConfig.group_size = ", cfg.group_size,
                                                   ": must divide in_features = ", in_features));
  }
  if (!(cfg.gptq_damp > 0) || !std::isfinite(cfg.gptq_damp)) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantConfig.gptq_damp = ", cfg.gptq_damp, ": must be positive and finite"));
  }
  if (!IsParamDtype(cfg.param_dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantConfig.param_dtype = ", c10::toString(cfg.param_dtype),
                     ": must be float16, bfloat16 or float32"));
  }
  return absl::OkStatus();
}

int64_t QuantizedWeight::StorageBytes() const {
  int64_t bytes = 0;
  for (const torch::Tensor* t : {&packed, &scales, &zeros}) {
    if (t->defined()) bytes += t->numel() * static_cast<int64_t>(t->element_size());
  }
  return bytes;
}

absl::StatusOr<QuantizedWeight> QuantizeRtn(const torch::Tensor& w, const QuantConfig& cfg) {
  try {
    if (absl::Status st = ValidateWeight(w, cfg); !st.ok()) return st;
    const int64_t rows = w.size(0), cols = w.size(1), groups = cols / cfg.group_size;
    torch::Tensor wg = w.detach().to(torch::kFloat32).reshape({rows, groups, cfg.group_size});
    auto [scale, zero] = GroupParams(wg, cfg.bits, cfg.param_dtype);  // [rows, groups]
    torch::Tensor codes = QuantizeCodes(wg, scale.unsqueeze(-1), zero.unsqueeze(-1), cfg.bits);
    return Assemble(codes.reshape({rows, cols}), scale, zero, cfg);
  } catch (const c10::Error& e) {
    return Internal("QuantizeRtn", e);
  }
}

absl::StatusOr<QuantizedWeight> QuantizeGptq(const torch::Tensor& w, const torch::Tensor& gram,
                                             const QuantConfig& cfg) {
  try {
    if (absl::Status st = ValidateWeight(w, cfg); !st.ok()) return st;
    const int64_t rows = w.size(0), cols = w.size(1), g = cfg.group_size;
    if (!gram.defined())
      return absl::InvalidArgumentError("gram is undefined (GPTQ needs calibration statistics)");
    if (gram.dim() != 2 || gram.size(0) != cols || gram.size(1) != cols) {
      return absl::InvalidArgumentError(
          absl::StrCat("gram must be [", cols, ", ", cols, "], got ", c10::str(gram.sizes())));
    }
    if (!gram.is_floating_point()) return absl::InvalidArgumentError("gram must be floating point");
    if (absl::Status st = CheckFinite(gram, "gram"); !st.ok()) return st;

    // Inverse Hessian factor in float64 (n^3 once; robust for ill-conditioned H).
    torch::Tensor h = gram.detach().to(w.device(), torch::kFloat64).clone();
    torch::Tensor diag = h.diagonal();
    torch::Tensor dead = diag == 0;
    diag.masked_fill_(dead, 1.0);
    torch::Tensor wf = w.detach().to(torch::kFloat32).clone();
    wf.masked_fill_(dead.unsqueeze(0), 0.0);
    diag.add_(cfg.gptq_damp * diag.mean());
    auto [chol, info] = at::linalg_cholesky_ex(h);
    if (info.item<int64_t>() != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gram is not positive definite after damping (QuantConfig.gptq_damp = ", cfg.gptq_damp,
          ")"));
    }
    auto [hinv_u, info2] = at::linalg_cholesky_ex(at::cholesky_inverse(chol), /*upper=*/true);
    if (info2.item<int64_t>() != 0) {
      return absl::InvalidArgumentError(
          "gram: inverse Hessian is not positive definite (ill-conditioned)");
    }
    torch::Tensor hinv = hinv_u.to(torch::kFloat32);

    auto f32 = wf.options();
    torch::Tensor codes = torch::empty({rows, cols}, f32);
    torch::Tensor scales = torch::empty({rows, cols / g}, f32);
    torch::Tensor zeros = torch::empty({rows, cols / g}, f32);
    torch::Tensor scale, zero;
    for (int64_t b1 = 0; b1 < cols; b1 += kGptqBlock) {
      const int64_t b2 = std::min(b1 + kGptqBlock, cols), count = b2 - b1;
      torch::Tensor w1 = wf.slice(1, b1, b2).clone();
      torch::Tensor err1 = torch::empty({rows, count}, f32);
      torch::Tensor hinv1 = hinv.slice(0, b1, b2).slice(1, b1, b2);
      for (int64_t i = 0; i < count; ++i) {
        const int64_t col = b1 + i;
        if (col % g == 0) {
          // Parameters from the current, error-updated weights of the group
          // (the group lies inside this block because g divides kGptqBlock).
          std::tie(scale, zero) = GroupParams(w1.slice(1, i, i + g), cfg.bits, cfg.param_dtype);
          scales.select(1, col / g).copy_(scale);
          zeros.select(1, col / g).copy_(zero);
        }
        torch::Tensor wc = w1.select(1, i);
        torch::Tensor qc = QuantizeCodes(wc, scale, zero, cfg.bits);
        codes.select(1, col).copy_(qc);
        torch::Tensor err = (wc - (qc - zero) * scale) / hinv1[i][i];
        err1.select(1, i).copy_(err);
        // Spread the error over the block's remaining columns.
        w1.slice(1, i + 1).addr_(err, hinv1[i].slice(0, i + 1), /*beta=*/1, /*alpha=*/-1);
      }
      // Lazy batch update of all later columns.
      if (b2 < cols) wf.slice(1, b2).addmm_(err1, hinv.slice(0, b1, b2).slice(1, b2), 1, -1);
    }
    return Assemble(codes, scales, zeros, cfg);
  } catch (const c10::Error& e) {
    return Internal("QuantizeGptq", e);
  }
}

absl::StatusOr<QuantizedWeight> Quantize(const torch::Tensor& w, const torch::Tensor& gram,
                                         const QuantConfig& cfg) {
  switch (cfg.method) {
    case QuantMethod::kRtn:
      return QuantizeRtn(w, cfg);
    case QuantMethod::kGptq:
      return QuantizeGptq(w, gram, cfg);
  }
  return absl::InvalidArgumentError("QuantConfig.method: unknown value");
}

torch::Tensor Dequantize(const QuantizedWeight& q, torch::ScalarType dtype) {
  return kernels::Dequantize(q.packed, q.scales, q.zeros, q.bits, q.group_size, q.cols, dtype);
}

QuantizedWeight ToDevice(const QuantizedWeight& q, const torch::Device& device) {
  QuantizedWeight out = q;
  out.packed = q.packed.to(device);
  out.scales = q.scales.to(device);
  out.zeros = q.zeros.to(device);
  return out;
}

absl::Status SaveQuantizedWeight(const QuantizedWeight& q, const std::string& path) {
  if (!q.packed.defined() || !q.scales.defined() || !q.zeros.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat("save quantized weight ", path, ": tensors undefined"));
  }
  const std::map<std::string, std::string> metadata = {
      {"format", kFormat},
      {"bits", std::to_string(q.bits)},
      {"group_size", std::to_string(q.group_size)},
      {"rows", std::to_string(q.rows)},
      {"cols", std::to_string(q.cols)},
  };
  return io::WriteSafetensors(
      path, {{"packed", q.packed}, {"scales", q.scales}, {"zeros", q.zeros}}, metadata);
}

absl::StatusOr<QuantizedWeight> LoadQuantizedWeight(const std::string& path) {
  auto file = io::ReadSafetensors(path);
  if (!file.ok()) return file.status();
  auto bad = [&path](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("quantized weight ", path, ": ", what));
  };
  const auto& meta = file->metadata;
  auto fmt = meta.find("format");
  if (fmt == meta.end()) return bad("metadata \"format\" is missing");
  if (fmt->second != kFormat)
    return bad(absl::StrCat("metadata \"format\" is \"", fmt->second, "\", expected ", kFormat));
  int64_t fields[4];
  const char* names[4] = {"bits", "group_size", "rows", "cols"};
  for (int i = 0; i < 4; ++i) {
    auto it = meta.find(names[i]);
    if (it == meta.end()) return bad(absl::StrCat("metadata \"", names[i], "\" is missing"));
    if (!absl::SimpleAtoi(it->second, &fields[i]) || fields[i] <= 0) {
      return bad(absl::StrCat("metadata \"", names[i], "\" = \"", it->second,
                              "\" is not a positive integer"));
    }
  }
  QuantizedWeight q;
  q.rows = fields[2];
  q.cols = fields[3];
  if (fields[0] < 2 || fields[0] > 4)
    return bad(absl::StrCat("metadata \"bits\" = ", fields[0], ": must be 2, 3 or 4"));
  q.bits = static_cast<int>(fields[0]);
  if (fields[1] > q.cols || q.cols % fields[1] != 0) {
    return bad(
        absl::StrCat("metadata \"group_size\" = ", fields[1], " does not divide cols = ", q.cols));
  }
  q.group_size = static_cast<int>(fields[1]);
  for (const char* name : {"packed", "scales", "zeros"}) {
    if (!file->tensors.count(name)) return bad(absl::StrCat("tensor \"", name, "\" is missing"));
  }
  q.packed = file->tensors.at("packed");
  q.scales = file->tensors.at("scales");
  q.zeros = file->tensors.at("zeros");
  const int64_t words = kernels::PackedWordsPerRow(q.cols, q.bits), groups = q.cols / q.group_size;
  if (q.packed.scalar_type() != torch::kInt32 || q.packed.dim() != 2 ||
      q.packed.size(0) != q.rows || q.packed.size(1) != words) {
    return bad(absl::StrCat("tensor \"packed\" must be int32 [", q.rows, ", ", words, "], got ",
                            c10::toString(q.packed.scalar_type()), " ",
                            c10::str(q.packed.sizes())));
  }
  for (const char* name : {"scales", "zeros"}) {
    const torch::Tensor& t = file->tensors.at(name);
    if (!IsParamDtype(t.scalar_type()) || t.dim() != 2 || t.size(0) != q.rows ||
        t.size(1) != groups) {
      return bad(absl::StrCat("tensor \"", name, "\" must be float16/bfloat16/float32 [", q.rows,
                              ", ", groups, "], got ", c10::toString(t.scalar_type()), " ",
                              c10::str(t.sizes())));
    }
  }
  if (q.zeros.scalar_type() != q.scales.scalar_type())
    return bad("tensors \"scales\" and \"zeros\" differ in dtype");
  torch::Tensor s = q.scales.to(torch::kFloat32), z = q.zeros.to(torch::kFloat32);
  if (!(torch::isfinite(s).all().item<bool>() && (s > 0).all().item<bool>())) {
    return bad("tensor \"scales\" holds a non-positive or non-finite value");
  }
  if (!((z == z.round()).all().item<bool>() && (z >= 0).all().item<bool>() &&
        (z <= (1 << q.bits) - 1).all().item<bool>())) {
    return bad(absl::StrCat("tensor \"zeros\" holds a value that is not an integer in [0, ",
                            (1 << q.bits) - 1, "]"));
  }
  if (absl::Status st = kernels::ValidateDequantizeInput(q.packed, q.scales, q.zeros, q.bits,
                                                         q.group_size, q.cols);
      !st.ok()) {
    return bad(std::string(st.message()));
  }
  return q;
}

}  // namespace qwha::quant

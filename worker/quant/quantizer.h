// Group-wise asymmetric uniform weight quantization (DESIGN.md §1, "Quantizer").
//
// For a weight W [out, in] and group size g along the input dimension, per
// group: scale = (max - min) / (2^b - 1), zero = round(-min / scale),
// q = clamp(round(w / scale) + zero, 0, 2^b - 1), ŵ = (q - zero) * scale.
// As in GPTQ the range [min, max] is widened to include 0, so zero is an
// integer in [0, 2^b - 1] and 0 is exactly representable; an all-zero group
// gets scale 1. Scales and zeros are stored in QuantConfig::param_dtype
// (float16 default); the scale is rounded *up* to that dtype and the codes are
// computed with the stored scale, so Dequantize() reproduces exactly what the
// quantizer chose and RTN's error is at most scale / 2 per element.
//
// Methods: RTN (round to nearest) and GPTQ (column-by-column error feedback
// through the Cholesky factor of the damped inverse Hessian H = XᵀX; group
// parameters are fixed when the quantizer reaches a group's first column).
//
// Thread safety: all functions are safe to call concurrently on distinct data.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::quant {

enum class QuantMethod { kRtn, kGptq };

// Parses "rtn" / "gptq" (case-insensitive); InvalidArgument otherwise.
absl::StatusOr<QuantMethod> ParseQuantMethod(const std::string& name);
const char* QuantMethodName(QuantMethod method);

struct QuantConfig {
  int bits = 4;         // 2, 3 or 4
  int group_size = 64;  // 32, 64 or 128; must divide in_features
  QuantMethod method = QuantMethod::kRtn;
  double gptq_damp = 0.01;                          // GPTQ: H += gptq_damp * mean(diag H) * I
  torch::ScalarType param_dtype = torch::kFloat16;  // scales/zeros storage
};

// OK iff cfg is usable for a weight with in_features columns; the message
// names the field ("bits", "group_size", ...) and the reason.
absl::Status ValidateQuantConfig(const QuantConfig& cfg, int64_t in_features);

// A quantized weight matrix: packed codes plus group parameters. Tensors live
// on one device; see kernels/dequant.h for the packing layout.
struct QuantizedWeight {
  int bits = 4;
  int group_size = 64;
  int64_t rows = 0;      // out_features
  int64_t cols = 0;      // in_features
  torch::Tensor packed;  // int32 [rows, PackedWordsPerRow(cols, bits)]
  torch::Tensor scales;  // [rows, cols / group_size], param_dtype
  torch::Tensor zeros;   // [rows, cols / group_size], param_dtype (integers)

  // Bytes of the stored form (codes + group parameters).
  int64_t StorageBytes() const;
};

// RTN quantization of w ([out, in], float, any device). Computation in float32.
// InvalidArgument (naming the input or config field) for a non-2-D or non-float
// weight, NaN/Inf entries, an invalid cfg, or a group range that overflows
// param_dtype. Quantize*: the result lives on w's device.
absl::StatusOr<QuantizedWeight> QuantizeRtn(const torch::Tensor& w, const QuantConfig& cfg);

// GPTQ quantization of w with the calibration Gram matrix gram = Σ XᵀX
// ([in, in], float32/float64, moved to w's device). Dead inputs (zero diagonal)
// are handled as in GPTQ (weight column set to zero, Hessian diagonal to 1).
// The damped inverse-Hessian factor is computed in float64, the column sweep
// (blocks of 128, lazy batch updates) in float32. A group's scale/zero come
// from the error-updated weights when the sweep reaches its first column.
// InvalidArgument if gram is malformed, holds NaN/Inf or is not positive
// definite after damping.
absl::StatusOr<QuantizedWeight> QuantizeGptq(const torch::Tensor& w, const torch::Tensor& gram,
                                             const QuantConfig& cfg);

// Dispatches on cfg.method; gram is required for GPTQ and ignored for RTN.
absl::StatusOr<QuantizedWeight> Quantize(const torch::Tensor& w, const torch::Tensor& gram,
                                         const QuantConfig& cfg);

// deq(Q) as a [rows, cols] tensor of dtype on the weight's device.
torch::Tensor Dequantize(const QuantizedWeight& q, torch::ScalarType dtype = torch::kFloat32);

// Copies q to a device.
QuantizedWeight ToDevice(const QuantizedWeight& q, const torch::Device& device);

// Writes q to `path` as a safetensors file (tensors "packed", "scales",
// "zeros"; bits/group_size/rows/cols in the metadata). Durable: temp file,
// fsync, rename. Returns an error naming the path on I/O failure.
absl::Status SaveQuantizedWeight(const QuantizedWeight& q, const std::string& path);

// Reads a file written by SaveQuantizedWeight onto the CPU. Errors name the
// path and the field that is missing or inconsistent.
absl::StatusOr<QuantizedWeight> LoadQuantizedWeight(const std::string& path);

}  // namespace qwha::quant

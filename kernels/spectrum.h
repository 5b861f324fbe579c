// Sparse spectrum scatter/gather: the bridge between the trainable values of a
// sparse adapter spectrum F (N selected entries of an rows x n matrix) and the
// dense matrix the FWHT works on.
//
// Entries are addressed by flat indices idx[t] = row * n + col (int64, [N],
// unique). Both ops are differentiable and are each other's adjoint:
// d(Scatter)/d(values) is Gather of the incoming gradient and vice versa.
//
// Thread safety: all functions are safe to call concurrently.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/status.h"

namespace qwha::kernels {

// OK iff SpectrumScatter(values, flat_index, rows, n) is valid: values 1-D
// float, flat_index 1-D int64 of the same length on the same device, every
// index in [0, rows*n). Checking the range reads the indices (a device sync).
absl::Status ValidateSpectrumIndex(const torch::Tensor& values, const torch::Tensor& flat_index,
                                   int64_t rows, int64_t n);

// Returns a dense [rows, n] tensor (values' dtype and device), zero except
// out.view(-1)[flat_index[t]] = values[t]. Indices must be unique and in range
// (not re-checked here: validate once with ValidateSpectrumIndex). Throws
// c10::Error for mismatched shapes, dtype or devices.
torch::Tensor SpectrumScatter(const torch::Tensor& values, const torch::Tensor& flat_index,
                              int64_t rows, int64_t n);

// Returns dense.view(-1)[flat_index] ([N], dense's dtype and device). dense is
// [rows, n] (any strides; flat indices address its row-major order).
torch::Tensor SpectrumGather(const torch::Tensor& dense, const torch::Tensor& flat_index);

}  // namespace qwha::kernels

// Internal to kernels/: maps LibTorch dtypes to the launchers' dtype tag.
// Included only by the dispatch .cc files, only under QWHA_WITH_CUDA.
#pragma once

#include <torch/torch.h>

#include "kernels/cuda_launchers.h"

namespace qwha::kernels {

// The launcher tag of a float dtype the caller has already validated.
inline cuda::DType ToCudaDType(torch::ScalarType t) {
  switch (t) {
    case torch::kBFloat16:
      return cuda::DType::kBFloat16;
    case torch::kFloat16:
      return cuda::DType::kFloat16;
    case torch::kFloat64:
      return cuda::DType::kFloat64;
    default:
      return cuda::DType::kFloat32;
  }
}

}  // namespace qwha::kernels

// Packed low-bit integer codes and their dequantization.
//
// Packing layout (shared by the CPU and CUDA paths and by saved files): each row
// of `cols` b-bit codes (b in {2, 3, 4}) is a little-endian bit stream stored
// in int32 words; code i of a row occupies bits [i*b, i*b + b) of that stream
// (a 3-bit code may straddle two words). Every row starts on a word boundary
// and is padded to a multiple of 32 codes, so a row is
// PackedWordsPerRow(cols, b) = ceil(cols / 32) * b words; 32 codes are exactly
// b words.
//
// Dequantization of group-wise asymmetric codes (group g along the row):
//   w[r, c] = (code[r, c] - zero[r, c / g]) * scale[r, c / g]   (in float32)
//
// Thread safety: all functions are safe to call concurrently.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/status.h"

namespace qwha::kernels {

// Number of int32 words that hold one packed row.
int64_t PackedWordsPerRow(int64_t cols, int bits);

// Packs codes (integer tensor [rows, cols], values in [0, 2^bits)) into an
// int32 tensor [rows, PackedWordsPerRow(cols, bits)] on the same device.
// Throws c10::Error for bits outside {2,3,4}, non-2-D input or out-of-range
// codes (callers validate first).
torch::Tensor PackCodes(const torch::Tensor& codes, int bits);

// Inverse of PackCodes: uint8 tensor [rows, cols] on packed's device. Throws
// c10::Error for bits outside {2,3,4} or a word count that does not match cols.
// PackCodes and UnpackCodes run on the CPU (CUDA tensors are copied).
torch::Tensor UnpackCodes(const torch::Tensor& packed, int bits, int64_t cols);

// OK iff Dequantize() accepts these arguments; the message names the argument
// and the reason (shape, dtype, device, bits, group size).
absl::Status ValidateDequantizeInput(const torch::Tensor& packed, const torch::Tensor& scales,
                                     const torch::Tensor& zeros, int bits, int group_size,
                                     int64_t cols);

// Returns the dequantized [rows, cols] matrix in out_dtype (float32, bfloat16
// or float16) on packed's device. scales and zeros are [rows, cols / group_size]
// in float16, bfloat16 or float32 (zeros hold integers). cols % group_size == 0.
// If `add` is defined ([rows, cols], any float dtype) it is added in float32
// before the final rounding: deq(Q) + ΔW in one pass.
// CUDA tensors use dequant_cuda.cu when built with QWHA_WITH_CUDA, otherwise a
// round trip through the CPU path.
// Precondition: ValidateDequantizeInput(...).ok(); throws c10::Error otherwise
// (also for a bad out_dtype or add shape/dtype/device, which Validate does not see).
torch::Tensor Dequantize(const torch::Tensor& packed, const torch::Tensor& scales,
                         const torch::Tensor& zeros, int bits, int group_size, int64_t cols,
                         torch::ScalarType out_dtype = torch::kFloat32,
                         const torch::Tensor& add = torch::Tensor());

}  // namespace qwha::kernels

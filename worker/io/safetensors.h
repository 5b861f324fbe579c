// The safetensors file format (https://github.com/huggingface/safetensors):
//   8 bytes   little-endian uint64 N
//   N bytes   UTF-8 JSON header: {"<name>": {"dtype": "F32", "shape": [..],
//             "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
//   rest      the byte buffer; offsets are relative to its start.
// Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL (little-endian).
//
// Files written here are readable by the Hugging Face library: keys sorted,
// header padded with spaces to 8 bytes, tensors laid out back to back with no
// gaps (widest element type first, so every tensor is naturally aligned).
//
// Thread safety: both functions are safe to call concurrently on distinct paths.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::io {

// Writes `tensors` (any device/layout; copied to contiguous CPU) and string
// metadata to `path`. Durable: via WriteFileAtomically. InvalidArgument naming
// the tensor for an undefined tensor, an unsupported dtype or the reserved name
// "__metadata__"; I/O errors name the path.
absl::Status WriteSafetensors(const std::string& path,
                              const std::map<std::string, torch::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;  // owned, contiguous, CPU
  std::map<std::string, std::string> metadata;
};

// Reads a whole safetensors file into owned CPU tensors. Every structural
// defect (short file, header length past the end, bad JSON, missing or wrong
// dtype/shape/data_offsets, offsets out of range or overlapping, byte count
// not matching the shape) is InvalidArgument naming the path and the tensor;
// I/O errors (NotFound, ...) name the path.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

}  // namespace qwha::io

// The reference the inference server is checked against end to end: greedy
// generation of a model directory, quantized with RTN as a job quantizes it,
// with an adapter directory (a job's adapter.safetensors and
// adapter_config.json) merged into the weights (LlamaModel's merged path:
// deq(Q) + ΔW in one weight). Computed in process, on the CPU, in float32.
// Thread safety: a pure function of its inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qwha::e2e {

// The new tokens (prompt excluded) of greedy decoding for `new_tokens` steps,
// never stopping at EOS. Errors name the file or slot.
absl::StatusOr<std::vector<int64_t>> MergedGreedy(const std::string& model_dir,
                                                  const std::string& adapter_dir, int bits,
                                                  int group_size,
                                                  const std::vector<int64_t>& prompt,
                                                  int64_t new_tokens);

}  // namespace qwha::e2e

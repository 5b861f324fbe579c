// ServingAdapter: one loaded adapter version in the form the serving forward
// applies it to a group of rows (unmerged; never folded into the base):
//
//   QWHA spectrum (qwha, qwha-datafree, random-wht):
//     Δ(x) = (s/n) · (x Hᵀ) · F_denseᵀ
//     F is kept sparse in the packed layout of kernels/spectrum_apply.h:
//     8-bit column steps and values pre-multiplied by s/n in the serving
//     dtype (3 bytes per parameter in bfloat16, plus row padding to 32 entries, fillers for
//     column steps over 255 and 4·(out + 1) row offsets). The product runs as
//     FWHT (kernels/fwht.h) of the rows, then kernels::SpectrumApply, which
//     serves every adapter of a batch and every slot sharing an input in one
//     pass.
//   LoRA family (lora, loftq, cloq):
//     Δ(x) = (x Aᵀ) (scale · B)ᵀ, A [r, in] and scale·B [out, r] in the
//     serving dtype.
//
// memory_bytes() is the exact storage of these tensors on the serving device;
// EstimateAdapterMemory bounds it from above before loading.
//
// Thread safety: immutable after construction; ApplyDelta may run
// concurrently. Ownership: the tensors belong to the adapter; dropping the
// last reference frees them.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/spectrum_apply.h"
#include "worker/adapters/adapter.h"

namespace qwha::serve {

class ServingModel;

// One projection's correction.
struct SlotDelta {
  enum class Kind { kNone, kSpectrum, kLora };
  Kind kind = Kind::kNone;
  kernels::PackedSpectrum spectrum;  // kSpectrum: F [out, n], values · s/n, serving dtype
  torch::Tensor lora_a;              // kLora: [r, in], serving dtype
  torch::Tensor lora_b;              // kLora: scale · B [out, r], serving dtype
};

// The adapter files a job produces (worker/pipeline/recipe.h): the state of
// every adapted slot keyed "<slot name>/<key>" and the adapter's settings.
struct AdapterFileContents {
  adapters::AdapterType type = adapters::AdapterType::kQwha;
  double scaling = 1.0;                     // adapter_config.json "scaling"
  std::vector<std::string> target_modules;  // adapter_config.json
  int bits = 0;                             // adapter_config.json quantization
  int group_size = 0;
  std::string quant_method;
  // slot name → {"spectrum_index", "spectrum_values"} or {"lora_A", "lora_B"}
  std::map<std::string, std::map<std::string, torch::Tensor>> slots;
};

// Reads <dir>/adapter.safetensors and <dir>/adapter_config.json onto the CPU.
// InvalidArgument naming the file and the key for anything malformed; I/O
// errors name the path.
absl::StatusOr<AdapterFileContents> ReadAdapterFiles(const std::string& dir);

// An upper bound of the device bytes the adapter in `dir` takes once loaded
// for `model`, from the safetensors header alone (no tensor data is read):
// exact for LoRA; for spectra it assumes the worst padding and fillers
// (kernels::PackedSpectrumBytesBound). Errors as ReadAdapterFiles.
absl::StatusOr<int64_t> EstimateAdapterMemory(const std::string& dir, const ServingModel& model);

class ServingAdapter {
 public:
  // Builds the serving form of `files` for `model` on the model's device.
  // FailedPrecondition when the adapter was trained on another quantization
  // (bits, group size, method) or target modules than the model serves;
  // InvalidArgument naming the slot for an unknown slot, a shape that does
  // not fit it, or indices out of range.
  static absl::StatusOr<std::unique_ptr<ServingAdapter>> Create(const AdapterFileContents& files,
                                                                const ServingModel& model,
                                                                std::string digest);

  ServingAdapter(const ServingAdapter&) = delete;
  ServingAdapter& operator=(const ServingAdapter&) = delete;

  const std::string& digest() const { return digest_; }
  // Unique among the ServingAdapters of this process, never reused: the
  // engine's captured decode steps name the adapters they baked in by it.
  uint64_t serial() const { return serial_; }
  adapters::AdapterType type() const { return type_; }
  int64_t memory_bytes() const { return memory_bytes_; }
  // The correction of slot `index` (kind kNone when the slot has none).
  const SlotDelta& slot(int64_t index) const { return slots_.at(static_cast<size_t>(index)); }

  // Δ for rows x [m, in] (in the serving dtype) of slot `index` ([m, out]).
  // For spectrum slots `xh` may carry SpectrumInput(x) already computed for
  // these rows (shared by q/k/v and gate/up); pass an undefined tensor
  // otherwise. Precondition: slot(index).kind != kNone.
  torch::Tensor ApplyDelta(int64_t index, const torch::Tensor& x, const torch::Tensor& xh) const;

  // Calls fn on every tensor the adapter owns (memory accounting and tests
  // that check storage is released).
  void ForEachTensor(const std::function<void(const torch::Tensor&)>& fn) const;

 private:
  ServingAdapter() = default;
  std::string digest_;
  uint64_t serial_ = 0;
  adapters::AdapterType type_ = adapters::AdapterType::kQwha;
  std::vector<SlotDelta> slots_;
  int64_t memory_bytes_ = 0;
};

// Bytes of a tensor's storage.
int64_t TensorBytes(const torch::Tensor& t);

// FWHT(x): [m, n] in x's dtype (float32 sums, one rounding) for rows x [m, n]:
// the shared first half of the spectrum product.
torch::Tensor SpectrumInput(const torch::Tensor& x);

}  // namespace qwha::serve

// AdamW with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight
// Decay Regularization", ICLR 2019), written with plain tensor ops so that it
// behaves the same under every LibTorch version. Per parameter p with
// gradient g and its own update count t (1, 2, ...):
//
//   m = β1·m + (1 − β1)·g
//   v = β2·v + (1 − β2)·g²
//   m̂ = m / (1 − β1^t),   v̂ = v / (1 − β2^t)
//   p = p − lr·(m̂ / (sqrt(v̂) + eps) + wd·p)
//
// The moments live in float32 (float64 for a float64 parameter). A bfloat16
// or float16 parameter gets a float32 master copy: the update is applied to
// the master and the parameter receives its rounded value, so small updates
// are never lost to the parameter's precision.
//
// Thread safety: none; one optimizer is driven by one training loop.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qwha::train {

struct AdamWOptions {
  double beta1 = 0.9;         // in [0, 1)
  double beta2 = 0.999;       // in [0, 1)
  double eps = 1e-8;          // > 0, added to sqrt(v̂)
  double weight_decay = 0.0;  // >= 0, decoupled: p -= lr·wd·p
};

// OK iff every field is in its documented range; the message names the field.
absl::Status ValidateAdamWOptions(const AdamWOptions& options);

// A trainable tensor and the stable name its optimizer state is saved under.
struct NamedParameter {
  std::string name;
  torch::Tensor tensor;  // a floating-point leaf that requires grad
};

class AdamW {
 public:
  // An optimizer over `params` (borrowed: the tensors are updated in place).
  // InvalidArgument for invalid options, an empty or duplicate name (or one
  // containing '/'), or a tensor that is undefined, not floating-point or not
  // a leaf requiring grad.
  static absl::StatusOr<std::unique_ptr<AdamW>> Create(std::vector<NamedParameter> params,
                                                       const AdamWOptions& options);

  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // One update with learning rate `lr` from each parameter's .grad().
  // Parameters without a gradient are skipped (their moments and update count
  // stay as they are). InvalidArgument for lr < 0 or not finite, or a gradient
  // whose shape differs from its parameter's; no parameter changes then.
  absl::Status Step(double lr);

  // Drops every gradient (sets .grad() to undefined).
  void ZeroGrad();

  const std::vector<NamedParameter>& parameters() const { return params_; }
  const AdamWOptions& options() const { return options_; }

  // The optimizer state as named tensors (clones, on the parameters' devices):
  //   "<name>/step"        int64 [1]   updates applied to the parameter
  //   "<name>/exp_avg"     m, float32 (float64 for float64 parameters)
  //   "<name>/exp_avg_sq"  v, same dtype as m
  //   "<name>/master"      float32 master copy (bfloat16/float16 parameters only)
  std::map<std::string, torch::Tensor> StateDict() const;

  // Replaces the state with one produced by StateDict() for parameters of the
  // same names, shapes and dtypes (tensors may be on any device). A master
  // copy is written back to its parameter; without one (e.g. a state saved
  // from a float32 run) the master is taken from the parameter.
  // InvalidArgument naming the missing, unknown or mis-shaped entry; the
  // optimizer is unchanged on error.
  absl::Status LoadStateDict(const std::map<std::string, torch::Tensor>& state);

  // Points the optimizer at new tensor objects for the same parameters (same
  // names, shapes and dtypes, in any order), keeping the state: needed after an
  // adapter replaced its tensors (Adapter::LoadStateDict). A master copy is
  // kept where the new tensor holds its rounded value and replaced by the new
  // value elsewhere. InvalidArgument naming the mismatch; unchanged on error.
  absl::Status RebindParameters(std::vector<NamedParameter> params);

 private:
  struct Slot {
    torch::Tensor exp_avg;     // m
    torch::Tensor exp_avg_sq;  // v
    torch::Tensor master;      // float32 copy for low-precision parameters, else undefined
    int64_t step = 0;
  };

  AdamW(std::vector<NamedParameter> params, const AdamWOptions& options);

  std::vector<NamedParameter> params_;
  std::vector<Slot> slots_;  // parallel to params_
  AdamWOptions options_;
};

}  // namespace qwha::train

// QWHA: a sparse Walsh-Hadamard spectrum adapter (DESIGN.md §1, "Adapter").
//
// Parameters: fixed flat indices idx (int64 [N], sorted, idx = o * n + j) and
// trainable values F (float [N]) of a sparse spectrum F_dense [out, n]:
//
//   ΔW = (s / n) · F_dense · H          (row o of ΔW is a sparse combination
//                                        of the ROWS of H)
//   Forward(x) = x ΔWᵀ = (s / n) · (x Hᵀ) · F_denseᵀ
//   ∂L/∂F[o, j] = (s / n) · (∂L/∂ΔW · Hᵀ)[o, j]
//
// H follows kernels/fwht.h (H Hᵀ = n I; not symmetric for n = K · 2^m), so the
// transposes above are exact. With c = s · F the least-squares coefficient of
// basis row j for an error row E_o and G = I is c_j = (E_o Hᵀ)_j: the
// "spectrum" of E is S = E Hᵀ (DESIGN.md writes E · H, equal for n = 2^m).
//
// Initialization steps 1-5 are exposed below so tests and benchmarks can check
// each against a float64 reference.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/adapters/adapter.h"

namespace qwha::adapters {

// Step 1: S = E Hᵀ (one transposed FWHT per row). E [out, n], any dtype Fwht
// accepts; InvalidArgument for an unsupported n.
absl::StatusOr<torch::Tensor> ErrorSpectrum(const torch::Tensor& error);

// Ĝ = H G Hᵀ / n² computed with two transposed FWHTs (rows, then columns of
// the symmetric intermediate), never a dense Hadamard matmul. gram [n, n]
// symmetric; result has gram's dtype (float64 on the CPU keeps full precision).
absl::StatusOr<torch::Tensor> SpectralGram(const torch::Tensor& gram);

// Step 2, AdaAlloc: k_o ∝ row_norms[o]^alpha with Σ k_o = budget exactly and
// 0 ≤ k_o ≤ cap. Channels whose share exceeds the cap are pinned at the cap and
// the excess is re-spread over the others (repeated until none exceeds);
// fractional parts go by largest remainder (ties to the lower channel). alpha
// = 0 is uniform; if every free channel has weight 0 the rest is uniform.
// Returns int64 [out] on the CPU. InvalidArgument if budget < 0,
// budget > out * cap, alpha < 0, or a norm is negative or not finite.
absl::StatusOr<torch::Tensor> AdaAlloc(const torch::Tensor& row_norms, int64_t budget, int64_t cap,
                                       double alpha);

// The selected spectrum locations of each output channel.
struct SpectrumSelection {
  torch::Tensor columns;  // int64 [out, k_max]; row o holds its counts[o]
                          // columns by decreasing score, then padding (0)
  torch::Tensor counts;   // int64 [out], on the CPU
  int64_t k_max = 0;
};

// Step 3: per channel o the counts[o] columns j with the largest
// energy[j] · S[o, j]² (energy = diag(Ĝ); all ones for G = I). One topk over
// every row, masked by rank < counts[o]. spectrum [out, n]; energy [n].
absl::StatusOr<SpectrumSelection> SelectSpectrum(const torch::Tensor& spectrum,
                                                 const torch::Tensor& energy,
                                                 const torch::Tensor& counts);

// Step 4: per channel solve Ĝ[S_o, S_o] c = P[o, S_o] with P = E G Hᵀ / n
// ([out, n]): the normal equations of min ‖R(E_oᵀ − (1/n) H_Sᵀ c)‖, RᵀR = G.
// All channels in batched Cholesky solves, in chunks of similar k_o (channels
// sorted by k_o, each chunk padded with identity to its own largest k_o, at
// most `chunk_bytes` of gathered Ĝ per chunk; peak memory is about three
// times that) in `dtype`. A failed
// factorization is retried with growing diagonal jitter. Returns c [out, k_max]
// (0 in padding) in `dtype`; Internal if a factorization keeps failing.
absl::StatusOr<torch::Tensor> RefineValues(const torch::Tensor& spectral_gram,
                                           const torch::Tensor& rhs,
                                           const SpectrumSelection& selection,
                                           torch::ScalarType dtype = torch::kFloat64,
                                           int64_t chunk_bytes = int64_t{512} << 20);

// A sparse spectrum as (sorted flat index, value) pairs.
struct SparseSpectrum {
  torch::Tensor index;   // int64 [N], sorted, o * n + j
  torch::Tensor values;  // [N], matching index
};

// Flattens a selection and per-pick values [out, k_max] into SparseSpectrum.
SparseSpectrum FlattenSelection(const SpectrumSelection& selection, const torch::Tensor& values,
                                int64_t n);

// Steps 1-5 for one layer: the initial spectrum F (values = c / s) on the
// layer's device. float64 throughout on the CPU; on CUDA the FWHTs run in
// float32 (the kernel's widest CUDA type) and the solve in `solve_dtype`.
// data_free: G = I (layer.gram ignored). FailedPrecondition if !data_free and
// layer.gram is undefined; InvalidArgument for inconsistent shapes.
absl::StatusOr<SparseSpectrum> ComputeQwhaInit(const AdapterConfig& cfg, const LayerData& layer,
                                               bool data_free,
                                               torch::ScalarType solve_dtype = torch::kFloat64);

// N locations uniform without replacement over out * n (Floyd's algorithm,
// deterministic for a seed), sorted; values zero. CPU int64 [N].
torch::Tensor RandomSpectrumIndex(int64_t out_features, int64_t n, int64_t count, uint64_t seed);

// The spectrum adapter for kQwha, kQwhaDataFree and kRandomWht.
class QwhaAdapter : public Adapter {
 public:
  // An adapter with the given state; index must be sorted unique in
  // [0, out * in) and values of the same length (not checked here; factories
  // and LoadStateDict check).
  QwhaAdapter(AdapterType type, int64_t out_features, int64_t in_features, double scaling,
              int64_t num_params, torch::Tensor index, torch::Tensor values);

  AdapterType type() const override { return type_; }
  int64_t in_features() const override { return in_features_; }
  int64_t out_features() const override { return out_features_; }

  torch::Tensor Forward(const torch::Tensor& x) const override;
  torch::Tensor DeltaWeight() const override;
  std::vector<torch::Tensor> TrainableParameters() const override { return {values_}; }

  // {"spectrum_index": int64 [N], "spectrum_values": [N]}.
  std::map<std::string, torch::Tensor> StateDict() const override;
  absl::Status LoadStateDict(const std::map<std::string, torch::Tensor>& state) override;
  void To(const torch::Device& device, torch::ScalarType dtype) override;

  double scaling() const { return scaling_; }
  // The dense spectrum F_dense [out, n] (differentiable w.r.t. the values).
  torch::Tensor DenseSpectrum() const;

 private:
  AdapterType type_;
  int64_t out_features_;
  int64_t in_features_;
  double scaling_;
  int64_t num_params_;    // N, fixed by the budget
  torch::Tensor index_;   // int64 [N]
  torch::Tensor values_;  // [N], leaf, requires grad
};

}  // namespace qwha::adapters

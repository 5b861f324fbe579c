// Host-side launchers of the CUDA kernels (fwht_cuda.cu, dequant_cuda.cu,
// spectrum_cuda.cu, spectrum_apply_cuda.cu, cross_entropy_cuda.cu, rms_norm_cuda.cu). Plain C++:
// raw device pointers, sizes, a dtype tag and a stream; no LibTorch. The tensor-level checks live
// in the .cc callers, which establish every precondition listed here.
//
// Every launcher enqueues its work on `stream` and returns cudaSuccess, or the
// first error from a CUDA API call or from cudaGetLastError() after a launch.
// Launchers are safe to call concurrently (they keep no mutable host state
// beyond one-time per-device kernel attributes, set under std::call_once).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qwha::kernels::cuda {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2, kFloat64 = 3 };

// out[r, :] = scale * in[r, :] · H (· Hᵀ when transpose), H = H_k ⊗ H_{2^log2_m}
// (k = 1 or a supported K, n = k << log2_m <= 32768). in rows start
// in_row_stride elements apart; out is contiguous [rows, n]; in and out do
// not overlap. dtype is kFloat32, kBFloat16 or kFloat16 (both tensors).
// Requires 16-byte aligned in/out and (in_row_stride * element size) % 16 == 0.
// Accumulates in float32. Returns cudaErrorInvalidValue for an unsupported
// size or dtype.
cudaError_t LaunchFwht(const void* in, int64_t in_row_stride, void* out, int64_t rows, int k,
                       int log2_m, DType dtype, float scale, bool transpose, cudaStream_t stream);

// LaunchFwht's transform of the rows z_rows[q] of in (int32 [4 · chunks] on
// the device, -1: zeros) into chunks of 4 tokens: out [chunks, n, 4], out[q / 4,
// c, q % 4] the transform's column c of row z_rows[q] (kernels::ChunkRows's
// layout, which SpectrumApply copies as it is). One kernel, where the K-mix
// register kernel runs for n = k << log2_m and dtype (FwhtChunksSupported:
// bfloat16 or float16, k > 1 with 2^log2_m in [16, 128] or folding into 128,
// e.g. 11008 = 172 · 64, and a chunk's 4 rows fitting in shared memory): one
// block per chunk and 16 rows of the [k, 2^log2_m] view, its 4 warps the 4
// tokens; otherwise cudaErrorNotSupported. Alignment as LaunchFwht.
bool FwhtChunksSupported(int k, int log2_m, DType dtype);
cudaError_t LaunchFwhtChunks(const void* in, int64_t in_row_stride, void* out,
                             const int32_t* z_rows, int64_t chunks, int k, int log2_m, DType dtype,
                             float scale, bool transpose, cudaStream_t stream);

// out[r, c] = (code(r, c) - zeros[r, c / g]) * scales[r, c / g] (+ add[r, c]),
// computed in float32 and rounded once to out_dtype (kFloat32/kBFloat16/
// kFloat16). packed is [rows, ceil(cols / 32) * bits] int32 (dequant.h
// layout); scales and zeros are contiguous [rows, cols / g] of param_dtype
// (kFloat32/kBFloat16/kFloat16); add is null or contiguous [rows, cols] of
// add_dtype (kFloat32/kBFloat16/kFloat16); out is contiguous [rows, cols].
// bits in {2, 3, 4}; cols % g == 0.
cudaError_t LaunchDequantize(const int32_t* packed, int64_t rows, int64_t cols, int bits,
                             int group_size, const void* scales, const void* zeros,
                             DType param_dtype, const void* add, DType add_dtype, void* out,
                             DType out_dtype, cudaStream_t stream);

// dense[idx[t]] = values[t] for t < count (dense already zero-filled by the
// caller; indices unique and in range). dtype: any DType.
cudaError_t LaunchSpectrumScatter(const void* values, const int64_t* idx, int64_t count,
                                  void* dense, DType dtype, cudaStream_t stream);

// values[t] = dense[idx[t]] for t < count (indices in range). dtype: any DType.
cudaError_t LaunchSpectrumGather(const void* dense, const int64_t* idx, int64_t count, void* values,
                                 DType dtype, cudaStream_t stream);

// Row r of logits [rows, vocab] (contiguous, dtype kFloat32/kBFloat16/
// kFloat16): loss[r] = logsumexp(x_r) − x_r[targets[r]] (float32 reductions);
// with `with_grad`, x_r is then overwritten with grad_scale · (softmax(x_r) −
// onehot(targets[r])), computed in float32 and rounded once. targets int64 in
// [0, vocab) (not checked); loss float32 [rows].
cudaError_t LaunchSoftmaxCrossEntropy(void* logits, const int64_t* targets, int64_t rows,
                                      int64_t vocab, DType dtype, float* loss, float grad_scale,
                                      bool with_grad, cudaStream_t stream);

// RMSNorm rows of x [rows, hidden] with weight [hidden] (all contiguous, one
// dtype kFloat32/kBFloat16/kFloat16), float32 arithmetic:
//   forward:  y = round(w · round(x · r)),  r = rsqrt(Σx² / hidden + eps)
//   backward: dx = round(r · (g − x · r² · Σ(g·x) / hidden)),  g = round(dy · w)
// (round = to the tensors' dtype). y / dx do not overlap the inputs.
cudaError_t LaunchRmsNormForward(const void* x, const void* weight, void* y, int64_t rows,
                                 int64_t hidden, float eps, DType dtype, cudaStream_t stream);
// RMSNorm forward as above, then z = scale · FWHT(y) per row (H_n, n = hidden):
// one kernel, y bit for bit LaunchRmsNormForward's. Only where
// RmsNormFwhtFused (hidden 4096, a 2-byte dtype, 16-byte aligned pointers;
// nullptr counts as aligned); else cudaErrorInvalidValue.
bool RmsNormFwhtFused(int64_t hidden, DType dtype, const void* x, const void* weight, const void* y,
                      const void* z);
cudaError_t LaunchRmsNormFwht(const void* x, const void* weight, void* y, void* z, int64_t rows,
                              int64_t hidden, float eps, float scale, DType dtype,
                              cudaStream_t stream);
// y[rows[i]] = x[i] and z[rows[i]] = scale · FWHT(x[i]) for i < count (rows
// nullptr: rows[i] = i; int64 on the device), rows of `hidden` contiguous
// elements: one kernel, where RmsNormFwhtFused(hidden, dtype, x, nullptr, y, z)
// holds; else cudaErrorInvalidValue. The FWHT is LaunchRmsNormFwht's.
cudaError_t LaunchCopyFwht(const void* x, const int64_t* rows, void* y, void* z, int64_t count,
                           int64_t hidden, float scale, DType dtype, cudaStream_t stream);
// The same in chunks of 4 rows for SpectrumApply: y[i] = RMSNorm(x[i])
// (weight nullptr: y[i] = x[i], a copy) for i < rows, and z [chunks, hidden,
// 4] with z[c, :, t] = scale · FWHT(y[z_rows[4c + t]]) (zeros where z_rows
// holds -1; int32 on the device, values in [-1, rows)). Where
// RmsNormFwhtFused(hidden, dtype, x, weight, y, z); else cudaErrorInvalidValue.
cudaError_t LaunchNormFwhtChunks(const void* x, const void* weight, void* y, void* z,
                                 const int32_t* z_rows, int64_t chunks, int64_t rows,
                                 int64_t hidden, float eps, float scale, DType dtype,
                                 cudaStream_t stream);
// The kernel of LaunchNormFwhtChunks, for benchmarks: 0 (the default) a
// cluster of 4 blocks per chunk, one row per block, where the device has
// clusters (compute capability 9.0); 1 one block of 4 rows per chunk (the
// kernel used without clusters). Process-wide; not for concurrent use.
void SetNormFwhtChunksKernel(int kernel);
cudaError_t LaunchRmsNormBackward(const void* dy, const void* x, const void* weight, void* dx,
                                  int64_t rows, int64_t hidden, float eps, DType dtype,
                                  cudaStream_t stream);

// One task of LaunchSpectrumApply: a packed spectrum (spectrum_layout.h:
// row_ptr int32 [rows + 1] with multiples of kRowAlign; entries in units of
// kUnitEntries, each its gap bytes then its values of the launch's dtype,
// 16-byte aligned) and the tokens it applies to.
struct SpectrumApplyTask {
  const int32_t* row_ptr;
  const uint8_t* units;  // entries in units (spectrum_layout.h): gap bytes, then values
  int32_t rows;
  int32_t n;          // columns of F (rows of zt)
  int32_t y_col;      // row r adds to column y_col + r of y
  int32_t tok_begin;  // first token: y_rows[tok_begin]
  int32_t count;      // tokens, >= 1
  int32_t entries;    // packed entries, row_ptr[rows] (picks the launch shape)
};

// Launch shape of LaunchSpectrumApply, for benchmarks that sweep it:
// lanes_per_row 4, 8, 16 or 32, entries_per_lane 8 or 16 (0: the default, 4
// lanes for chunks of 4 tokens where the rows average at most 192 entries,
// else 8, and 8 entries), blocks aimed at per
// SM (0: 3 where registers are capped, else 2), registers capped for
// min_blocks_per_sm resident blocks (3: capped, only with 4 or 8 lanes × 8
// entries; 1: not capped; 0: capped for chunks of 4 tokens), the staging of z
// in shared memory (1: two columns per thread with 4-byte loads where the
// type has 2 bytes, rows are 4-byte aligned and n is even; 2: one column per
// thread; 0: as 1; a z in chunks of 4 tokens is copied as it is, by one bulk
// copy where its chunks are 16-byte aligned, except with 3: by the block's
// threads), a diagnostic mode that times a part (1: only the staging
// of z, 2: everything but the staging, 3: an empty launch; for chunks of 4
// tokens of a 2-byte type with 4 or 8 lanes × 8 entries and the cap, 4:
// gathers of z free of bank conflicts, 5: entries loaded but not used, 6: as
// 5 with the loads reading the warp's range in order; the results are then
// wrong) and the rows of a warp (1: one contiguous range,
// 2: strided, w, w + warps, ...; 0: contiguous for chunks of 4 tokens, else
// strided). Process-wide; not for concurrent use
// with launches.
struct SpectrumApplyTuning {
  int lanes_per_row = 0;
  int blocks_per_sm = 0;
  int entries_per_lane = 0;
  int min_blocks_per_sm = 0;
  int staging = 0;
  int diagnostic = 0;
  int rows = 0;
  // Entry loads: 1 the step pipeline (the first windows of the next steps in
  // flight); 0 or 2 the window stream (the next window in flight) where it
  // exists (chunks of 4 tokens of 2-byte types, 4 or 8 lanes × 8 entries, the
  // register cap), else the step pipeline.
  int pipeline = 0;
  // Warps per block of the window stream: 16 (3 or 2 blocks per SM); 32 (one
  // block per SM); 0 or 24: 32 where no more than 2 blocks of 16 would be
  // resident per SM over the launch, else 24 (2 blocks per SM).
  int warps_per_block = 0;
};
void SetSpectrumApplyTuning(const SpectrumApplyTuning& tuning);

// For every task (host array of num_tasks) and row r, token p in [tok_begin,
// tok_begin + count): y[y_rows[p], y_col + r] += Σ_c F[r, c] · z[y_rows[p], c]
// (float32 sums, one atomic add per cell). z [.., ldz], y [.., ldy] and the
// tasks' values share dtype (kFloat32/kBFloat16/kFloat16); y_rows int32.
// Enqueues one launch per group of up to 32 tasks of one token bucket (<= 4
// tokens, more) and width n; count / 8 must stay below 65536. With z_chunks,
// z is in chunks of 4 tokens instead (kernels::ChunkRows): token p's value of
// column c is z[(p / 4) · ldz + 4c + p % 4], and every task has tok_begin % 4
// == 0 and count <= 4 (y_rows still names the rows of y).
cudaError_t LaunchSpectrumApply(const SpectrumApplyTask* tasks, int num_tasks, const void* z,
                                int64_t ldz, void* y, int64_t ldy, const int32_t* y_rows,
                                DType dtype, cudaStream_t stream, bool z_chunks = false);

}  // namespace qwha::kernels::cuda

// Packed QWHA spectra and their batched product, for serving many adapters on
// one base (worker/serve).
//
// A spectrum F [rows, n] (sparse; values already multiplied by s/n) is packed
// row by row, entries in increasing column order; entry e has
//   a gap      uint8: the column step from the row's previous entry (the first
//              entry's step is from column 0). A step of 256 or more is split
//              by filler entries of step 255 and value 0.
//   a value    in float32, bfloat16 or float16.
// Each row is padded with (step 0, value 0) entries to a multiple of
// kRowAlign (32, spectrum_layout.h); row r spans entries [row_ptr[r],
// row_ptr[r + 1]). Gaps and values are interleaved in units of kUnitEntries
// (32) entries (`entries`, uint8): unit u holds the 32 gaps of entries 32u ..
// 32u + 31, then their 32 values, so that a GPU lane's 8 entries are two
// pieces of one unit and a 4-lane window of 32 entries is one unit
// (UnitBytes(value size) bytes per unit). With bfloat16 values an entry takes
// 3 bytes (int32 CSR with float32 values: 8). Fillers and padding add zero
// terms only, so they change no result.
//
// SpectrumApply computes, for a list of tasks {F, y_col, tok_begin, count},
//   y[y_rows[p], y_col + r] += Σ_c F[r, c] · z[y_rows[p], c]
//       for every row r of F and p in [tok_begin, tok_begin + count)
// with z = FWHT(x) of the step's rows ([M, n], in y's dtype): one launch
// serves the q/k/v (or gate/up) slots of every adapter in a batch, each task
// naming its tokens' rows through y_rows. The CUDA kernel stages each chunk
// of up to 8 tokens of z in shared memory, transposed, and gives each
// row of F to a segment of 4, 8, 16 or 32 lanes of a warp (8 or 16 entries per lane,
// column steps by a segment scan, the next rows' entries prefetched), which
// keeps one float32 sum per token per lane, reduce-scatters them across the
// segment at the end of the row and adds each token's sum to y with an
// atomic add. Sums are float32 on every device.
//
// Thread safety: all functions are safe to call concurrently; tasks of one
// SpectrumApply call must write disjoint cells of y.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/spectrum_layout.h"

namespace qwha::kernels {

struct PackedSpectrum {
  int64_t rows = 0;
  int64_t n = 0;
  int64_t count = 0;  // packed entries, row_ptr[rows]
  torch::ScalarType value_dtype = torch::kFloat32;
  torch::Tensor row_ptr;  // int32 [rows + 1], multiples of kRowAlign
  torch::Tensor entries;  // uint8 [ceil(count / kUnitEntries) · UnitBytes(value size)]

  // Bytes of the two tensors.
  int64_t bytes() const;
  torch::ScalarType dtype() const { return value_dtype; }
  const torch::Device device() const { return entries.device(); }
};

// An upper bound of PackedSpectrum::bytes() for `count` entries of a
// [rows, n] spectrum with values in `value_dtype` (at most kRowAlign - 1
// padding entries and one filler per 255 columns in every row).
int64_t PackedSpectrumBytesBound(int64_t count, int64_t rows, int64_t n,
                                 torch::ScalarType value_dtype);

// Packs the entries flat_index[t] = row · n + col (int64 [N], strictly
// increasing) with values[t] · scale (values [N] float; scaled in float64,
// rounded once to value_dtype), then moves the result to `device`. The inputs
// may live on any device (they are read on the CPU). InvalidArgument naming
// the problem for an index that is out of [0, rows · n) or not increasing,
// mismatched sizes or an unsupported value dtype.
absl::StatusOr<PackedSpectrum> PackSpectrum(const torch::Tensor& flat_index,
                                            const torch::Tensor& values, int64_t rows, int64_t n,
                                            double scale, torch::ScalarType value_dtype,
                                            const torch::Device& device);

// The dense F [rows, n] in float32 on the spectrum's device (tests, checks).
torch::Tensor UnpackSpectrum(const PackedSpectrum& f);

struct SpectrumTask {
  const PackedSpectrum* spectrum;
  int64_t y_col = 0;      // row r of F adds to column y_col + r of y
  int64_t tok_begin = 0;  // the task's tokens are rows y_rows[tok_begin ..]
  int64_t count = 0;      // tokens
};

// The product above. z: [M, n] with unit column stride, on y's device in y's
// dtype, or z in chunks of 4 tokens ([C, n, 4], chunks contiguous, as
// kernels::ChunkRows gives: token p's row of z is z[p / 4, :, p % 4]; every
// task then starts a chunk, tok_begin % 4 == 0, and has at most 4 tokens;
// the CUDA kernel copies a chunk to shared memory as it is, one bulk copy); y: [M, cols] with unit
// column stride, the dtype of every task's values; y_rows: contiguous int32 [>= tok_begin + count
// of every task] on y's device, values in [0, M). Every spectrum has n == z.size(1) and y_col +
// rows <= cols. Throws c10::Error when a precondition that can be checked
// without reading device memory fails.
void SpectrumApply(const torch::Tensor& z, const std::vector<SpectrumTask>& tasks,
                   const torch::Tensor& y_rows, torch::Tensor& y);

}  // namespace qwha::kernels

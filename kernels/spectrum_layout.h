// The layout of packed spectra (spectrum_apply.h), shared by the packing, the
// CPU product and the CUDA kernel (no dependencies). Entries are interleaved
// in units of kUnitEntries: the unit's gap bytes, then its values; each row
// starts at a multiple of kRowAlign entries (padding entries: step 0, value 0),
// so that a warp segment's window of 32 entries is one whole unit: its gap
// bytes one 32-byte sector, its values whole sectors, no sector shared with
// another window. (In a step's sequence — matmul, FWHT, product — one layer of
// 8 adapters x 4 tokens took 258.6 us against 263.9 with units of 16 and rows
// padded to 8, 269.2 against 273.0 with uneven rows, whose padding adds ~10 %
// bytes: kernels/dev/spectrum_apply_dev.cu, docs/results.md.)
#pragma once

#include <cstdint>

namespace qwha::kernels {

constexpr int64_t kUnitEntries = 32;
constexpr int64_t kRowAlign = 32;

// Bytes of one unit whose values take value_size bytes (host and device code).
#ifdef __CUDACC__
#define QWHA_LAYOUT_FN __host__ __device__ constexpr
#else
#define QWHA_LAYOUT_FN constexpr
#endif
QWHA_LAYOUT_FN int64_t UnitBytes(int64_t value_size) { return kUnitEntries * (1 + value_size); }
#undef QWHA_LAYOUT_FN

}  // namespace qwha::kernels

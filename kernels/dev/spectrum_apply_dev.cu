// Development harness for the packed spectrum product (LaunchSpectrumApply),
// llm.c style: synthetic QWHA spectra of one LLaMA-7B layer for 8 adapters
// (rank-64 budget, 4 tokens each, 32 tokens in all), launched as serving
// launches them (q/k/v, o, gate/up, down), checked against a float64 CPU
// reference, then timed per launch shape and diagnostic mode, next to a
// kernel that only streams the same bytes (the bandwidth the product could
// reach). No LibTorch: builds in a minute with nvcc alone.
//
// Build and run (from the repository root, on a machine with a GPU):
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90,code=sm_90 -I. \
//     kernels/dev/spectrum_apply_dev.cu kernels/spectrum_apply_cuda.cu kernels/fwht_cuda.cu \
//     kernels/fwht_k_cuda.cu -lcublas -o /tmp/sa_dev && /tmp/sa_dev [--reps N] [--cv X]
// Last, each launch runs after the base's matmul (cuBLAS) and the FWHT of a
// step's 32 rows, as serving enqueues them: what the product adds to them;
// and with the FWHT on a second stream beside the matmul.
// Exit status 1 if a check fails.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda_launchers.h"
#include "kernels/dev/dev_check.h"
#include "kernels/spectrum_layout.h"

namespace qc = qwha::kernels::cuda;

namespace {

constexpr int kAdapters = 8;
constexpr int kTokensPer = 4;
constexpr int kTokens = kAdapters * kTokensPer;
constexpr int kCopies = 4;  // 4 copies of a layer: ~480 MB, ~10x the L2 cache

// bfloat16 bits <-> float through CUDA's host conversions (as kernels_dev.cu).
float Bf(uint16_t b) {
  __nv_bfloat16 v;
  std::memcpy(&v, &b, 2);
  return __bfloat162float(v);
}
uint16_t ToBf(float f) {
  const __nv_bfloat16 v = __float2bfloat16_rn(f);
  uint16_t b;
  std::memcpy(&b, &v, 2);
  return b;
}

// One packed spectrum [rows, n] on the host and the device.
struct Spectrum {
  int rows = 0, n = 0;
  std::vector<int32_t> row_ptr;
  std::vector<uint8_t> gaps;
  std::vector<uint16_t> values;
  // Device copies (the same contents at other addresses), so that timed
  // sequences read more than the L2 cache holds, as a model's layers do:
  // row_ptr, and the entries in units (their gap bytes, then their values).
  std::vector<int32_t*> c_row_ptr;
  std::vector<uint8_t*> c_units;
  size_t bytes() const { return row_ptr.size() * 4 + gaps.size() * 3; }
};

// Rows of about `mean` entries (lengths spread with coefficient of variation
// `cv`), random distinct columns, bf16 values ~ N(0, 0.02); packed as
// PackSpectrum packs (fillers for steps > 255, rows padded to multiples of
// kRowAlign, units of kUnitEntries: kernels/spectrum_layout.h).
Spectrum MakeSpectrum(int rows, int n, double mean, double cv, std::mt19937_64& rng) {
  Spectrum s;
  s.rows = rows, s.n = n;
  std::normal_distribution<double> len(mean, mean * cv);
  std::normal_distribution<float> val(0.f, 0.02f);
  std::vector<char> used(static_cast<size_t>(n));
  std::vector<int> cols;
  s.row_ptr.push_back(0);
  for (int r = 0; r < rows; ++r) {
    const int k = std::clamp(static_cast<int>(std::lround(len(rng))), 1, n);
    std::fill(used.begin(), used.end(), 0);
    cols.clear();
    std::uniform_int_distribution<int> pick(0, n - 1);
    while (static_cast<int>(cols.size()) < k) {
      const int c = pick(rng);
      if (!used[c]) used[c] = 1, cols.push_back(c);
    }
    std::sort(cols.begin(), cols.end());
    int prev = 0;
    for (int c : cols) {
      int step = c - prev;
      while (step > 255) s.gaps.push_back(255), s.values.push_back(0), step -= 255;
      s.gaps.push_back(static_cast<uint8_t>(step));
      s.values.push_back(ToBf(val(rng)));
      prev = c;
    }
    while (s.gaps.size() % qwha::kernels::kRowAlign) s.gaps.push_back(0), s.values.push_back(0);
    s.row_ptr.push_back(static_cast<int32_t>(s.gaps.size()));
  }
  // The units of PackSpectrum: unit u = entries [32u, 32u + 32), their gap
  // bytes, then their values.
  constexpr size_t kUnit = qwha::kernels::kUnitEntries;
  const size_t units = (s.gaps.size() + kUnit - 1) / kUnit;
  std::vector<uint8_t> packed(units * qwha::kernels::UnitBytes(2), 0);
  for (size_t e = 0; e < s.gaps.size(); ++e) {
    uint8_t* unit = packed.data() + (e / kUnit) * qwha::kernels::UnitBytes(2);
    unit[e % kUnit] = s.gaps[e];
    std::memcpy(unit + kUnit + 2 * (e % kUnit), &s.values[e], 2);
  }
  for (int c = 0; c < kCopies; ++c) {
    int32_t* rp;
    uint8_t* u;
    CK(cudaMalloc(&rp, s.row_ptr.size() * 4));
    CK(cudaMalloc(&u, packed.size()));
    CK(cudaMemcpy(rp, s.row_ptr.data(), s.row_ptr.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(u, packed.data(), packed.size(), cudaMemcpyHostToDevice));
    s.c_row_ptr.push_back(rp), s.c_units.push_back(u);
  }
  return s;
}

// One serving launch: the slots `kinds` of every adapter on one input.
struct Launch {
  std::string name;
  int n = 0, cols = 0;
  std::vector<qc::SpectrumApplyTask> tasks;
  std::vector<std::vector<qc::SpectrumApplyTask>> copies;  // the tasks on each copy
  std::vector<const Spectrum*> spectra;
  uint16_t* d_y = nullptr;
  size_t bytes = 0;
};

// Each warp streams a contiguous slice of its own, 512 bytes per load step
// (as the product's warps read their rows' entries), kAhead steps in flight:
// the same bytes as StreamKernel in the product's access pattern.
template <int kAhead>
__global__ void SliceStreamKernel(const uint4* p, size_t n16, unsigned* sink) {
  const size_t warps = static_cast<size_t>(gridDim.x) * (blockDim.x / 32);
  const size_t w = blockIdx.x * static_cast<size_t>(blockDim.x / 32) + threadIdx.x / 32;
  const size_t per = (n16 + warps - 1) / warps;
  const size_t begin = w * per, end = begin + per < n16 ? begin + per : n16;
  unsigned acc = 0;
#pragma unroll kAhead
  for (size_t i = begin + threadIdx.x % 32; i < end; i += 32) {
    const uint4 v = __ldg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

// Streams `bytes` bytes from p (16-byte loads), so that the compiler keeps
// the loads: the bandwidth the product's entries could be read at.
__global__ void StreamKernel(const uint4* p, size_t n16, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n16;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

// GPU time per call of fn: `reps` calls captured in one CUDA graph, replayed
// (after a warm-up replay), so that host launch costs do not count.
float TimeIt(int reps, cudaStream_t stream, const std::function<void()>& fn) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < reps; ++i) fn();
  CK(cudaStreamEndCapture(stream, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaGraphLaunch(exec, stream));
  CK(cudaEventRecord(a, stream));
  CK(cudaGraphLaunch(exec, stream));
  CK(cudaEventRecord(b, stream));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  CK(cudaGraphExecDestroy(exec));
  CK(cudaGraphDestroy(graph));
  return ms * 1000.f / static_cast<float>(reps);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 200;
  double cv = 0.3;
  // --chunks 1: z in chunks of 4 tokens for every launch; 2: for all but
  // down (as serving passed it until the down FWHT wrote chunks).
  int chunks = 0;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps"))
      reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--cv"))
      cv = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--chunks"))
      chunks = std::atoi(argv[++i]);
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf(
      "spectrum_apply_dev: %s, %d SMs; 8 adapters x 4 tokens, rank-64 budget, row cv %.2f, z in "
      "%s\n",
      prop.name, prop.multiProcessorCount, cv,
      chunks == 1   ? "chunks of 4 tokens"
      : chunks == 2 ? "chunks of 4 tokens, but rows for down"
                    : "rows");
  std::mt19937_64 rng(1234);
  // LLaMA-7B projections: (in, out) of q k v o gate up down.
  const int hidden = 4096, inter = 11008;
  const int in_of[7] = {hidden, hidden, hidden, hidden, hidden, hidden, inter};
  const int out_of[7] = {hidden, hidden, hidden, hidden, inter, inter, hidden};
  std::vector<std::vector<Spectrum>> spec(kAdapters);
  for (int a = 0; a < kAdapters; ++a) {
    for (int k = 0; k < 7; ++k) {
      const double mean = 64.0 * (in_of[k] + out_of[k]) / out_of[k];
      spec[a].push_back(MakeSpectrum(out_of[k], in_of[k], mean, cv, rng));
    }
  }
  // z for the two input widths: [32, n] bf16 ~ N(0, 1); token rows shuffled.
  std::normal_distribution<float> nz(0.f, 1.f);
  std::vector<uint16_t> z4(static_cast<size_t>(kTokens) * hidden),
      z11(static_cast<size_t>(kTokens) * inter);
  for (auto& v : z4) v = ToBf(nz(rng));
  for (auto& v : z11) v = ToBf(nz(rng));
  uint16_t *d_z4, *d_z11;
  CK(cudaMalloc(&d_z4, z4.size() * 2));
  CK(cudaMalloc(&d_z11, z11.size() * 2));
  CK(cudaMemcpy(d_z4, z4.data(), z4.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_z11, z11.data(), z11.size() * 2, cudaMemcpyHostToDevice));
  std::vector<int32_t> y_rows(kTokens);
  for (int i = 0; i < kTokens; ++i) y_rows[i] = i;
  std::shuffle(y_rows.begin(), y_rows.end(), rng);
  int32_t* d_y_rows;
  CK(cudaMalloc(&d_y_rows, kTokens * 4));
  CK(cudaMemcpy(d_y_rows, y_rows.data(), kTokens * 4, cudaMemcpyHostToDevice));
  // The same z in chunks of 4 tokens: token p's value of column c at
  // [(p / 4) · 4n + 4c + p % 4] (kernels::ChunkRows).
  auto chunked = [&](const std::vector<uint16_t>& z, int n) {
    std::vector<uint16_t> c(z.size());
    for (int p = 0; p < kTokens; ++p) {
      for (int col = 0; col < n; ++col) {
        c[static_cast<size_t>(p / 4) * 4 * n + 4 * col + p % 4] =
            z[static_cast<size_t>(y_rows[p]) * n + col];
      }
    }
    return c;
  };
  uint16_t *d_zc4, *d_zc11;
  CK(cudaMalloc(&d_zc4, z4.size() * 2));
  CK(cudaMalloc(&d_zc11, z11.size() * 2));
  CK(cudaMemcpy(d_zc4, chunked(z4, hidden).data(), z4.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_zc11, chunked(z11, inter).data(), z11.size() * 2, cudaMemcpyHostToDevice));

  const struct {
    const char* name;
    int first, kinds;
  } groups[4] = {{"q/k/v", 0, 3}, {"o", 3, 1}, {"gate/up", 4, 2}, {"down", 6, 1}};
  std::vector<Launch> launches;
  size_t total_bytes = 0;
  for (const auto& g : groups) {
    Launch l;
    l.name = g.name;
    l.n = in_of[g.first];
    for (int a = 0; a < kAdapters; ++a) {
      int col = 0;
      for (int k = g.first; k < g.first + g.kinds; ++k) {
        const Spectrum& s = spec[a][k];
        l.tasks.push_back({s.c_row_ptr[0], s.c_units[0], s.rows, s.n, col, a * kTokensPer,
                           kTokensPer, static_cast<int32_t>(s.gaps.size())});
        l.spectra.push_back(&s);
        l.bytes += s.bytes();
        col += s.rows;
      }
      l.cols = col;
    }
    for (int c = 0; c < kCopies; ++c) {
      std::vector<qc::SpectrumApplyTask> t = l.tasks;
      for (size_t i = 0; i < t.size(); ++i) {
        t[i].row_ptr = l.spectra[i]->c_row_ptr[c];
        t[i].units = l.spectra[i]->c_units[c];
      }
      l.copies.push_back(std::move(t));
    }
    CK(cudaMalloc(&l.d_y, static_cast<size_t>(kTokens) * l.cols * 2));
    total_bytes += l.bytes;
    launches.push_back(std::move(l));
  }
  std::printf("entries of one layer: %.1f MiB\n", total_bytes / 1048576.0);
  cudaStream_t stream;
  CK(cudaStreamCreate(&stream));
  auto run = [&](const Launch& l, int copy = 0) {
    const std::vector<qc::SpectrumApplyTask>& tasks = l.copies[copy];
    if (chunks == 1 || (chunks == 2 && l.n == hidden)) {
      CK(qc::LaunchSpectrumApply(tasks.data(), static_cast<int>(tasks.size()),
                                 l.n == hidden ? static_cast<const void*>(d_zc4) : d_zc11, 4 * l.n,
                                 l.d_y, l.cols, d_y_rows, qc::DType::kBFloat16, stream, true));
      return;
    }
    CK(qc::LaunchSpectrumApply(tasks.data(), static_cast<int>(tasks.size()),
                               l.n == hidden ? static_cast<const void*>(d_z4) : d_z11, l.n, l.d_y,
                               l.cols, d_y_rows, qc::DType::kBFloat16, stream));
  };
  // The FWHT of 32 rows of width n (serving's SpectrumInput), into a buffer
  // of its own: 4096 = 2^12, 11008 = 172 · 2^6.
  uint16_t *d_x, *d_xh;
  CK(cudaMalloc(&d_x, static_cast<size_t>(kTokens) * inter * 2));
  CK(cudaMalloc(&d_xh, static_cast<size_t>(kTokens) * inter * 2));
  CK(cudaMemcpy(d_x, z11.data(), z11.size() * 2, cudaMemcpyHostToDevice));
  auto fwht = [&](int n, cudaStream_t on) {
    CK(qc::LaunchFwht(d_x, n, d_xh, kTokens, n == hidden ? 1 : 172, n == hidden ? 12 : 6,
                      qc::DType::kBFloat16, 1.f, true, on));
  };
  // A second stream for the FWHT beside the matmul (fork and join events).
  cudaStream_t side;
  cudaEvent_t fork, join;
  CK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  CK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  CK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
  // The base's matmul of each launch, y = x · Wᵀ for a zero W [cols, n] (one
  // per copy of the layer), as LibTorch's matmul calls cuBLAS.
  cublasHandle_t blas;
  if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS ||
      cublasSetStream(blas, stream) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cuBLAS setup failed\n");
    return 1;
  }
  std::vector<std::vector<uint16_t*>> weights;
  for (const Launch& l : launches) {
    weights.emplace_back();
    for (int c = 0; c < kCopies; ++c) {
      uint16_t* w;
      CK(cudaMalloc(&w, static_cast<size_t>(l.cols) * l.n * 2));
      CK(cudaMemset(w, 0, static_cast<size_t>(l.cols) * l.n * 2));
      weights.back().push_back(w);
    }
  }
  auto matmul = [&](size_t li, int copy) {
    const Launch& l = launches[li];
    const float one = 1.f, zero = 0.f;
    if (cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, l.cols, kTokens, l.n, &one, weights[li][copy],
                     CUDA_R_16BF, l.n, d_x, CUDA_R_16BF, l.n, &zero, l.d_y, CUDA_R_16BF, l.cols,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
      std::fprintf(stderr, "cublasGemmEx failed\n");
      std::exit(1);
    }
  };

  // Check every launch against a float64 reference (y starts at zero).
  auto check = [&](const char* what) {
    double worst = 0;
    for (const Launch& l : launches) {
      CK(cudaMemsetAsync(l.d_y, 0, static_cast<size_t>(kTokens) * l.cols * 2, stream));
      run(l);
      std::vector<uint16_t> y(static_cast<size_t>(kTokens) * l.cols);
      CK(cudaMemcpyAsync(y.data(), l.d_y, y.size() * 2, cudaMemcpyDeviceToHost, stream));
      CK(cudaStreamSynchronize(stream));
      const std::vector<uint16_t>& z = l.n == hidden ? z4 : z11;
      double err = 0, scale = 0;
      for (size_t ti = 0; ti < l.tasks.size(); ++ti) {
        const qc::SpectrumApplyTask& t = l.tasks[ti];
        const Spectrum& s = *l.spectra[ti];
        for (int r = 0; r < s.rows; ++r) {
          double acc[kTokensPer] = {};
          int col = 0;
          for (int e = s.row_ptr[r]; e < s.row_ptr[r + 1]; ++e) {
            col += s.gaps[e];
            const double v = Bf(s.values[e]);
            for (int p = 0; p < t.count; ++p) {
              acc[p] += v * Bf(z[static_cast<size_t>(y_rows[t.tok_begin + p]) * l.n + col]);
            }
          }
          for (int p = 0; p < t.count; ++p) {
            const double got =
                Bf(y[static_cast<size_t>(y_rows[t.tok_begin + p]) * l.cols + t.y_col + r]);
            err = std::max(err, std::fabs(got - acc[p]));
            scale = std::max(scale, std::fabs(acc[p]));
          }
        }
      }
      worst = std::max(worst, err / scale);
    }
    std::printf("check %-36s max abs error / max |y| = %.2e %s\n", what, worst,
                worst < 8e-3 ? "ok" : "FAILED");
    return worst < 8e-3;
  };

  bool ok = true;
  struct Variant {
    const char* name;
    qc::SpectrumApplyTuning t;
  };
  auto tuning = [](int lanes, int rows, int diag, int pipeline = 0, int staging = 0) {
    qc::SpectrumApplyTuning t;
    t.staging = staging;
    t.lanes_per_row = lanes;
    t.rows = rows;
    t.diagnostic = diag;
    t.pipeline = pipeline;
    return t;
  };
  const std::vector<Variant> variants = {
      {"default (4 lanes, contiguous, stream)", tuning(0, 0, 0)},
      // The same launches again: equal to the first row once the untimed
      // pass below warms up (without it, 91.8 against 87.7 on an H100).
      {"default again (order check)", tuning(0, 0, 0, 0, 1)},
      {"step pipeline", tuning(0, 0, 0, 1)},
      {"8 lanes, stream", tuning(8, 0, 0)},
      {"8 lanes, strided, step (old default)", tuning(8, 2, 0, 1)},
      {"empty launch", tuning(0, 0, 3)},
      {"staging only", tuning(0, 0, 1)},
      {"all but staging", tuning(0, 0, 2)},
      {"gathers without bank conflicts", tuning(0, 0, 4)},
      {"entries loaded, unused", tuning(0, 0, 5)},
      {"... read in order (coalesced)", tuning(0, 0, 6)},
  };
  for (const Variant& v : variants) {
    if (v.t.diagnostic != 0) continue;
    qc::SetSpectrumApplyTuning(v.t);
    ok &= check(v.name);
  }
  qc::SetSpectrumApplyTuning({});

  // One layer's GPU time per copy, summed over its launches (per-launch
  // figures in *parts): per_copy(li, c) enqueues launch li's work on copy c.
  auto time_layer = [&](const std::function<void(size_t, int)>& per_copy, std::string* parts) {
    float sum = 0;
    parts->clear();
    for (size_t li = 0; li < launches.size(); ++li) {
      const float us = TimeIt(reps, stream,
                              [&] {
                                for (int c = 0; c < kCopies; ++c) per_copy(li, c);
                              }) /
                       kCopies;
      sum += us;
      char buf[32];
      std::snprintf(buf, sizeof buf, " %6.1f", us);
      *parts += buf;
    }
    return sum;
  };
  auto product_only = [&](size_t li, int c) { run(launches[li], c); };
  std::string parts;
  // Time each launch (GPU time per launch, from graph replays) per variant,
  // after one untimed pass (without it the first variant came out ~4 us per
  // layer slow: 91.8 against 87.7 for the same launches timed again).
  (void)time_layer(product_only, &parts);
  std::printf("\n%-36s %9s  %s\n", "variant (one layer, us)", "layer", "q/k/v o gate/up down");
  for (const Variant& v : variants) {
    qc::SetSpectrumApplyTuning(v.t);
    const float sum = time_layer(product_only, &parts);
    std::printf("%-36s %9.1f  %s   (%.0f GB/s)\n", v.name, sum, parts.c_str(),
                total_bytes / (sum * 1e-6) / 1e9);
  }
  qc::SetSpectrumApplyTuning({});
  // The bandwidth reference: the same bytes streamed (one buffer per launch
  // and copy), by the whole grid in order, then as one slice per warp (48
  // warps per SM, as the product).
  {
    unsigned* sink;
    CK(cudaMalloc(&sink, 4));
    std::vector<std::vector<uint8_t*>> bufs(launches.size());
    for (size_t li = 0; li < launches.size(); ++li) {
      for (int c = 0; c < kCopies; ++c) {
        uint8_t* b;
        CK(cudaMalloc(&b, launches[li].bytes + 16));
        bufs[li].push_back(b);
      }
    }
    for (int slices : {0, 2, 8}) {
      const float sum = time_layer(
          [&](size_t li, int c) {
            const uint4* p = reinterpret_cast<const uint4*>(bufs[li][static_cast<size_t>(c)]);
            const size_t n16 = launches[li].bytes / 16;
            if (slices == 2) {
              SliceStreamKernel<2><<<prop.multiProcessorCount * 3, 512, 0, stream>>>(p, n16, sink);
            } else if (slices == 8) {
              SliceStreamKernel<8><<<prop.multiProcessorCount * 3, 512, 0, stream>>>(p, n16, sink);
            } else {
              StreamKernel<<<prop.multiProcessorCount * 4, 512, 0, stream>>>(p, n16, sink);
            }
          },
          &parts);
      CK(cudaGetLastError());
      std::printf("%-36s %9.1f  %s   (%.0f GB/s)\n",
                  slices == 0   ? "stream the same bytes"
                  : slices == 2 ? "stream them, a slice per warp"
                                : "a slice per warp, 8 loads ahead",
                  sum, parts.c_str(), total_bytes / (sum * 1e-6) / 1e9);
    }
    for (auto& v : bufs) {
      for (uint8_t* b : v) CK(cudaFree(b));
    }
    CK(cudaFree(sink));
  }
  // The down projection's FWHT (n = 11008 = 172 · 2^6, the step's 32 rows)
  // into rows and into chunks of 4 tokens (positions y_rows), which must
  // hold the same values.
  {
    uint16_t* d_zc;
    CK(cudaMalloc(&d_zc, static_cast<size_t>(kTokens) * inter * 2));
    CK(qc::LaunchFwht(d_x, inter, d_xh, kTokens, 172, 6, qc::DType::kBFloat16, 1.f, true, stream));
    CK(qc::LaunchFwhtChunks(d_x, inter, d_zc, d_y_rows, kTokens / 4, 172, 6, qc::DType::kBFloat16,
                            1.f, true, stream));
    std::vector<uint16_t> rows_out(static_cast<size_t>(kTokens) * inter),
        chunk_out(rows_out.size());
    CK(cudaMemcpyAsync(rows_out.data(), d_xh, rows_out.size() * 2, cudaMemcpyDeviceToHost, stream));
    CK(cudaMemcpyAsync(chunk_out.data(), d_zc, chunk_out.size() * 2, cudaMemcpyDeviceToHost,
                       stream));
    CK(cudaStreamSynchronize(stream));
    size_t differ = 0;
    for (int p = 0; p < kTokens; ++p) {
      for (int c = 0; c < inter; ++c) {
        differ += chunk_out[static_cast<size_t>(p / 4) * 4 * inter + 4 * c + p % 4] !=
                  rows_out[static_cast<size_t>(y_rows[p]) * inter + c];
      }
    }
    const float t_rows = TimeIt(reps, stream, [&] {
      CK(qc::LaunchFwht(d_x, inter, d_xh, kTokens, 172, 6, qc::DType::kBFloat16, 1.f, true,
                        stream));
    });
    const float t_chunks = TimeIt(reps, stream, [&] {
      CK(qc::LaunchFwhtChunks(d_x, inter, d_zc, d_y_rows, kTokens / 4, 172, 6, qc::DType::kBFloat16,
                              1.f, true, stream));
    });
    std::printf("\ndown FWHT, 32 rows of 11008: rows %.2f us, chunks %.2f us; chunks %s\n", t_rows,
                t_chunks, differ == 0 ? "equal the rows" : "DIFFER");
    ok &= differ == 0;
    CK(cudaFree(d_zc));
  }
  // Each launch after the base's matmul and the FWHT, as serving enqueues
  // them (per copy of the layer): what the product adds to a decode step.
  std::printf("\n%-36s %9s  %s\n", "in sequence (one layer, us)", "layer", "q/k/v o gate/up down");
  // beside: the FWHT on the second stream while the matmul runs (the
  // product waits for both).
  const struct {
    const char* name;
    bool product, beside;
  } sequences[] = {{"matmul, FWHT", false, false},
                   {"matmul, FWHT, product", true, false},
                   {"matmul | FWHT beside", false, true},
                   {"matmul | FWHT beside, then product", true, true},
                   {"matmul, FWHT, product (again)", true, false}};
  for (const auto& seq : sequences) {
    const float sum = time_layer(
        [&](size_t li, int c) {
          if (seq.beside) {
            CK(cudaEventRecord(fork, stream));
            CK(cudaStreamWaitEvent(side, fork, 0));
            fwht(launches[li].n, side);
            CK(cudaEventRecord(join, side));
            matmul(li, c);
            CK(cudaStreamWaitEvent(stream, join, 0));
          } else {
            matmul(li, c);
            fwht(launches[li].n, stream);
          }
          if (seq.product) run(launches[li], c);
        },
        &parts);
    std::printf("%-36s %9.1f  %s\n", seq.name, sum, parts.c_str());
  }
  qc::SetSpectrumApplyTuning({});
  std::printf("%s\n", ok ? "all checks passed" : "CHECKS FAILED");
  return ok ? 0 : 1;
}

// Standalone timing of the RMSNorm + FWHT kernels that give z in rows or in
// chunks of 4 tokens (fwht_cuda.cu), from CUDA-graph replays:
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90,code=sm_90 -I. kernels/dev/norm_chunks_dev.cu \
//     kernels/fwht_cuda.cu kernels/fwht_k_cuda.cu -o /tmp/norm_dev && /tmp/norm_dev
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <vector>

#include "kernels/cuda_launchers.h"

namespace qc = qwha::kernels::cuda;

// Probes of what a cluster launch costs by itself: empty blocks of 256
// threads, plain or in clusters of 4, with 0, 1 or 2 cluster barriers.
template <int kBarriers>
__global__ void __launch_bounds__(256) EmptyKernel(int* sink) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (kBarriers > 0) {
    asm volatile("barrier.cluster.arrive.aligned;\nbarrier.cluster.wait.aligned;" ::: "memory");
  }
  if constexpr (kBarriers > 1) {
    asm volatile("barrier.cluster.arrive.aligned;\nbarrier.cluster.wait.aligned;" ::: "memory");
  }
#endif
  if (threadIdx.x == 1024) *sink = 0;  // never: keeps the kernel
}

template <int kBarriers>
cudaError_t LaunchEmpty(int blocks, int cluster, int* sink, cudaStream_t s) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(256);
  config.stream = s;
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = cluster;
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = 1;
  config.attrs = &attribute;
  config.numAttrs = cluster > 1 ? 1 : 0;
  return cudaLaunchKernelEx(&config, EmptyKernel<kBarriers>, sink);
}

#define CK(x)                                                                \
  do {                                                                       \
    cudaError_t e_ = (x);                                                    \
    if (e_ != cudaSuccess) {                                                 \
      std::printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      return 1;                                                              \
    }                                                                        \
  } while (0)

// GPU us per call: 50 calls captured in a graph, replayed 20 times.
static double GraphUs(cudaStream_t s, const std::function<void()>& fn) {
  fn();
  cudaStreamSynchronize(s);
  cudaGraph_t g;
  cudaGraphExec_t e;
  cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
  for (int i = 0; i < 50; ++i) fn();
  cudaStreamEndCapture(s, &g);
  cudaGraphInstantiate(&e, g, 0);
  cudaGraphLaunch(e, s);
  cudaStreamSynchronize(s);
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  cudaEventRecord(a, s);
  for (int i = 0; i < 20; ++i) cudaGraphLaunch(e, s);
  cudaEventRecord(b, s);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaGraphExecDestroy(e);
  cudaGraphDestroy(g);
  return 1000.0 * ms / (20 * 50);
}

int main() {
  const int n = 4096, rows = 32;
  __nv_bfloat16 *x, *w, *y, *z;
  int32_t* zr;
  CK(cudaMalloc(&x, rows * n * 2));
  CK(cudaMalloc(&w, n * 2));
  CK(cudaMalloc(&y, rows * n * 2));
  CK(cudaMalloc(&z, rows * n * 2 + 4096));
  CK(cudaMalloc(&zr, 4 * rows * 4));
  {
    std::vector<uint16_t> hx(rows * n);
    uint32_t state = 12345;
    for (auto& v : hx) {
      state = state * 1664525u + 1013904223u;
      v = static_cast<uint16_t>(0x3c00 + (state >> 24) - ((state >> 16) & 0x80 ? 0x8000 : 0));
    }
    CK(cudaMemcpy(x, hx.data(), rows * n * 2, cudaMemcpyHostToDevice));
  }
  CK(cudaMemset(w, 0x3f, n * 2));
  std::vector<int32_t> h(rows);
  for (int i = 0; i < rows; ++i) h[i] = (i * 7) % rows;
  CK(cudaMemcpy(zr, h.data(), rows * 4, cudaMemcpyHostToDevice));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  const auto bf = qc::DType::kBFloat16;
  struct Case {
    const char* name;
    std::function<void()> fn;
  };
  const std::vector<Case> cases = {
      {"norm+fwht in rows (32 blocks x 256)",
       [&] { qc::LaunchRmsNormFwht(x, w, y, z, rows, n, 1e-5f, 1.f, bf, s); }},
      {"norm+fwht in chunks (8 chunk + 8 y blocks x 1024)",
       [&] { qc::LaunchNormFwhtChunks(x, w, y, z, zr, rows / 4, rows, n, 1e-5f, 1.f, bf, s); }},
      {"  chunk blocks only (8)",
       [&] { qc::LaunchNormFwhtChunks(x, w, y, z, zr, rows / 4, 0, n, 1e-5f, 1.f, bf, s); }},
      {"  y blocks only (8)",
       [&] { qc::LaunchNormFwhtChunks(x, w, y, z, zr, 0, rows, n, 1e-5f, 1.f, bf, s); }},
      {"  1 chunk block",
       [&] { qc::LaunchNormFwhtChunks(x, w, y, z, zr, 1, 0, n, 1e-5f, 1.f, bf, s); }},
      {"copy+fwht in rows", [&] { qc::LaunchCopyFwht(x, nullptr, y, z, rows, n, 1.f, bf, s); }},
      {"copy+fwht in chunks",
       [&] { qc::LaunchNormFwhtChunks(x, nullptr, y, z, zr, rows / 4, rows, n, 0.f, 1.f, bf, s); }},
      {"norm only (rms_norm_cuda)",
       [&] { qc::LaunchRmsNormForward(x, w, y, rows, n, 1e-5f, bf, s); }},
  };
  {
    int* sink;
    CK(cudaMalloc(&sink, 4));
    const std::vector<Case> probes = {
        {"empty, 64 blocks", [&] { LaunchEmpty<0>(64, 1, sink, s); }},
        {"empty, 64 blocks in clusters of 4", [&] { LaunchEmpty<0>(64, 4, sink, s); }},
        {"  + 1 cluster barrier", [&] { LaunchEmpty<1>(64, 4, sink, s); }},
        {"  + 2 cluster barriers", [&] { LaunchEmpty<2>(64, 4, sink, s); }},
        {"empty, 32 blocks", [&] { LaunchEmpty<0>(32, 1, sink, s); }},
        {"empty, 32 blocks in clusters of 4", [&] { LaunchEmpty<0>(32, 4, sink, s); }},
    };
    for (const Case& c : probes) {
      c.fn();
      CK(cudaStreamSynchronize(s));
      CK(cudaGetLastError());
      std::printf("%-52s %6.2f us\n", c.name, GraphUs(s, c.fn));
    }
  }
  std::vector<uint16_t> first(rows * n), second(rows * n);
  for (int kernel : {0, 1}) {
    qc::SetNormFwhtChunksKernel(kernel);
    std::printf("chunk kernel %d (%s):\n", kernel,
                kernel == 0 ? "clusters of 4 blocks" : "blocks of 4 rows");
    for (const Case& c : cases) {
      c.fn();
      CK(cudaStreamSynchronize(s));
      CK(cudaGetLastError());
      std::printf("  %-52s %6.2f us\n", c.name, GraphUs(s, c.fn));
    }
    // Both kernels give the same chunks, bit for bit.
    CK(cudaMemset(z, 0, rows * n * 2));
    CK(qc::LaunchNormFwhtChunks(x, w, y, z, zr, rows / 4, rows, n, 1e-5f, 1.f, bf, s));
    CK(cudaMemcpy(kernel == 0 ? first.data() : second.data(), z, rows * n * 2,
                  cudaMemcpyDeviceToHost));
  }
  std::printf("chunks of both kernels equal: %s\n", first == second ? "yes" : "NO");
  return first == second ? 0 : 1;
}

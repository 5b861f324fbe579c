// Development harness for the CUDA kernels (llm.c style): checks every launcher
// against a float64 CPU reference on fresh random inputs (outputs poisoned with
// NaN first, so unwritten elements fail) and times the FWHT and dequantization
// against a device-to-device copy of the same bytes. No LibTorch.
//
// Build and run (from the repository root, on a machine with a GPU):
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90,code=sm_90 -I. kernels/dev/kernels_dev.cu \
//     kernels/fwht_cuda.cu kernels/fwht_k_cuda.cu kernels/dequant_cuda.cu \
//     kernels/spectrum_cuda.cu -o /tmp/kernels_dev && /tmp/kernels_dev [--no-bench]
// Exit status 1 if any check fails.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda_launchers.h"
#include "kernels/dev/dev_check.h"
#include "kernels/hadamard_k.h"

using qwha::kernels::cuda::DType;
namespace qk = qwha::kernels;
namespace qc = qwha::kernels::cuda;

namespace {

int g_failures = 0;
std::mt19937_64 g_rng(12345);

const char* Name(DType t) {
  return t == DType::kFloat32 ? "f32" : t == DType::kBFloat16 ? "bf16" : "f16";
}
size_t Size(DType t) { return t == DType::kFloat32 ? 4 : 2; }

// Host <-> storage conversion (round to nearest even, as the device does).
void Encode(const std::vector<double>& x, DType t, std::vector<uint8_t>* out) {
  out->resize(x.size() * Size(t));
  for (size_t i = 0; i < x.size(); ++i) {
    if (t == DType::kFloat32) {
      float f = static_cast<float>(x[i]);
      std::memcpy(out->data() + 4 * i, &f, 4);
    } else if (t == DType::kBFloat16) {
      __nv_bfloat16 b = __float2bfloat16_rn(static_cast<float>(x[i]));
      std::memcpy(out->data() + 2 * i, &b, 2);
    } else {
      __half h = __float2half_rn(static_cast<float>(x[i]));
      std::memcpy(out->data() + 2 * i, &h, 2);
    }
  }
}
std::vector<double> Decode(const std::vector<uint8_t>& b, DType t) {
  std::vector<double> x(b.size() / Size(t));
  for (size_t i = 0; i < x.size(); ++i) {
    if (t == DType::kFloat32) {
      float f;
      std::memcpy(&f, b.data() + 4 * i, 4);
      x[i] = f;
    } else if (t == DType::kBFloat16) {
      __nv_bfloat16 v;
      std::memcpy(&v, b.data() + 2 * i, 2);
      x[i] = __bfloat162float(v);
    } else {
      __half v;
      std::memcpy(&v, b.data() + 2 * i, 2);
      x[i] = __half2float(v);
    }
  }
  return x;
}

std::vector<double> Randn(size_t n) {
  std::normal_distribution<double> d;
  std::vector<double> x(n);
  for (double& v : x) v = d(g_rng);
  return x;
}

// float64 reference: y = scale * x · (H_K ⊗ H_M) (or · (H_K ⊗ H_M)ᵀ).
void RefFwhtRow(const double* x, double* y, int k, int m, bool transpose, double scale) {
  std::vector<double> t(x, x + k * m);
  for (int a = 0; a < k; ++a) {
    double* s = t.data() + a * m;
    for (int h = 1; h < m; h <<= 1)
      for (int i = 0; i < m; i += 2 * h)
        for (int j = i; j < i + h; ++j) {
          const double p = s[j], q = s[j + h];
          s[j] = p + q, s[j + h] = p - q;
        }
  }
  if (k == 1) {
    for (int i = 0; i < m; ++i) y[i] = scale * t[i];
    return;
  }
  const int8_t* h = qk::FindHadamardK(k);
  for (int c = 0; c < k; ++c)
    for (int d = 0; d < m; ++d) {
      double acc = 0;
      for (int a = 0; a < k; ++a) acc += (transpose ? h[c * k + a] : h[a * k + c]) * t[a * m + d];
      y[c * m + d] = scale * acc;
    }
}

double Tolerance(DType t, int n) {
  return t == DType::kFloat32 ? 2e-6 * std::max(1.0, std::log2(n))
                              : (t == DType::kFloat16 ? 2e-3 : 1e-2);
}

void CheckFwht(int k, int log_m, DType t, bool transpose, int64_t rows, int64_t stride_pad) {
  const int m = 1 << log_m, n = k * m;
  const int64_t stride = n + stride_pad;
  const double scale = 1.0 / std::sqrt(static_cast<double>(n));
  std::vector<double> x = Randn(rows * stride);
  std::vector<uint8_t> xin, yout(rows * n * Size(t));
  Encode(x, t, &xin);
  const std::vector<double> xq = Decode(xin, t);  // what the kernel sees
  void *din, *dout;
  CK(cudaMalloc(&din, xin.size()));
  CK(cudaMalloc(&dout, yout.size()));
  CK(cudaMemcpy(din, xin.data(), xin.size(), cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xff, yout.size()));  // NaN in every dtype
  CK(qc::LaunchFwht(din, stride, dout, rows, k, log_m, t, static_cast<float>(scale), transpose, 0));
  CK(cudaDeviceSynchronize());
  CK(cudaMemcpy(yout.data(), dout, yout.size(), cudaMemcpyDeviceToHost));
  const std::vector<double> y = Decode(yout, t);
  std::vector<double> ref(n);
  double err = 0, norm = 0;
  for (int64_t r = 0; r < rows; ++r) {
    RefFwhtRow(xq.data() + r * stride, ref.data(), k, m, transpose, scale);
    for (int i = 0; i < n; ++i) {
      const double d = y[r * n + i] - ref[i];
      err += std::isfinite(d) ? d * d : 1e300;
      norm += ref[i] * ref[i];
    }
  }
  const double rel = std::sqrt(err / norm);
  const bool ok = rel < Tolerance(t, n);
  if (!ok) ++g_failures;
  if (!ok || n >= 4096 || stride_pad)
    std::printf("%s fwht n=%6d (K=%3d M=%5d) %-4s T=%d rows=%lld pad=%lld rel_err=%.2e\n",
                ok ? "ok  " : "FAIL", n, k, m, Name(t), transpose, (long long)rows,
                (long long)stride_pad, rel);
  CK(cudaFree(din));
  CK(cudaFree(dout));
}

// ---- dequant
void Pack(const std::vector<int>& codes, int64_t rows, int64_t cols, int bits,
          std::vector<uint32_t>* packed) {
  const int64_t words = (cols + 31) / 32 * bits;
  packed->assign(rows * words, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i) {
      const uint64_t bit = i * bits;
      const uint32_t v = codes[r * cols + i];
      (*packed)[r * words + bit / 32] |= v << (bit % 32);
      if (bit % 32 + bits > 32) (*packed)[r * words + bit / 32 + 1] |= v >> (32 - bit % 32);
    }
}

void CheckDequant(int bits, int64_t rows, int64_t cols, int g, DType pdt, DType odt, bool with_add,
                  DType adt) {
  std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
  std::vector<int> codes(rows * cols);
  for (int& c : codes) c = code(g_rng);
  std::vector<uint32_t> packed;
  Pack(codes, rows, cols, bits, &packed);
  const int64_t groups = cols / g;
  std::vector<double> s(rows * groups), z(rows * groups);
  std::uniform_real_distribution<double> us(0.01, 0.2);
  for (int64_t i = 0; i < rows * groups; ++i) s[i] = us(g_rng), z[i] = code(g_rng);
  std::vector<uint8_t> sb, zb, ab, ob(rows * cols * Size(odt));
  Encode(s, pdt, &sb);
  Encode(z, pdt, &zb);
  const std::vector<double> sq = Decode(sb, pdt), zq = Decode(zb, pdt);
  std::vector<double> add = Randn(rows * cols);
  Encode(add, adt, &ab);
  const std::vector<double> aq = Decode(ab, adt);
  void *dp, *ds, *dz, *da, *dout;
  CK(cudaMalloc(&dp, packed.size() * 4 + 16));
  CK(cudaMalloc(&ds, sb.size()));
  CK(cudaMalloc(&dz, zb.size()));
  CK(cudaMalloc(&da, ab.size()));
  CK(cudaMalloc(&dout, ob.size()));
  CK(cudaMemcpy(dp, packed.data(), packed.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(ds, sb.data(), sb.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dz, zb.data(), zb.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(da, ab.data(), ab.size(), cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xff, ob.size()));
  CK(qc::LaunchDequantize(static_cast<int32_t*>(dp), rows, cols, bits, g, ds, dz, pdt,
                          with_add ? da : nullptr, adt, dout, odt, 0));
  CK(cudaDeviceSynchronize());
  CK(cudaMemcpy(ob.data(), dout, ob.size(), cudaMemcpyDeviceToHost));
  const std::vector<double> o = Decode(ob, odt);
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t gi = r * groups + c / g;
      double ref = (codes[r * cols + c] - zq[gi]) * sq[gi];
      if (with_add) ref += aq[r * cols + c];
      const double d = std::fabs(o[r * cols + c] - ref) / (1.0 + std::fabs(ref));
      worst = std::isfinite(d) ? std::max(worst, d) : 1e300;
    }
  const double tol = odt == DType::kFloat32 ? 1e-6 : (odt == DType::kFloat16 ? 1e-3 : 8e-3);
  const bool ok = worst < tol;
  if (!ok) ++g_failures;
  if (!ok)
    std::printf("FAIL dequant b=%d %lldx%lld g=%d %s->%s add=%d(%s) err=%.2e\n", bits,
                (long long)rows, (long long)cols, g, Name(pdt), Name(odt), with_add, Name(adt),
                worst);
  for (void* p : {dp, ds, dz, da, dout}) CK(cudaFree(p));
}

void CheckSpectrum() {
  const int64_t dense_n = 1 << 16, count = 5000;
  std::vector<int64_t> perm(dense_n);
  for (int64_t i = 0; i < dense_n; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), g_rng);
  perm.resize(count);
  std::vector<float> vals(count), dense(dense_n);
  for (auto& v : vals) v = static_cast<float>(Randn(1)[0]);
  for (auto& v : dense) v = static_cast<float>(Randn(1)[0]);
  int64_t* di;
  float *dv, *dd, *dg;
  CK(cudaMalloc(&di, count * 8));
  CK(cudaMalloc(&dv, count * 4));
  CK(cudaMalloc(&dg, count * 4));
  CK(cudaMalloc(&dd, dense_n * 4));
  CK(cudaMemcpy(di, perm.data(), count * 8, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, vals.data(), count * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dd, dense.data(), dense_n * 4, cudaMemcpyHostToDevice));
  CK(qc::LaunchSpectrumGather(dd, di, count, dg, DType::kFloat32, 0));
  CK(cudaMemset(dd, 0, dense_n * 4));
  CK(qc::LaunchSpectrumScatter(dv, di, count, dd, DType::kFloat32, 0));
  CK(cudaDeviceSynchronize());
  std::vector<float> g(count), d2(dense_n);
  CK(cudaMemcpy(g.data(), dg, count * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(d2.data(), dd, dense_n * 4, cudaMemcpyDeviceToHost));
  int bad = 0;
  std::vector<float> expect(dense_n, 0.f);
  for (int64_t t = 0; t < count; ++t) {
    bad += g[t] != dense[perm[t]];
    expect[perm[t]] = vals[t];
  }
  for (int64_t i = 0; i < dense_n; ++i) bad += d2[i] != expect[i];
  std::printf("%s spectrum scatter/gather (%d mismatches)\n", bad ? "FAIL" : "ok  ", bad);
  if (bad) ++g_failures;
  for (void* p : {(void*)di, (void*)dv, (void*)dd, (void*)dg}) CK(cudaFree(p));
}

// ---- timing: median of event-timed runs, rotating buffers larger than L2.
template <typename F>
float MedianMs(F&& f, int reps = 25) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) f(i);
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a));
    f(i);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float t;
    CK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return ms[ms.size() / 2];
}

void BenchFwht(int k, int log_m, DType t, int64_t bytes_target) {
  const int64_t n = static_cast<int64_t>(k) << log_m;
  const int64_t rows = bytes_target / (n * Size(t));
  const int64_t bytes = rows * n * Size(t);
  constexpr int kSets = 2;  // 2 x (in + out) x 256 MB >> 50 MB L2
  std::vector<void*> in(kSets), out(kSets);
  for (int i = 0; i < kSets; ++i) {
    CK(cudaMalloc(&in[i], bytes));
    CK(cudaMalloc(&out[i], bytes));
    CK(cudaMemset(in[i], 0x3c, bytes));  // finite, non-zero values in every dtype
  }
  const float copy = MedianMs([&](int i) {
    CK(cudaMemcpyAsync(out[i % kSets], in[i % kSets], bytes, cudaMemcpyDeviceToDevice));
  });
  const float fwht = MedianMs([&](int i) {
    CK(qc::LaunchFwht(in[i % kSets], n, out[i % kSets], rows, k, log_m, t, 1.f, false, 0));
  });
  std::printf(
      "bench fwht n=%6lld (K=%3d) %-4s rows=%7lld  %.3f ms  %6.0f GB/s  copy %6.0f GB/s  "
      "ratio %.2f\n",
      (long long)n, k, Name(t), (long long)rows, fwht, 2.0 * bytes / fwht / 1e6,
      2.0 * bytes / copy / 1e6, copy / fwht);
  for (int i = 0; i < kSets; ++i) {
    CK(cudaFree(in[i]));
    CK(cudaFree(out[i]));
  }
}

void BenchDequant(int bits, int64_t rows, int64_t cols, DType odt) {
  const int64_t words = (cols + 31) / 32 * bits, groups = cols / 64;
  void *p, *s, *z, *o, *o2;
  CK(cudaMalloc(&p, rows * words * 4));
  CK(cudaMalloc(&s, rows * groups * 2));
  CK(cudaMalloc(&z, rows * groups * 2));
  CK(cudaMalloc(&o, rows * cols * Size(odt)));
  CK(cudaMalloc(&o2, rows * cols * Size(odt)));
  CK(cudaMemset(p, 0x5a, rows * words * 4));
  CK(cudaMemset(s, 0x3c, rows * groups * 2));
  CK(cudaMemset(z, 0x40, rows * groups * 2));
  const int64_t bytes = rows * words * 4 + 2 * rows * groups * 2 + rows * cols * Size(odt);
  const float copy =
      MedianMs([&](int) { CK(cudaMemcpyAsync(o2, o, bytes / 2, cudaMemcpyDeviceToDevice)); });
  const float ms = MedianMs([&](int) {
    CK(qc::LaunchDequantize(static_cast<int32_t*>(p), rows, cols, bits, 64, s, z, DType::kFloat16,
                            nullptr, DType::kFloat32, o, odt, 0));
  });
  std::printf(
      "bench dequant b=%d %lldx%lld ->%-4s %.3f ms  %6.0f GB/s  copy %6.0f GB/s  ratio %.2f\n",
      bits, (long long)rows, (long long)cols, Name(odt), ms, bytes / ms / 1e6, bytes / copy / 1e6,
      copy / ms);
  for (void* q : {p, s, z, o, o2}) CK(cudaFree(q));
}

}  // namespace

// Usage: kernels_dev [--no-bench | --bench-only | --one K LOG2_M]
// (--one: a single bf16 FWHT benchmark, e.g. under ncu).
int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const bool bench = mode != "--no-bench";
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  if (mode == "--one" && argc == 4) {
    BenchFwht(std::atoi(argv[2]), std::atoi(argv[3]), DType::kBFloat16, 256 << 20);
    return 0;
  }
  if (mode != "--bench-only") {
    const DType dtypes[] = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};
    for (DType t : dtypes)
      for (bool tr : {false, true}) {
        for (int lm = 0; lm <= 15; ++lm) CheckFwht(1, lm, t, tr, lm >= 12 ? 5 : 37, 0);
        for (const qk::HadamardK& hk : qk::kHadamardKs)
          for (int lm = 0; (hk.k << lm) <= 32768; ++lm)
            CheckFwht(hk.k, lm, t, tr, (hk.k << lm) > 4096 ? 3 : 9, 0);
      }
    for (DType t : dtypes) {  // row strides and a row count that leaves a partial block
      CheckFwht(1, 11, t, false, 7, 64);
      CheckFwht(172, 6, t, true, 3, 8);
      CheckFwht(1, 4, t, false, 129, 8);
    }
    for (int bits : {2, 3, 4})
      for (DType pdt : dtypes)
        for (DType odt : dtypes) {
          CheckDequant(bits, 5, 256, 64, pdt, odt, false, DType::kFloat32);
          CheckDequant(bits, 3, 100, 20, pdt, odt, true, odt);
          CheckDequant(bits, 4, 96, 32, pdt, odt, true, DType::kBFloat16);
          CheckDequant(bits, 2, 64, 8, pdt, odt, true, DType::kFloat16);
        }
    std::printf("%s dequant checks\n", g_failures ? "FAIL" : "ok  ");
    CheckSpectrum();
  }
  if (bench) {
    for (int lm = 11; lm <= 15; ++lm) BenchFwht(1, lm, DType::kBFloat16, 256 << 20);
    for (int lm = 11; lm <= 14; ++lm) BenchFwht(1, lm, DType::kFloat32, 256 << 20);
    for (auto [k, lm] : std::vector<std::pair<int, int>>{{12, 8},
                                                         {40, 7},
                                                         {172, 6},
                                                         {28, 9},
                                                         {108, 7},
                                                         {12, 11},
                                                         {60, 9},
                                                         {172, 7},
                                                         {12, 10},
                                                         {60, 8},
                                                         {36, 9}})
      BenchFwht(k, lm, DType::kBFloat16, 256 << 20);
    BenchDequant(4, 8192, 8192, DType::kBFloat16);
    BenchDequant(3, 8192, 8192, DType::kBFloat16);
    BenchDequant(2, 8192, 8192, DType::kBFloat16);
  }
  std::printf("%d failure(s)\n", g_failures);
  return g_failures ? 1 : 0;
}

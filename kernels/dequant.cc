// Packed codes: packing, unpacking, dequantization (CPU), and dispatch to the
// CUDA launcher. Layout and formula: dequant.h.
//
// Without QWHA_WITH_CUDA a CUDA tensor is handled by copying the operands to
// the CPU, dequantizing there, and copying the result back (correct, slow).
#include "kernels/dequant.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"

#ifdef QWHA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "kernels/cuda_dtype.h"
#include "kernels/cuda_launchers.h"
#endif

namespace qwha::kernels {
namespace {

bool IsParamDtype(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16;
}

std::string ShapeString(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) absl::StrAppend(&s, i ? ", " : "", t.size(i));
  return s + "]";
}

// Code i of a packed row: bits [i*b, i*b + b) of the little-endian stream.
inline uint32_t ReadCode(const uint32_t* row, int64_t i, int bits) {
  const int64_t bit = i * bits;
  const int64_t w = bit >> 5;
  const int off = static_cast<int>(bit & 31);
  uint32_t v = row[w] >> off;
  if (off + bits > 32) v |= row[w + 1] << (32 - off);
  return v & ((1u << bits) - 1);
}

// The 32 codes of one run (b words) with a compile-time width: fixed shifts.
template <int kBits>
void DecodeRun(const uint32_t* w, uint8_t* codes) {
  for (int i = 0; i < 32; ++i) {
    const int bit = i * kBits, off = bit & 31;
    uint32_t v = w[bit >> 5] >> off;
    if (off + kBits > 32) v |= w[(bit >> 5) + 1] << (32 - off);
    codes[i] = static_cast<uint8_t>(v & ((1u << kBits) - 1));
  }
}

void DecodeRow(const uint32_t* row, int64_t cols, int bits, uint8_t* codes) {
  for (int64_t j = 0; j * 32 < cols; ++j) {
    const uint32_t* w = row + j * bits;
    uint8_t* c = codes + j * 32;
    if (bits == 2)
      DecodeRun<2>(w, c);
    else if (bits == 3)
      DecodeRun<3>(w, c);
    else
      DecodeRun<4>(w, c);
  }
}

template <typename out_t, typename add_t>
void DequantizeCpu(const uint32_t* packed, int64_t rows, int64_t cols, int bits, int group_size,
                   const float* scales, const float* zeros, const add_t* add, out_t* out) {
  const int64_t words = PackedWordsPerRow(cols, bits);
  const int64_t groups = cols / group_size;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> codes((cols + 31) / 32 * 32);
    for (int64_t r = begin; r < end; ++r) {
      DecodeRow(packed + r * words, cols, bits, codes.data());
      for (int64_t g = 0; g < groups; ++g) {
        const float s = scales[r * groups + g];
        const float z = zeros[r * groups + g];
        const int64_t c0 = g * group_size;
        out_t* o = out + r * cols + c0;
        const add_t* ad = add != nullptr ? add + r * cols + c0 : nullptr;
        for (int64_t c = 0; c < group_size; ++c) {
          float v = (static_cast<float>(codes[c0 + c]) - z) * s;
          if (ad != nullptr) v += static_cast<float>(ad[c]);
          o[c] = static_cast<out_t>(v);
        }
      }
    }
  });
}

#ifdef QWHA_WITH_CUDA

torch::Tensor DequantizeCuda(const torch::Tensor& packed, const torch::Tensor& scales,
                             const torch::Tensor& zeros, int bits, int group_size, int64_t cols,
                             torch::ScalarType out_dtype, const torch::Tensor& add) {
  // 16-byte vector loads: a contiguous view at an odd offset is copied.
  auto aligned = [](torch::Tensor t) {
    t = t.contiguous();
    return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 ? t : t.clone();
  };
  torch::Tensor p = aligned(packed);
  torch::Tensor s = scales.contiguous();
  // One parameter dtype in the kernel; zeros hold small integers (exact).
  torch::Tensor z = zeros.to(s.scalar_type()).contiguous();
  torch::Tensor a;
  if (add.defined()) {
    a = aligned(IsParamDtype(add.scalar_type()) ? add : add.to(torch::kFloat32));
  }
  torch::Tensor out = torch::empty({p.size(0), cols}, p.options().dtype(out_dtype));
  if (out.numel() == 0) return out;
  const cudaError_t err = cuda::LaunchDequantize(
      p.data_ptr<int32_t>(), p.size(0), cols, bits, group_size, s.data_ptr(), z.data_ptr(),
      ToCudaDType(s.scalar_type()), a.defined() ? a.data_ptr() : nullptr,
      a.defined() ? ToCudaDType(a.scalar_type()) : cuda::DType::kFloat32, out.data_ptr(),
      ToCudaDType(out_dtype), at::cuda::getCurrentCUDAStream(p.device().index()).stream());
  TORCH_CHECK(err == cudaSuccess,
              "qwha::kernels::Dequantize: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}
#endif  // QWHA_WITH_CUDA

}  // namespace

int64_t PackedWordsPerRow(int64_t cols, int bits) { return (cols + 31) / 32 * bits; }

torch::Tensor PackCodes(const torch::Tensor& codes, int bits) {
  TORCH_CHECK(bits >= 2 && bits <= 4, "qwha::kernels::PackCodes: bits must be 2, 3 or 4, got ",
              bits);
  TORCH_CHECK(codes.defined() && codes.dim() == 2,
              "qwha::kernels::PackCodes: codes must be a 2-D tensor");
  TORCH_CHECK(!c10::isFloatingType(codes.scalar_type()) && !codes.is_complex() &&
                  codes.scalar_type() != torch::kBool,
              "qwha::kernels::PackCodes: codes must have an integer dtype");
  torch::Tensor c = codes.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t rows = c.size(0), cols = c.size(1);
  if (c.numel() > 0) {
    const int64_t lo = c.min().item<int64_t>(), hi = c.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < (int64_t{1} << bits),
                "qwha::kernels::PackCodes: codes must be in [0, ", (1 << bits), "), got [", lo,
                ", ", hi, "]");
  }
  const int64_t words = PackedWordsPerRow(cols, bits);
  torch::Tensor packed = torch::zeros({rows, words}, torch::kInt32);
  const int64_t* src = c.data_ptr<int64_t>();
  uint32_t* dst = reinterpret_cast<uint32_t*>(packed.data_ptr<int32_t>());
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      uint32_t* row = dst + r * words;
      for (int64_t i = 0; i < cols; ++i) {
        const uint32_t v = static_cast<uint32_t>(src[r * cols + i]);
        const int64_t bit = i * bits;
        const int off = static_cast<int>(bit & 31);
        row[bit >> 5] |= v << off;
        if (off + bits > 32) row[(bit >> 5) + 1] |= v >> (32 - off);
      }
    }
  });
  return packed.to(codes.device());
}

torch::Tensor UnpackCodes(const torch::Tensor& packed, int bits, int64_t cols) {
  TORCH_CHECK(bits >= 2 && bits <= 4, "qwha::kernels::UnpackCodes: bits must be 2, 3 or 4, got ",
              bits);
  TORCH_CHECK(packed.defined() && packed.dim() == 2 && packed.scalar_type() == torch::kInt32,
              "qwha::kernels::UnpackCodes: packed must be a 2-D int32 tensor");
  TORCH_CHECK(cols >= 0 && packed.size(1) == PackedWordsPerRow(cols, bits),
              "qwha::kernels::UnpackCodes: packed has ", packed.size(1),
              " words per row, expected ", PackedWordsPerRow(cols, bits), " for cols = ", cols,
              ", bits = ", bits);
  torch::Tensor p = packed.to(torch::kCPU).contiguous();
  const int64_t rows = p.size(0), words = p.size(1);
  torch::Tensor codes = torch::empty({rows, cols}, torch::kUInt8);
  const uint32_t* src = reinterpret_cast<const uint32_t*>(p.data_ptr<int32_t>());
  uint8_t* dst = codes.data_ptr<uint8_t>();
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t i = 0; i < cols; ++i) {
        dst[r * cols + i] = static_cast<uint8_t>(ReadCode(src + r * words, i, bits));
      }
    }
  });
  return codes.to(packed.device());
}

absl::Status ValidateDequantizeInput(const torch::Tensor& packed, const torch::Tensor& scales,
                                     const torch::Tensor& zeros, int bits, int group_size,
                                     int64_t cols) {
  using absl::InvalidArgumentError;
  using absl::StrCat;
  if (bits < 2 || bits > 4)
    return InvalidArgumentError(StrCat("bits must be 2, 3 or 4, got ", bits));
  if (group_size <= 0) {
    return InvalidArgumentError(StrCat("group_size must be positive, got ", group_size));
  }
  if (cols < 0 || cols % group_size != 0) {
    return InvalidArgumentError(
        StrCat("cols = ", cols, " must be a non-negative multiple of group_size = ", group_size));
  }
  if (!packed.defined()) return InvalidArgumentError("packed is undefined");
  if (packed.dim() != 2 || packed.scalar_type() != torch::kInt32) {
    return InvalidArgumentError(StrCat("packed must be a 2-D int32 tensor, got ",
                                       c10::toString(packed.scalar_type()), " ",
                                       ShapeString(packed)));
  }
  if (!packed.is_cpu() && !packed.is_cuda()) {
    return InvalidArgumentError(StrCat("packed is on unsupported device ", packed.device().str()));
  }
  const int64_t rows = packed.size(0);
  if (packed.size(1) != PackedWordsPerRow(cols, bits)) {
    return InvalidArgumentError(StrCat("packed has ", packed.size(1), " words per row, expected ",
                                       PackedWordsPerRow(cols, bits), " for cols = ", cols,
                                       ", bits = ", bits));
  }
  const int64_t groups = cols / group_size;
  for (const auto& [name, t] :
       {std::pair<const char*, const torch::Tensor*>{"scales", &scales}, {"zeros", &zeros}}) {
    if (!t->defined()) return InvalidArgumentError(StrCat(name, " is undefined"));
    if (t->dim() != 2 || t->size(0) != rows || t->size(1) != groups) {
      return InvalidArgumentError(
          StrCat(name, " must be [", rows, ", ", groups, "], got ", ShapeString(*t)));
    }
    if (!IsParamDtype(t->scalar_type())) {
      return InvalidArgumentError(StrCat(name, " must be float16, bfloat16 or float32, got ",
                                         c10::toString(t->scalar_type())));
    }
    if (t->device() != packed.device()) {
      return InvalidArgumentError(
          StrCat(name, " is on ", t->device().str(), " but packed is on ", packed.device().str()));
    }
  }
  return absl::OkStatus();
}

torch::Tensor Dequantize(const torch::Tensor& packed, const torch::Tensor& scales,
                         const torch::Tensor& zeros, int bits, int group_size, int64_t cols,
                         torch::ScalarType out_dtype, const torch::Tensor& add) {
  const absl::Status valid = ValidateDequantizeInput(packed, scales, zeros, bits, group_size, cols);
  TORCH_CHECK(valid.ok(), "qwha::kernels::Dequantize: ", std::string(valid.message()));
  TORCH_CHECK(IsParamDtype(out_dtype),
              "qwha::kernels::Dequantize: out_dtype must be float32, bfloat16 or float16, got ",
              c10::toString(out_dtype));
  const int64_t rows = packed.size(0);
  if (add.defined()) {
    TORCH_CHECK(add.dim() == 2 && add.size(0) == rows && add.size(1) == cols,
                "qwha::kernels::Dequantize: add must be [", rows, ", ", cols, "], got ",
                ShapeString(add));
    TORCH_CHECK(c10::isFloatingType(add.scalar_type()),
                "qwha::kernels::Dequantize: add must have a float dtype, got ",
                c10::toString(add.scalar_type()));
    TORCH_CHECK(add.device() == packed.device(), "qwha::kernels::Dequantize: add is on ",
                add.device().str(), " but packed is on ", packed.device().str());
  }
#ifdef QWHA_WITH_CUDA
  if (packed.is_cuda()) {
    return DequantizeCuda(packed, scales, zeros, bits, group_size, cols, out_dtype, add);
  }
#endif
  torch::Tensor p = packed.to(torch::kCPU).contiguous();
  torch::Tensor s = scales.to(torch::kCPU, torch::kFloat32).contiguous();
  torch::Tensor z = zeros.to(torch::kCPU, torch::kFloat32).contiguous();
  torch::Tensor a = add.defined() ? add.to(torch::kCPU).contiguous() : torch::Tensor();
  torch::Tensor out = torch::empty({rows, cols}, torch::TensorOptions().dtype(out_dtype));
  const uint32_t* pw = reinterpret_cast<const uint32_t*>(p.data_ptr<int32_t>());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_dtype, "DequantizeCpu", [&] {
    using out_t = scalar_t;
    if (!a.defined()) {
      DequantizeCpu<out_t, float>(pw, rows, cols, bits, group_size, s.data_ptr<float>(),
                                  z.data_ptr<float>(), nullptr, out.data_ptr<out_t>());
      return;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, a.scalar_type(), "DequantizeAdd", [&] {
          DequantizeCpu<out_t, scalar_t>(pw, rows, cols, bits, group_size, s.data_ptr<float>(),
                                         z.data_ptr<float>(), a.data_ptr<scalar_t>(),
                                         out.data_ptr<out_t>());
        });
  });
  return out.to(packed.device());
}

}  // namespace qwha::kernels

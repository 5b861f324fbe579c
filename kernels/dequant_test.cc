// Packing round trips, the bit layout of dequant.h, and Dequantize against a
// float64 reference, on the CPU and (when available) on CUDA.
#include "kernels/dequant.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/test_devices.h"

namespace qwha::kernels {
namespace {

torch::Tensor RandomCodes(int64_t rows, int64_t cols, int bits) {
  return torch::randint(0, 1 << bits, {rows, cols}, torch::kInt64);
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64))
      .abs()
      .max()
      .item<double>();
}

TEST(PackTest, WordsPerRow) {
  EXPECT_EQ(PackedWordsPerRow(32, 4), 4);
  EXPECT_EQ(PackedWordsPerRow(33, 3), 6);
  EXPECT_EQ(PackedWordsPerRow(1, 2), 2);
  EXPECT_EQ(PackedWordsPerRow(0, 3), 0);
  EXPECT_EQ(PackedWordsPerRow(4096, 3), 384);
}

TEST(PackTest, BitLayoutIsLittleEndianStream) {
  // 3-bit codes 0..7 repeated: code i at bits [3i, 3i+3); code 10 straddles
  // words 0 and 1 (bits 30..32).
  torch::Tensor codes = torch::arange(64, torch::kInt64).remainder(8).view({1, 64});
  torch::Tensor packed = PackCodes(codes, 3);
  ASSERT_EQ(packed.sizes(), (std::vector<int64_t>{1, 6}));
  const uint32_t* w = reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>());
  uint64_t expected0 = 0;
  for (int i = 0; i < 21; ++i) expected0 |= static_cast<uint64_t>(i % 8) << (3 * i);
  EXPECT_EQ(w[0], static_cast<uint32_t>(expected0));
  EXPECT_EQ(w[1] & 0x7fffffffu, static_cast<uint32_t>(expected0 >> 32));
  // 4-bit: nibbles in order.
  torch::Tensor nib = torch::arange(16, torch::kInt64).view({1, 16});
  EXPECT_EQ(static_cast<uint32_t>(PackCodes(nib, 4)[0][0].item<int32_t>()), 0x76543210u);
}

TEST(PackTest, RoundTripAllBitsOddCols) {
  torch::manual_seed(1);
  for (torch::Device dev : Devices()) {
    for (int bits : {2, 3, 4}) {
      for (int64_t cols : {1, 5, 31, 32, 33, 95, 100, 4096}) {
        torch::Tensor codes = RandomCodes(7, cols, bits).to(dev);
        torch::Tensor packed = PackCodes(codes, bits);
        ASSERT_EQ(packed.scalar_type(), torch::kInt32);
        ASSERT_EQ(packed.device(), dev);
        ASSERT_EQ(packed.size(1), PackedWordsPerRow(cols, bits));
        torch::Tensor back = UnpackCodes(packed, bits, cols);
        ASSERT_EQ(back.scalar_type(), torch::kUInt8);
        EXPECT_TRUE(torch::equal(back.to(torch::kCPU, torch::kInt64), codes.cpu()))
            << "bits " << bits << " cols " << cols;
      }
    }
  }
}

TEST(PackTest, RejectsBadInput) {
  EXPECT_THROW(PackCodes(torch::zeros({2, 4}, torch::kInt64), 5), c10::Error);
  EXPECT_THROW(PackCodes(torch::full({2, 4}, 4, torch::kInt64), 2), c10::Error);
  EXPECT_THROW(PackCodes(torch::full({2, 4}, -1, torch::kInt64), 2), c10::Error);
  EXPECT_THROW(PackCodes(torch::zeros({8}, torch::kInt64), 2), c10::Error);
  EXPECT_THROW(UnpackCodes(torch::zeros({2, 3}, torch::kInt32), 4, 32), c10::Error);
}

// float64 reference of dequant.h's formula.
torch::Tensor RefDequant(const torch::Tensor& codes, const torch::Tensor& scales,
                         const torch::Tensor& zeros, int group_size) {
  torch::Tensor s = scales.to(torch::kCPU, torch::kFloat64).repeat_interleave(group_size, 1);
  torch::Tensor z = zeros.to(torch::kCPU, torch::kFloat64).repeat_interleave(group_size, 1);
  return (codes.to(torch::kCPU, torch::kFloat64) - z) * s;
}

double Tolerance(torch::ScalarType t) {
  return t == torch::kFloat32 ? 1e-6 : (t == torch::kFloat16 ? 1e-3 : 8e-3);
}

TEST(DequantizeTest, MatchesReferenceAllDtypes) {
  torch::manual_seed(2);
  for (torch::Device dev : Devices()) {
    for (int bits : {2, 3, 4}) {
      for (auto [cols, group] : std::vector<std::pair<int64_t, int>>{
               {64, 64}, {96, 32}, {200, 40}, {40, 8}, {4096, 128}, {11008, 64}}) {
        for (torch::ScalarType pdt : {torch::kFloat16, torch::kBFloat16, torch::kFloat32}) {
          for (torch::ScalarType odt : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
            const int64_t rows = 5, groups = cols / group;
            torch::Tensor codes = RandomCodes(rows, cols, bits);
            torch::Tensor scales = (torch::rand({rows, groups}) * 0.1 + 0.01).to(pdt);
            torch::Tensor zeros =
                torch::randint(0, 1 << bits, {rows, groups}, torch::kInt64).to(pdt);
            torch::Tensor packed = PackCodes(codes, bits);
            ASSERT_TRUE(ValidateDequantizeInput(packed.to(dev), scales.to(dev), zeros.to(dev), bits,
                                                group, cols)
                            .ok());
            torch::Tensor out =
                Dequantize(packed.to(dev), scales.to(dev), zeros.to(dev), bits, group, cols, odt);
            ASSERT_EQ(out.scalar_type(), odt);
            ASSERT_EQ(out.device(), dev);
            torch::Tensor ref = RefDequant(codes, scales, zeros, group);
            // Relative to the largest |w| (≈ 1.6): one rounding to odt.
            EXPECT_LE(MaxAbsDiff(out, ref), Tolerance(odt) * 2)
                << "bits " << bits << " cols " << cols << " " << pdt << "->" << odt << " " << dev;
          }
        }
      }
    }
  }
}

TEST(DequantizeTest, FusedAdd) {
  torch::manual_seed(3);
  for (torch::Device dev : Devices()) {
    const int64_t rows = 6, cols = 160;
    const int group = 32, bits = 3;
    torch::Tensor codes = RandomCodes(rows, cols, bits);
    torch::Tensor scales = (torch::rand({rows, cols / group}) + 0.5).to(torch::kFloat16);
    torch::Tensor zeros = torch::full({rows, cols / group}, 4.0).to(torch::kFloat16);
    torch::Tensor packed = PackCodes(codes, bits).to(dev);
    torch::Tensor ref_deq = RefDequant(codes, scales, zeros, group);
    for (torch::ScalarType adt :
         {torch::kFloat32, torch::kBFloat16, torch::kFloat16, torch::kFloat64}) {
      for (torch::ScalarType odt : {torch::kFloat32, torch::kBFloat16}) {
        torch::Tensor add = torch::randn({rows, cols}, torch::kFloat64).to(adt);
        torch::Tensor out =
            Dequantize(packed, scales.to(dev), zeros.to(dev), bits, group, cols, odt, add.to(dev));
        torch::Tensor ref = ref_deq + add.to(torch::kFloat64);
        // Sum in float32 then one rounding to odt (|w| <= ~16 here).
        EXPECT_LE(MaxAbsDiff(out, ref), odt == torch::kFloat32 ? 1e-5 : 0.13)
            << adt << "->" << odt << " on " << dev;
      }
    }
  }
}

TEST(DequantizeTest, NonContiguousInputs) {
  for (torch::Device dev : Devices()) {
    const int64_t rows = 4, cols = 64;
    torch::Tensor codes = RandomCodes(rows, cols, 4);
    torch::Tensor packed = PackCodes(codes, 4).to(dev);
    torch::Tensor scales = torch::rand({2, rows}).t().to(dev);  // [rows, 2], transposed view
    torch::Tensor zeros = torch::full({rows, 2}, 8.0).to(dev);
    ASSERT_FALSE(scales.is_contiguous());
    torch::Tensor out = Dequantize(packed, scales, zeros, 4, 32, cols);
    EXPECT_LE(MaxAbsDiff(out, RefDequant(codes, scales, zeros, 32)), 1e-6);
  }
}

TEST(DequantizeTest, ValidationNamesArgument) {
  const int64_t rows = 3, cols = 64;
  torch::Tensor packed = torch::zeros({rows, PackedWordsPerRow(cols, 4)}, torch::kInt32);
  torch::Tensor s = torch::ones({rows, 2}, torch::kFloat16);
  torch::Tensor z = torch::zeros({rows, 2}, torch::kFloat16);
  EXPECT_TRUE(ValidateDequantizeInput(packed, s, z, 4, 32, cols).ok());
  struct Case {
    absl::Status status;
    std::string word;
  };
  std::vector<Case> cases = {
      {ValidateDequantizeInput(packed, s, z, 5, 32, cols), "bits"},
      {ValidateDequantizeInput(packed, s, z, 4, 0, cols), "group_size"},
      {ValidateDequantizeInput(packed, s, z, 4, 48, cols), "group_size"},
      {ValidateDequantizeInput(packed.to(torch::kInt64), s, z, 4, 32, cols), "packed"},
      {ValidateDequantizeInput(packed, s, z, 3, 32, cols), "words per row"},
      {ValidateDequantizeInput(torch::Tensor(), s, z, 4, 32, cols), "packed"},
      {ValidateDequantizeInput(packed, s.t(), z, 4, 32, cols), "scales"},
      {ValidateDequantizeInput(packed, s, z.to(torch::kInt32), 4, 32, cols), "zeros"},
      {ValidateDequantizeInput(packed, s, torch::Tensor(), 4, 32, cols), "zeros"},
  };
  if (torch::cuda::is_available()) {
    cases.push_back({ValidateDequantizeInput(packed, s.cuda(), z, 4, 32, cols), "scales"});
  }
  for (const Case& c : cases) {
    EXPECT_EQ(c.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(c.status.message()).find(c.word), std::string::npos)
        << c.status.message();
  }
  EXPECT_THROW(Dequantize(packed, s, z, 4, 32, cols, torch::kInt32), c10::Error);
  EXPECT_THROW(Dequantize(packed, s, z, 4, 32, cols, torch::kFloat32, torch::zeros({3, 63})),
               c10::Error);
}

}  // namespace
}  // namespace qwha::kernels

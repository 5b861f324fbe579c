#include "worker/io/sha256.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "worker/io/atomic_file.h"

namespace qwha::io {
namespace {

// FIPS 180-2 test vectors.
TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, StreamEqualsOneShotAndFile) {
  std::mt19937 rng(7);
  std::string data(3 * (1 << 20) + 12345, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  Sha256Stream stream;
  for (size_t pos = 0; pos < data.size(); pos += 777777)
    stream.Update(std::string_view(data).substr(pos, 777777));
  std::string digest = stream.Finish();
  EXPECT_EQ(digest, Sha256Hex(data));
  std::string path = ::testing::TempDir() + "/sha256_test.bin";
  ASSERT_TRUE(WriteFileAtomically(path, data).ok());
  auto file = Sha256File(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->first, digest);
  EXPECT_EQ(file->second, static_cast<int64_t>(data.size()));
  EXPECT_EQ(Sha256File(path + ".missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(Sha256Test, FileSetIsOrderFree) {
  std::string a = Sha256OfFileSet({{"a", Sha256Hex("1")}, {"b", Sha256Hex("2")}});
  std::string b = Sha256OfFileSet({{"b", Sha256Hex("2")}, {"a", Sha256Hex("1")}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, Sha256OfFileSet({{"a", Sha256Hex("2")}, {"b", Sha256Hex("1")}}));
  EXPECT_TRUE(IsSha256Hex(a));
  EXPECT_FALSE(IsSha256Hex("abc"));
  EXPECT_FALSE(IsSha256Hex(std::string(64, 'G')));
}

}  // namespace
}  // namespace qwha::io

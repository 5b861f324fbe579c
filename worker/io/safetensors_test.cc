#include "worker/io/safetensors.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "worker/io/atomic_file.h"

namespace qwha::io {
namespace {

std::string TempDir() {
  const char* d = std::getenv("TEST_TMPDIR");
  return d != nullptr ? d : "/tmp";
}

std::string TempPath(const std::string& name) { return TempDir() + "/" + name; }

void WriteRaw(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string U64LE(uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

// A file with the given JSON header and data buffer.
std::string Craft(const std::string& json, const std::string& data) {
  return U64LE(json.size()) + json + data;
}

TEST(AtomicFileTest, WritesOverwritesAndLeavesNoTempFile) {
  const std::string dir = TempPath("atomic_dir");
  ASSERT_EQ(std::system(("mkdir -p " + dir).c_str()), 0);
  const std::string path = dir + "/f.bin";
  ASSERT_TRUE(WriteFileAtomically(path, std::string("first\0x", 7)).ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  auto content = ReadFile(path);
  ASSERT_TRUE(content.ok()) << content.status();
  EXPECT_EQ(*content, "second");
  int entries = 0;
  DIR* d = opendir(dir.c_str());
  while (dirent* e = readdir(d)) entries += std::string(e->d_name)[0] != '.';
  closedir(d);
  EXPECT_EQ(entries, 1);  // no leftover "<path>.tmp.*"
}

TEST(AtomicFileTest, ErrorsNameThePath) {
  const std::string bad = TempPath("no/such/dir/f.bin");
  absl::Status st = WriteFileAtomically(bad, "x");
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(st.message()).find(bad), std::string::npos) << st;
  auto r = ReadFile(bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(r.status().message()).find(bad), std::string::npos);
}

TEST(SafetensorsTest, RoundTripEveryDtypeScalarEmptyAndMetadata) {
  torch::manual_seed(1);
  std::map<std::string, torch::Tensor> in;
  const std::vector<torch::ScalarType> floats = {torch::kFloat64, torch::kFloat32, torch::kFloat16,
                                                 torch::kBFloat16};
  const std::vector<torch::ScalarType> ints = {torch::kInt64, torch::kInt32, torch::kInt16,
                                               torch::kInt8, torch::kUInt8};
  for (auto t : floats) {
    const std::string n = c10::toString(t);
    in["m_" + n] = torch::randn({3, 5}).to(t);
    in["s_" + n] = torch::randn({}).to(t);   // 0-d
    in["e_" + n] = torch::empty({0, 4}, t);  // empty
  }
  for (auto t : ints) {
    const std::string n = c10::toString(t);
    in["m_" + n] = torch::randint(0, 100, {7}).to(t) - (t == torch::kUInt8 ? 0 : 50);
    in["s_" + n] = torch::tensor(3).to(t);
    in["e_" + n] = torch::empty({2, 0}, t);
  }
  in["bool"] = torch::rand({4, 3}) > 0.5;
  in["noncontiguous"] = torch::randn({4, 6}).t();
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcode \"q\""}};

  const std::string path = TempPath("roundtrip.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, in, meta).ok());
  auto out = ReadSafetensors(path);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->metadata, meta);
  ASSERT_EQ(out->tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(out->tensors.count(name)) << name;
    const torch::Tensor& r = out->tensors.at(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(r.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(r, t)) << name;
  }

  // Hugging Face layout: header padded to 8 bytes, tensors back to back (the
  // reader rejected overlaps, so file size == header + sum of sizes means no gaps).
  auto bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>((*bytes)[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  uint64_t data = 0;
  for (const auto& [name, t] : in) data += t.numel() * t.element_size();
  EXPECT_EQ(bytes->size(), 8 + n + data);
  EXPECT_EQ(bytes->substr(8, 2), "{\"");
}

TEST(SafetensorsTest, EmptyFileAndNoMetadata) {
  const std::string path = TempPath("empty.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {}).ok());
  auto out = ReadSafetensors(path);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->tensors.empty());
  EXPECT_TRUE(out->metadata.empty());
}

TEST(SafetensorsTest, WriteRejectsBadInputs) {
  const std::string path = TempPath("bad_write.safetensors");
  auto st = WriteSafetensors(path, {{"c", torch::zeros({2}, torch::kComplexFloat)}});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("'c'"), std::string::npos) << st;
  st = WriteSafetensors(path, {{"u", torch::Tensor()}});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  st = WriteSafetensors(path, {{"__metadata__", torch::zeros({1})}});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
}

// Byte-exact files as the Hugging Face library writes them.
TEST(SafetensorsTest, ReadsHuggingFaceBytes) {
  // From the safetensors crate's own deserialization test.
  const std::string json1 = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
  ASSERT_EQ(json1.size(), 60u);
  std::string file1 = std::string("<\0\0\0\0\0\0\0", 8) + json1 + std::string(16, '\0');
  WriteRaw(TempPath("hf1.safetensors"), file1);
  auto r1 = ReadSafetensors(TempPath("hf1.safetensors"));
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_TRUE(torch::equal(r1->tensors.at("test"), torch::zeros({2, 2}, torch::kInt32)));

  // save_file({"x": f16 [1.5, -2], "b": bf16 [[1]]}, metadata={"format": "pt"}):
  // metadata first, wider dtypes first, header padded with spaces to 8 bytes.
  std::string json2 =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[0,2]},)"
      R"("x":{"dtype":"F16","shape":[2],"data_offsets":[2,6]}})";
  json2.append((8 - json2.size() % 8) % 8, ' ');
  const std::string data2(
      "\x80\x3f"
      "\x00\x3e"
      "\x00\xc0",
      6);  // bf16 1.0; f16 1.5, -2.0
  WriteRaw(TempPath("hf2.safetensors"), Craft(json2, data2));
  auto r2 = ReadSafetensors(TempPath("hf2.safetensors"));
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->metadata.at("format"), "pt");
  EXPECT_TRUE(torch::equal(r2->tensors.at("x"), torch::tensor({1.5, -2.0}).to(torch::kFloat16)));
  EXPECT_TRUE(torch::equal(r2->tensors.at("b"), torch::ones({1, 1}, torch::kBFloat16)));
}

struct Malformed {
  const char* name;
  std::string bytes;
  const char* expect;  // substring of the error besides the path
};

TEST(SafetensorsTest, MalformedFilesAreInvalidArgumentNamingFileAndTensor) {
  const std::string d16(16, '\0');
  auto one = [&](const std::string& entry, const std::string& data) {
    return Craft("{\"w\":" + entry + "}", data);
  };
  const std::vector<Malformed> cases = {
      {"short", std::string("\x05\0\0", 3), "shorter"},
      {"header_too_long", U64LE(1000) + "{}", "header length"},
      {"bad_json", Craft("{\"w\":{", d16), "JSON"},
      {"not_object", Craft("[1,2]", ""), "not an object"},
      {"missing_dtype", one(R"({"shape":[4],"data_offsets":[0,16]})", d16), "'w'"},
      {"missing_shape", one(R"({"dtype":"F32","data_offsets":[0,16]})", d16), "\"shape\""},
      {"missing_offsets", one(R"({"dtype":"F32","shape":[4]})", d16), "\"data_offsets\""},
      {"unknown_dtype", one(R"({"dtype":"F8_E4M3","shape":[16],"data_offsets":[0,16]})", d16),
       "unknown dtype"},
      {"negative_shape", one(R"({"dtype":"F32","shape":[-4],"data_offsets":[0,16]})", d16),
       "negative"},
      {"float_shape", one(R"({"dtype":"F32","shape":[4.0],"data_offsets":[0,16]})", d16),
       "not an integer"},
      {"string_shape", one(R"({"dtype":"F32","shape":["4"],"data_offsets":[0,16]})", d16),
       "not an integer"},
      {"offsets_out_of_range", one(R"({"dtype":"F32","shape":[8],"data_offsets":[0,32]})", d16),
       "past the data buffer"},
      {"begin_after_end", one(R"({"dtype":"F32","shape":[0],"data_offsets":[16,8]})", d16),
       "> end"},
      {"byte_count", one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,16]})", d16),
       "need 3 x 4"},
      {"offsets_one_value", one(R"({"dtype":"F32","shape":[4],"data_offsets":[0]})", d16),
       "[begin, end]"},
      {"overlap",
       Craft(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
             R"("v":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
             d16),
       "overlaps"},
      {"metadata_not_string", Craft(R"({"__metadata__":{"w":1}})", ""), "not a string"},
      {"bool_byte",
       one(R"({"dtype":"BOOL","shape":[16],"data_offsets":[0,16]})",
           std::string(15, '\0') + "\x07"),
       "BOOL"},
  };
  for (const Malformed& c : cases) {
    const std::string path = TempPath(std::string("bad_") + c.name + ".safetensors");
    WriteRaw(path, c.bytes);
    auto r = ReadSafetensors(path);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.name << r.status();
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find(path), std::string::npos) << c.name << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.name << ": " << msg;
    if (c.bytes.find("\"w\":{\"") != std::string::npos && std::string(c.name) != "overlap") {
      EXPECT_NE(msg.find("'w'"), std::string::npos) << c.name << ": " << msg;
    }
  }
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  auto r = ReadSafetensors(TempPath("does_not_exist.safetensors"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace qwha::io

namespace qwha::io {
namespace {

TEST(RemoveTreeTest, RemovesNestedTreesAndToleratesMissing) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string root = std::string(tmp != nullptr ? tmp : "/tmp") + "/remove_tree_test";
  ASSERT_TRUE(RemoveTree(root).ok());
  std::filesystem::create_directories(root + "/a/b/c");
  ASSERT_TRUE(WriteFileAtomically(root + "/a/b/c/file", "x").ok());
  ASSERT_TRUE(WriteFileAtomically(root + "/a/top", "y").ok());
  const std::string outside = root + "_outside";
  ASSERT_TRUE(WriteFileAtomically(outside, "keep").ok());
  std::filesystem::create_symlink(outside, root + "/a/link");
  ASSERT_TRUE(RemoveTree(root).ok());
  EXPECT_FALSE(std::filesystem::exists(root));
  EXPECT_TRUE(std::filesystem::exists(outside));  // links are not followed
  EXPECT_TRUE(RemoveTree(root).ok());             // missing is fine
  ASSERT_TRUE(RemoveTree(outside).ok());          // a plain file
  EXPECT_FALSE(std::filesystem::exists(outside));
}

}  // namespace
}  // namespace qwha::io

#include "worker/data/test_util.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace qwha::data::testing {

namespace fs = std::filesystem;

std::string WriteTempFile(const std::string& name, const std::string& content) {
  const fs::path path = fs::path(::testing::TempDir()) / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  EXPECT_TRUE(out.good()) << path;
  return path.string();
}

std::unique_ptr<tokenizer::Tokenizer> FixtureTokenizer(const std::string& name) {
  fs::path root = fs::path("tests") / "fixtures" / "tokenizer";
  if (const char* dir = std::getenv("QWHA_TOKENIZER_FIXTURES")) {
    root = dir;
  } else if (const char* srcdir = std::getenv("TEST_SRCDIR")) {
    const fs::path runfiles = fs::path(srcdir) / "qwha" / "tests" / "fixtures" / "tokenizer";
    if (fs::exists(runfiles)) root = runfiles;
  }
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tok =
      tokenizer::Tokenizer::FromFile((root / name / "tokenizer.json").string());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

}  // namespace qwha::data::testing

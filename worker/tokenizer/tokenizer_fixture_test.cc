// Checks Tokenizer against golden outputs of the Hugging Face library:
// every directory tests/fixtures/tokenizer/<name>/ with a tokenizer.json and
// cases.jsonl (made by scripts/fixtures/make_tokenizer_fixtures*.{py,cjs}).
// Each cases.jsonl line has "text" and any of "ids", "ids_with_special",
// "decoded" (decode of ids), "decoded_with_special" / "decoded_skip_special"
// (decode of ids_with_special keeping / skipping special tokens); an optional
// decode_cases.jsonl has "ids" with "decoded" / "decoded_skip_special".
//
// The fixture root is $QWHA_TOKENIZER_FIXTURES if set, else the Bazel
// runfiles copy ($TEST_SRCDIR/qwha/tests/fixtures/tokenizer), else
// tests/fixtures/tokenizer relative to the working directory. The test skips
// when no fixture directory exists yet.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/tokenizer/tokenizer.h"

namespace qwha::tokenizer {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

fs::path FixtureRoot() {
  if (const char* dir = std::getenv("QWHA_TOKENIZER_FIXTURES")) return dir;
  if (const char* srcdir = std::getenv("TEST_SRCDIR")) {
    const fs::path runfiles = fs::path(srcdir) / "qwha" / "tests" / "fixtures" / "tokenizer";
    if (fs::exists(runfiles)) return runfiles;
  }
  return fs::path("tests") / "fixtures" / "tokenizer";
}

std::vector<fs::path> FixtureDirs() {
  std::vector<fs::path> dirs;
  const fs::path root = FixtureRoot();
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return dirs;
  for (const fs::directory_entry& entry : fs::directory_iterator(root, ec)) {
    if (fs::exists(entry.path() / "tokenizer.json") && fs::exists(entry.path() / "cases.jsonl")) {
      dirs.push_back(entry.path());
    }
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

std::vector<Json> ReadJsonLines(const fs::path& file) {
  std::vector<Json> lines;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(Json::parse(line));
  }
  return lines;
}

std::vector<int32_t> Ids(const Json& value) { return value.get<std::vector<int32_t>>(); }

// Up to this many mismatches are printed per fixture, so that one systematic
// bug does not flood the log.
constexpr int kMaxReported = 10;

TEST(TokenizerFixtureTest, MatchesHuggingFaceOutputs) {
  const std::vector<fs::path> dirs = FixtureDirs();
  if (dirs.empty()) {
    GTEST_SKIP() << "no fixtures under " << FixtureRoot()
                 << " yet: run scripts/fixtures/make_tokenizer_fixtures.py (or the .cjs)";
  }
  for (const fs::path& dir : dirs) {
    SCOPED_TRACE(dir.string());
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
        Tokenizer::FromFile((dir / "tokenizer.json").string());
    ASSERT_TRUE(tok.ok()) << tok.status();
    int failures = 0;
    int checked = 0;
    auto expect = [&](bool ok, const std::string& what) {
      ++checked;
      if (ok) return;
      if (++failures <= kMaxReported) ADD_FAILURE() << what;
    };
    for (const Json& c : ReadJsonLines(dir / "cases.jsonl")) {
      const std::string text = c.at("text").get<std::string>();
      const std::string label = "text " + Json(text).dump();
      if (c.contains("ids")) {
        const std::vector<int32_t> ids = (*tok)->Encode(text, false);
        expect(ids == Ids(c["ids"]),
               label + ": ids " + Json(ids).dump() + ", want " + c["ids"].dump());
        if (c.contains("decoded")) {
          const std::string decoded = (*tok)->Decode(Ids(c["ids"]), false);
          expect(decoded == c["decoded"].get<std::string>(),
                 label + ": decoded " + Json(decoded).dump() + ", want " + c["decoded"].dump());
        }
      }
      if (c.contains("ids_with_special")) {
        const std::vector<int32_t> ids = (*tok)->Encode(text, true);
        expect(ids == Ids(c["ids_with_special"]), label + ": ids_with_special " + Json(ids).dump() +
                                                      ", want " + c["ids_with_special"].dump());
        for (const auto& [key, skip] :
             {std::pair<const char*, bool>{"decoded_with_special", false},
              std::pair<const char*, bool>{"decoded_skip_special", true}}) {
          if (!c.contains(key)) continue;
          const std::string decoded = (*tok)->Decode(Ids(c["ids_with_special"]), skip);
          expect(decoded == c[key].get<std::string>(),
                 label + ": " + key + " " + Json(decoded).dump() + ", want " + c[key].dump());
        }
      }
    }
    if (fs::exists(dir / "decode_cases.jsonl")) {
      for (const Json& c : ReadJsonLines(dir / "decode_cases.jsonl")) {
        const std::vector<int32_t> ids = Ids(c.at("ids"));
        for (const auto& [key, skip] :
             {std::pair<const char*, bool>{"decoded", false},
              std::pair<const char*, bool>{"decoded_skip_special", true}}) {
          if (!c.contains(key)) continue;
          const std::string decoded = (*tok)->Decode(ids, skip);
          expect(decoded == c[key].get<std::string>(), "ids " + c["ids"].dump() + ": " + key + " " +
                                                           Json(decoded).dump() + ", want " +
                                                           c[key].dump());
        }
      }
    }
    std::printf("%s: %d of %d checks agree\n", dir.filename().c_str(), checked - failures, checked);
    EXPECT_EQ(failures, 0) << failures << " of " << checked << " checks differ in " << dir;
    EXPECT_GT(checked, 0) << "no cases in " << dir;
  }
}

}  // namespace
}  // namespace qwha::tokenizer

// Helpers shared by the worker/data tests.
#pragma once

#include <memory>
#include <string>

#include "worker/tokenizer/tokenizer.h"

namespace qwha::data::testing {

// Writes `content` to `name` under the test's temporary directory and returns
// the path (overwrites).
std::string WriteTempFile(const std::string& name, const std::string& content);

// The tokenizer of tests/fixtures/tokenizer/<name>/tokenizer.json, found as
// in tokenizer_fixture_test.cc ($QWHA_TOKENIZER_FIXTURES, the Bazel runfiles,
// or the working directory). Fails the test (nullptr) when it is missing.
std::unique_ptr<tokenizer::Tokenizer> FixtureTokenizer(const std::string& name);

}  // namespace qwha::data::testing

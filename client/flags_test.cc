// Flag parsing, and qwhactl's usage errors: exit code 3, the flag named,
// nothing sent to a server.
#include "client/flags.h"

#include <cstdlib>
#include <sstream>

#include "client/cli.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/io/atomic_file.h"

namespace qwha::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::vector<FlagSpec> kSpecs = {
    {"name", FlagType::kString, "N", "a name"},
    {"rank", FlagType::kInt, "R", "rank"},
    {"lr", FlagType::kDouble, "LR", "learning rate"},
    {"watch", FlagType::kBool, "", "follow"},
    {"label", FlagType::kList, "K=V", "labels"},
    {"output", FlagType::kString, "F", "format", 'o'},
};

TEST(ParseFlagsTest, ParsesEveryForm) {
  auto flags = ParseFlags({"pos1", "--name", "x", "--rank=8", "--lr", "1e-3", "--watch", "-o",
                           "json", "--label", "a=1", "--label=b=2", "pos2", "--", "--rank"},
                          kSpecs);
  ASSERT_TRUE(flags.ok()) << flags.status();
  EXPECT_EQ(flags->String("name"), "x");
  EXPECT_EQ(flags->Int("rank"), 8);
  EXPECT_DOUBLE_EQ(flags->Double("lr"), 1e-3);
  EXPECT_TRUE(flags->Bool("watch"));
  EXPECT_EQ(flags->String("output"), "json");
  EXPECT_THAT(flags->List("label"), ElementsAre("a=1", "b=2"));
  EXPECT_THAT(flags->positional(), ElementsAre("pos1", "pos2", "--rank"));
  EXPECT_FALSE(flags->Has("missing"));
  EXPECT_EQ(flags->Int("missing", 7), 7);
}

TEST(ParseFlagsTest, NegativeNumbersAreValues) {
  auto flags = ParseFlags({"--rank", "-5", "--watch=false"}, kSpecs);
  ASSERT_TRUE(flags.ok()) << flags.status();
  EXPECT_EQ(flags->Int("rank"), -5);
  EXPECT_FALSE(flags->Bool("watch"));
}

TEST(ParseFlagsTest, ErrorsNameTheFlag) {
  auto message = [](std::vector<std::string> args) {
    auto flags = ParseFlags(args, kSpecs);
    EXPECT_FALSE(flags.ok());
    return std::string(flags.status().message());
  };
  EXPECT_EQ(message({"--rank", "abc"}), "--rank: expected an integer, got \"abc\"");
  EXPECT_EQ(message({"--lr=fast"}), "--lr: expected a number, got \"fast\"");
  EXPECT_EQ(message({"--rank"}), "--rank needs a value R");
  EXPECT_EQ(message({"--rnak", "3"}), "unknown flag --rnak (did you mean --rank?)");
  EXPECT_EQ(message({"-x"}), "unknown flag -x");
  EXPECT_EQ(message({"--watch=maybe"}), "--watch: expected true or false, got \"maybe\"");
}

TEST(ParseFlagsTest, KeyValue) {
  auto pair = ParseKeyValue("label", "team=nlp=x");
  ASSERT_TRUE(pair.ok());
  EXPECT_EQ(pair->first, "team");
  EXPECT_EQ(pair->second, "nlp=x");
  EXPECT_EQ(ParseKeyValue("label", "=x").status().message(),
            "--label: expected KEY=VALUE, got \"=x\"");
}

struct CliRun {
  int code;
  std::string out;
  std::string err;
};

CliRun Qwhactl(std::vector<std::string> args) {
  CliEnvironment environment;
  environment.env["QWHA_ADDRESS"] = "127.0.0.1:1";  // nothing listens: usage errors come first
  std::ostringstream out, err;
  int code = RunQwhactl(args, environment, out, err);
  return {code, out.str(), err.str()};
}

struct UsageCase {
  std::vector<std::string> args;
  std::string expected;  // in stderr
};

class UsageErrorTest : public ::testing::TestWithParam<UsageCase> {};

TEST_P(UsageErrorTest, ExitsThreeNamingTheFlag) {
  CliRun run = Qwhactl(GetParam().args);
  EXPECT_EQ(run.code, kExitUsage) << run.err;
  EXPECT_THAT(run.err, HasSubstr(GetParam().expected));
  EXPECT_EQ(run.out, "");
}

INSTANTIATE_TEST_SUITE_P(
    Qwhactl, UsageErrorTest,
    ::testing::Values(
        UsageCase{{"submit", "--rank", "abc"}, "qwhactl submit: --rank: expected an integer"},
        UsageCase{{"submit", "--max-steps", "1.5"}, "--max-steps: expected an integer"},
        UsageCase{{"submit", "--lr", "x"}, "--lr: expected a number"},
        UsageCase{{"submit", "--bogus"}, "unknown flag --bogus"},
        UsageCase{{"submit", "--model"}, "--model needs a value"},
        UsageCase{{"submit", "--model", "m", "--train-dataset", "d", "--label", "oops"},
                  "--label: expected KEY=VALUE"},
        UsageCase{{"submit", "--train-dataset", "d"}, "--model is required"},
        UsageCase{{"submit", "--model", "m"}, "--train-dataset is required"},
        UsageCase{{"submit", "--model", "m", "--train-dataset", "d", "--target-modules", ","},
                  "--target-modules"},
        UsageCase{{"submit", "--file", "/nonexistent/job.yaml"}, "--file: "},
        UsageCase{{"list", "--state", "sleeping"}, "--state: unknown state \"sleeping\""},
        UsageCase{{"list", "--limit", "0"}, "--limit"},
        UsageCase{{"list", "--output", "yaml"}, "--output: expected table or json"},
        UsageCase{{"--timeout", "0", "list"}, "--timeout"},
        UsageCase{{"get"}, "missing argument; usage: qwhactl get ID"},
        UsageCase{{"get", "j-1", "j-2"}, "unexpected argument \"j-2\""},
        UsageCase{{"adapters", "pull", "a-1", "--dirr", "x"},
                  "unknown flag --dirr (did you mean --dir?)"},
        UsageCase{{"frobnicate"}, "unknown command \"frobnicate\""},
        UsageCase{{"adapters", "frob"}, "unknown subcommand \"frob\""},
        UsageCase{{"--bogus", "list"}, "unknown flag --bogus"},
        UsageCase{{"--config", "/nonexistent/config.yaml", "list"}, "/nonexistent/config.yaml"}));

TEST(UsageTest, BadJobFileNamesTheFlagAndTheKeyPath) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/bad.yaml";
  ASSERT_TRUE(
      io::WriteFileAtomically(path, "base_model_id: m\ntraining:\n  max_steps: ten\n").ok());
  CliRun run = Qwhactl({"submit", "--file", path});
  EXPECT_EQ(run.code, kExitUsage);
  EXPECT_THAT(run.err,
              HasSubstr("--file: " + path + ":3: training.max_steps: expected an integer"));
}

TEST(UsageTest, NoCommandPrintsUsageAndExitsThree) {
  CliRun run = Qwhactl({});
  EXPECT_EQ(run.code, kExitUsage);
  EXPECT_THAT(run.err, HasSubstr("Usage: qwhactl"));
  EXPECT_EQ(Qwhactl({"models"}).code, kExitUsage);
}

TEST(UsageTest, HelpGoesToStdoutWithExitZero) {
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"help"}, {"--help"}, {"-h"}}) {
    CliRun run = Qwhactl(args);
    EXPECT_EQ(run.code, kExitOk);
    EXPECT_THAT(run.out, HasSubstr("adapters pull ID"));
    EXPECT_THAT(run.out, HasSubstr("Exit codes"));
  }
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"adapters", "pull", "--help"},
                                             {"help", "adapters", "pull"},
                                             {"adapters", "pull", "-h"}}) {
    CliRun run = Qwhactl(args);
    EXPECT_EQ(run.code, kExitOk);
    EXPECT_THAT(run.out, HasSubstr("Usage: qwhactl adapters pull ID"));
    EXPECT_THAT(run.out, HasSubstr("--dir D"));
  }
  CliRun submit = Qwhactl({"submit", "--rank", "abc", "--help"});  // help wins over bad values
  EXPECT_EQ(submit.code, kExitOk);
  EXPECT_THAT(submit.out, HasSubstr("--target-modules LIST"));
  CliRun group = Qwhactl({"datasets", "--help"});
  EXPECT_EQ(group.code, kExitOk);
  EXPECT_THAT(group.out, HasSubstr("datasets push"));
  EXPECT_EQ(Qwhactl({"help", "nope"}).code, kExitUsage);
}

}  // namespace
}  // namespace qwha::client

// Config resolution: flag > environment > config file > default, per setting.
#include "client/config.h"

#include <sys/stat.h>

#include <cstdlib>
#include <sstream>

#include "client/cli.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/io/atomic_file.h"

namespace qwha::client {
namespace {

using ::testing::HasSubstr;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = std::string(std::getenv("TEST_TMPDIR")) + "/" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_TRUE(io::RemoveTree(home_).ok());
    for (std::string dir : {home_, home_ + "/.config", home_ + "/.config/qwha"}) {
      ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    }
    inputs_.env["HOME"] = home_;
  }
  void WriteHomeConfig(const std::string& content) {
    ASSERT_TRUE(io::WriteFileAtomically(home_ + "/.config/qwha/config.yaml", content).ok());
  }
  ResolvedConfig Resolve() {
    auto config = ResolveConfig(inputs_);
    EXPECT_TRUE(config.ok()) << config.status();
    return config.value_or(ResolvedConfig());
  }

  std::string home_;
  ConfigInputs inputs_;
};

TEST_F(ConfigTest, DefaultWithoutAnything) {
  ResolvedConfig config = Resolve();  // no config file at the default place: fine
  EXPECT_EQ(config.address, "127.0.0.1:7420");
  EXPECT_EQ(config.address_source, "default");
  EXPECT_EQ(config.token, "");
  EXPECT_EQ(config.config_path, "");
}

TEST_F(ConfigTest, FlagOverEnvironmentOverFileOverDefault) {
  WriteHomeConfig("address: file-host:1\ntoken: file-token\n");
  ResolvedConfig config = Resolve();
  EXPECT_EQ(config.address, "file-host:1");
  EXPECT_EQ(config.token, "file-token");
  EXPECT_EQ(config.config_path, home_ + "/.config/qwha/config.yaml");

  inputs_.env["QWHA_ADDRESS"] = "env-host:2";
  config = Resolve();
  EXPECT_EQ(config.address, "env-host:2");
  EXPECT_EQ(config.address_source, "QWHA_ADDRESS");
  EXPECT_EQ(config.token, "file-token");  // each setting resolved on its own

  inputs_.env["QWHA_TOKEN"] = "env-token";
  inputs_.address_flag = "flag-host:3";
  config = Resolve();
  EXPECT_EQ(config.address, "flag-host:3");
  EXPECT_EQ(config.address_source, "--address");
  EXPECT_EQ(config.token, "env-token");

  inputs_.token_flag = "flag-token";
  EXPECT_EQ(Resolve().token, "flag-token");
}

TEST_F(ConfigTest, TlsRootsFromFlagEnvironmentOrFile) {
  EXPECT_EQ(Resolve().tls_ca, "");  // plaintext by default
  WriteHomeConfig("tls_ca: /etc/qwha/ca.pem\n");
  ResolvedConfig config = Resolve();
  EXPECT_EQ(config.tls_ca, "/etc/qwha/ca.pem");
  EXPECT_EQ(config.tls_ca_source, home_ + "/.config/qwha/config.yaml");
  inputs_.env["QWHA_TLS_CA"] = "system";
  config = Resolve();
  EXPECT_EQ(config.tls_ca, "system");
  EXPECT_EQ(config.tls_ca_source, "QWHA_TLS_CA");
  inputs_.tls_ca_flag = "/flag/ca.pem";
  config = Resolve();
  EXPECT_EQ(config.tls_ca, "/flag/ca.pem");
  EXPECT_EQ(config.tls_ca_source, "--tls-ca");
  // A file that names unreadable roots fails qwhactl with the key and file.
  inputs_.tls_ca_flag.reset();
  inputs_.env.erase("QWHA_TLS_CA");
  WriteHomeConfig("tls_ca: /nonexistent/ca.pem\n");
  std::ostringstream out, err;
  CliEnvironment environment;
  environment.env = inputs_.env;
  EXPECT_EQ(RunQwhactl({"list"}, environment, out, err), 3);
  EXPECT_THAT(err.str(), HasSubstr("tls_ca in " + home_ +
                                   "/.config/qwha/config.yaml: cannot "
                                   "read /nonexistent/ca.pem"));
}

TEST_F(ConfigTest, EmptyValuesCountAsUnset) {
  WriteHomeConfig("address: file-host:1\n");
  inputs_.env["QWHA_ADDRESS"] = "";
  inputs_.address_flag = "";
  EXPECT_EQ(Resolve().address, "file-host:1");
}

TEST_F(ConfigTest, ConfigPathFlagOverEnvironmentOverXdgOverHome) {
  WriteHomeConfig("address: home:1\n");
  const std::string xdg = home_ + "/xdg";
  ASSERT_EQ(::mkdir(xdg.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((xdg + "/qwha").c_str(), 0755), 0);
  ASSERT_TRUE(io::WriteFileAtomically(xdg + "/qwha/config.yaml", "address: xdg:1\n").ok());
  ASSERT_TRUE(io::WriteFileAtomically(home_ + "/env.yaml", "address: env:1\n").ok());
  ASSERT_TRUE(io::WriteFileAtomically(home_ + "/flag.yaml", "address: flag:1\n").ok());
  EXPECT_EQ(Resolve().address, "home:1");
  inputs_.env["XDG_CONFIG_HOME"] = xdg;
  EXPECT_EQ(Resolve().address, "xdg:1");
  inputs_.env["QWHA_CONFIG"] = home_ + "/env.yaml";
  EXPECT_EQ(Resolve().address, "env:1");
  inputs_.config_flag = home_ + "/flag.yaml";
  ResolvedConfig config = Resolve();
  EXPECT_EQ(config.address, "flag:1");
  EXPECT_EQ(config.address_source, home_ + "/flag.yaml");
}

TEST_F(ConfigTest, ExplicitMissingFileIsAnError) {
  inputs_.env["QWHA_CONFIG"] = home_ + "/missing.yaml";
  auto config = ResolveConfig(inputs_);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("QWHA_CONFIG"));
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("missing.yaml"));
}

TEST_F(ConfigTest, MalformedFilesNameTheFileAndKey) {
  const std::string path = home_ + "/.config/qwha/config.yaml";
  auto error = [&](const std::string& content) {
    WriteHomeConfig(content);
    auto config = ResolveConfig(inputs_);
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(config.status().message()), HasSubstr(path));
    return std::string(config.status().message());
  };
  EXPECT_THAT(error("adress: x:1\n"), HasSubstr(":1: adress: unknown key (did you mean address?)"));
  EXPECT_THAT(error("address: [a, b]\n"), HasSubstr("address: expected a string, got a list"));
  EXPECT_THAT(error("- address\n"), HasSubstr("expected a mapping"));
  EXPECT_THAT(error("address: [\n"), HasSubstr("invalid YAML"));
  WriteHomeConfig("");  // an empty file is no error
  EXPECT_EQ(Resolve().address, "127.0.0.1:7420");
}

TEST_F(ConfigTest, QwhactlExitsThreeOnABadConfigFile) {
  WriteHomeConfig("colour: blue\n");
  CliEnvironment environment;
  environment.env = inputs_.env;
  std::ostringstream out, err;
  EXPECT_EQ(RunQwhactl({"list"}, environment, out, err), kExitUsage);
  EXPECT_THAT(err.str(), HasSubstr("colour: unknown key"));
}

}  // namespace
}  // namespace qwha::client

// TLS credentials (tls.h): clear errors for bad files, and real handshakes on
// loopback with the test certificates (tests/fixtures/tls).
#include "server/api/tls.h"

#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace qwha::api {
namespace {

namespace fs = std::filesystem;

std::string Fixture(const std::string& name) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return ((srcdir != nullptr ? fs::path(srcdir) / "qwha" : fs::path(".")) / "tests/fixtures/tls" /
          name)
      .string();
}

std::string TempFile(const std::string& name, const std::string& text) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
  std::ofstream(path) << text;
  return path;
}

TEST(TlsTest, BadServerFilesNameTheFlagAndTheReason) {
  EXPECT_TRUE(ServerCredentials({}).ok());  // plaintext
  auto only_cert = ServerCredentials({Fixture("server.pem"), ""});
  ASSERT_FALSE(only_cert.ok());
  EXPECT_EQ(only_cert.status().message(), "--tls-key: required with --tls-cert");
  auto only_key = ServerCredentials({"", Fixture("server.key")}, "--registry-tls-");
  ASSERT_FALSE(only_key.ok());
  EXPECT_EQ(only_key.status().message(), "--registry-tls-cert: required with --registry-tls-key");
  auto missing = ServerCredentials({"/nonexistent/cert.pem", Fixture("server.key")});
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(missing.status()));
  EXPECT_NE(missing.status().message().find("--tls-cert: cannot read /nonexistent/cert.pem"),
            std::string::npos)
      << missing.status();
  const std::string garbage = TempFile("garbage.pem", "not a certificate\n");
  auto not_pem = ServerCredentials({garbage, Fixture("server.key")});
  ASSERT_FALSE(not_pem.ok());
  EXPECT_NE(not_pem.status().message().find("holds no PEM block"), std::string::npos);
  auto cert_as_key = ServerCredentials({Fixture("server.pem"), Fixture("ca.pem")});
  ASSERT_FALSE(cert_as_key.ok());
  EXPECT_NE(cert_as_key.status().message().find("--tls-key: "), std::string::npos);
  EXPECT_NE(cert_as_key.status().message().find("holds no private key"), std::string::npos);
  EXPECT_TRUE(ServerCredentials({Fixture("server.pem"), Fixture("server.key")}).ok());
}

TEST(TlsTest, BadRootsNameTheFlag) {
  EXPECT_TRUE(ChannelCredentials("").ok());
  EXPECT_TRUE(ChannelCredentials("system").ok());
  EXPECT_TRUE(ChannelCredentials(Fixture("ca.pem")).ok());
  auto missing = ChannelCredentials("/nonexistent/ca.pem", "--serve-tls-ca");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("--serve-tls-ca: cannot read /nonexistent/ca.pem"),
            std::string::npos)
      << missing.status();
}

// A server on loopback (the default health service, so that it serves
// something), TLS or plaintext.
class Server {
 public:
  explicit Server(std::shared_ptr<grpc::ServerCredentials> credentials) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", credentials, &port_);
    server_ = builder.BuildAndStart();
  }
  ~Server() { server_->Shutdown(); }
  int port() const { return port_; }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// Whether a channel with `credentials` reaches READY (TCP, and the TLS
// handshake where either side has TLS) within 2 seconds.
bool Connects(int port, const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), credentials);
  return channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

TEST(TlsTest, HandshakesSucceedOnlyWithTheRightRoots) {
  auto tls = ServerCredentials({Fixture("server.pem"), Fixture("server.key")});
  ASSERT_TRUE(tls.ok()) << tls.status();
  Server server(*tls);
  ASSERT_GT(server.port(), 0);
  EXPECT_TRUE(Connects(server.port(), *ChannelCredentials(Fixture("ca.pem"))));
  // Another CA's roots, the system's roots and plaintext all fail.
  EXPECT_FALSE(Connects(server.port(), *ChannelCredentials(Fixture("other-ca.pem"))));
  EXPECT_FALSE(Connects(server.port(), *ChannelCredentials("system")));
  EXPECT_FALSE(Connects(server.port(), *ChannelCredentials("")));

  Server plain(*ServerCredentials({}));
  EXPECT_TRUE(Connects(plain.port(), *ChannelCredentials("")));
  EXPECT_FALSE(Connects(plain.port(), *ChannelCredentials(Fixture("ca.pem"))));
}

}  // namespace
}  // namespace qwha::api

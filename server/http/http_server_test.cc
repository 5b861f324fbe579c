#include "server/http/http_server.h"

#include <gtest/gtest.h>
#include <prometheus/counter.h>

#include <random>

#include "server/http/http_get.h"
#include "worker/io/atomic_file.h"

namespace qwha::http {
namespace {

TEST(HttpServerTest, ServesMetricsAndRoutesWithRanges) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family =
      prometheus::BuildCounter().Name("qwha_test_total").Help("test").Register(*registry);
  family.Add({{"kind", "a"}}).Increment(3);
  auto server = HttpServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  int port = (*server)->port();
  ASSERT_GT(port, 0);

  auto metrics = HttpGet("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("qwha_test_total{kind=\"a\"} 3"), std::string::npos)
      << metrics->body;

  std::mt19937 rng(1);
  std::string data(300000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  std::string path = ::testing::TempDir() + "/http_blob";
  ASSERT_TRUE(io::WriteFileAtomically(path, data).ok());
  (*server)->AddGetRoute("/files/", [&](const Request& request) {
    Response response;
    response.file_path = path;
    auto it = request.headers.find("range");
    if (it != request.headers.end()) {
      auto range = ParseRange(it->second);
      response.status = 206;
      response.file_offset = range->first;
      response.file_length = range->second;
    }
    return response;
  });
  auto whole = HttpGet("127.0.0.1", port, "/files/x");
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->status, 200);
  EXPECT_EQ(whole->body, data);
  auto tail = HttpGet("127.0.0.1", port, "/files/x", {{"Range", "bytes=123456-"}});
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->status, 206);
  EXPECT_EQ(tail->body, data.substr(123456));
  auto missing = HttpGet("127.0.0.1", port, "/nothing");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
}

TEST(HttpServerTest, ParsesRangesAndAddresses) {
  EXPECT_EQ(ParseRange("bytes=10-"), std::make_pair(int64_t{10}, int64_t{-1}));
  EXPECT_EQ(ParseRange("bytes=10-19"), std::make_pair(int64_t{10}, int64_t{10}));
  EXPECT_FALSE(ParseRange("bytes=-5").has_value());
  EXPECT_FALSE(ParseRange("items=1-2").has_value());
  EXPECT_FALSE(ParseHostPort("nohost", "f").ok());
  EXPECT_NE(std::string(ParseHostPort("h:99999", "listen").status().message()).find("listen"),
            std::string::npos);
  auto hp = ParseHostPort("127.0.0.1:8080", "f");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->second, 8080);
}

}  // namespace
}  // namespace qwha::http

// Adapters through the registry: listing and deleting over gRPC, downloading
// over the gRPC stream (with resume from an offset) and over HTTP GET (with
// and without Range), and the registry's metrics.
#include <gtest/gtest.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "server/http/http_get.h"
#include "server/http/http_server.h"
#include "server/registry/adapter_http.h"
#include "server/registry/test_util.h"

namespace qwha::registry {
namespace {

using testing::RegistryHarness;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string data(n, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  return data;
}

class AdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    harness_ = std::make_unique<RegistryHarness>(RegistryOptions{});
    weights_ = RandomBytes(2 * (1 << 20) + 12345, 5);  // three chunks
    auto adapter = harness_->AddAdapter(
        "j-1", {{"adapter.safetensors", weights_}, {"metrics.json", "{\"eval_loss\": 1.5}"}});
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    adapter_ = *adapter;
  }

  // Reads a download stream; stops after `max_chunks` chunks (cancelling).
  grpc::Status Download(const std::string& file, int64_t offset, std::vector<v1::Chunk>* chunks,
                        int max_chunks = 1 << 30) {
    auto context = harness_->Context();
    v1::DownloadRequest request;
    request.set_adapter_id(adapter_.id());
    request.set_file(file);
    request.set_offset(offset);
    auto reader = harness_->stub().DownloadAdapter(context.get(), request);
    v1::Chunk chunk;
    while (static_cast<int>(chunks->size()) < max_chunks && reader->Read(&chunk)) {
      chunks->push_back(chunk);
    }
    if (static_cast<int>(chunks->size()) >= max_chunks) context->TryCancel();
    return reader->Finish();
  }

  std::unique_ptr<RegistryHarness> harness_;
  std::string weights_;
  v1::Adapter adapter_;
};

TEST_F(AdapterTest, GrpcDownloadResumesExactlyFromAnOffset) {
  std::vector<v1::Chunk> first;
  Download("adapter.safetensors", 0, &first, /*max_chunks=*/2);  // interrupted
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].file().name(), "adapter.safetensors");
  EXPECT_EQ(first[0].file().size(), static_cast<int64_t>(weights_.size()));
  EXPECT_EQ(first[0].file().sha256(), adapter_.files(0).sha256());
  EXPECT_FALSE(first[1].has_file());
  std::string got;
  for (const v1::Chunk& c : first) {
    EXPECT_EQ(c.offset(), static_cast<int64_t>(got.size()));
    EXPECT_LE(c.data().size(), size_t{1} << 20);
    got += c.data();
  }
  std::vector<v1::Chunk> rest;
  grpc::Status status = Download("adapter.safetensors", static_cast<int64_t>(got.size()), &rest);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(rest.empty());
  EXPECT_TRUE(rest[0].has_file());  // the first chunk of every stream carries the info
  for (const v1::Chunk& c : rest) {
    EXPECT_EQ(c.offset(), static_cast<int64_t>(got.size()));
    got += c.data();
  }
  EXPECT_EQ(got, weights_);

  std::vector<v1::Chunk> odd;  // an unaligned offset
  ASSERT_TRUE(Download("adapter.safetensors", 1234567, &odd).ok());
  std::string tail;
  for (const v1::Chunk& c : odd) tail += c.data();
  EXPECT_EQ(tail, weights_.substr(1234567));

  std::vector<v1::Chunk> at_end;  // offset == size: the info, no data
  ASSERT_TRUE(Download("adapter.safetensors", static_cast<int64_t>(weights_.size()), &at_end).ok());
  ASSERT_EQ(at_end.size(), 1u);
  EXPECT_TRUE(at_end[0].has_file());
  EXPECT_TRUE(at_end[0].data().empty());
}

TEST_F(AdapterTest, GrpcDownloadErrors) {
  std::vector<v1::Chunk> chunks;
  grpc::Status past = Download("adapter.safetensors", weights_.size() + 1, &chunks);
  EXPECT_EQ(past.error_code(), grpc::StatusCode::OUT_OF_RANGE) << past.error_message();
  grpc::Status unknown = Download("nope.bin", 0, &chunks);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(unknown.error_message().find("nope.bin"), std::string::npos);
  EXPECT_EQ(Download("adapter.safetensors", -1, &chunks).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto context = harness_->Context(/*with_token=*/false);
  v1::DownloadRequest request;
  request.set_adapter_id(adapter_.id());
  request.set_file("metrics.json");
  v1::Chunk chunk;
  auto reader = harness_->stub().DownloadAdapter(context.get(), request);
  EXPECT_FALSE(reader->Read(&chunk));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(chunks.empty());
}

TEST_F(AdapterTest, ListGetDeleteOverGrpc) {
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(harness_->AddAdapter(absl::StrCat("j-", i + 2), {{"x", absl::StrCat(i)}}).ok());
  }
  v1::ListAdaptersRequest request;
  request.set_page_size(2);
  std::vector<std::string> ids;
  do {
    v1::ListAdaptersResponse page;
    ASSERT_TRUE(harness_->stub().ListAdapters(harness_->Context().get(), request, &page).ok());
    for (const v1::Adapter& a : page.adapters()) ids.push_back(a.id());
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids.back(), adapter_.id());  // the oldest comes last
  request.set_page_size(-1);
  v1::ListAdaptersResponse page;
  EXPECT_EQ(harness_->stub().ListAdapters(harness_->Context().get(), request, &page).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  v1::GetAdapterRequest get;
  get.set_id(adapter_.id());
  v1::Adapter got;
  ASSERT_TRUE(harness_->stub().GetAdapter(harness_->Context().get(), get, &got).ok());
  EXPECT_EQ(got.SerializeAsString(), adapter_.SerializeAsString());
  v1::DeleteAdapterRequest del;
  del.set_id(adapter_.id());
  v1::DeleteResponse done;
  ASSERT_TRUE(harness_->stub().DeleteAdapter(harness_->Context().get(), del, &done).ok());
  EXPECT_FALSE(harness_->blobs().Contains(adapter_.files(0).sha256()));
  EXPECT_EQ(harness_->stub().GetAdapter(harness_->Context().get(), get, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(AdapterTest, HttpGetWithAndWithoutRangeEqualsTheBlob) {
  auto server = http::HttpServer::Start("127.0.0.1:0", harness_->metrics());
  ASSERT_TRUE(server.ok()) << server.status();
  AddAdapterDownloadRoute(**server, &harness_->store(), "tok", harness_->metrics());
  const int port = (*server)->port();
  const std::string path =
      absl::StrCat("/v1/adapters/", adapter_.id(), "/files/adapter.safetensors");
  const std::map<std::string, std::string> auth = {{"Authorization", "Bearer tok"}};

  auto whole = http::HttpGet("127.0.0.1", port, path, auth);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->status, 200);
  EXPECT_EQ(whole->body, weights_);
  EXPECT_EQ(whole->headers["x-content-sha256"], adapter_.files(0).sha256());
  EXPECT_EQ(whole->headers["etag"], absl::StrCat("\"", adapter_.files(0).sha256(), "\""));

  auto tail = http::HttpGet("127.0.0.1", port, path,
                            {{"Authorization", "Bearer tok"}, {"Range", "bytes=1048577-"}});
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->status, 206);
  EXPECT_EQ(tail->body, weights_.substr(1048577));
  EXPECT_EQ(tail->headers["content-range"],
            absl::StrCat("bytes 1048577-", weights_.size() - 1, "/", weights_.size()));
  auto middle = http::HttpGet("127.0.0.1", port, path,
                              {{"Authorization", "Bearer tok"}, {"Range", "bytes=10-19"}});
  ASSERT_TRUE(middle.ok());
  EXPECT_EQ(middle->body, weights_.substr(10, 10));
  auto past = http::HttpGet(
      "127.0.0.1", port, path,
      {{"Authorization", "Bearer tok"}, {"Range", absl::StrCat("bytes=", weights_.size(), "-")}});
  EXPECT_EQ(past->status, 416);

  EXPECT_EQ(http::HttpGet("127.0.0.1", port, path)->status, 401);
  EXPECT_EQ(http::HttpGet("127.0.0.1", port, path, {{"Authorization", "Bearer nope"}})->status,
            401);
  EXPECT_EQ(http::HttpGet("127.0.0.1", port,
                          absl::StrCat("/v1/adapters/", adapter_.id(), "/files/nope"), auth)
                ->status,
            404);
  EXPECT_EQ(http::HttpGet("127.0.0.1", port, "/v1/adapters/a-000000000000/files/x", auth)->status,
            404);
  EXPECT_EQ(http::HttpGet("127.0.0.1", port, "/v1/adapters/x", auth)->status, 404);

  auto metrics = http::HttpGet("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(metrics.ok());
  const int64_t served = weights_.size() + (weights_.size() - 1048577) + 10;
  EXPECT_NE(metrics->body.find(
                absl::StrCat("qwha_registry_download_bytes_total{protocol=\"http\"} ", served)),
            std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find("qwha_registry_bytes{kind=\"adapter\"}"), std::string::npos);
}

}  // namespace
}  // namespace qwha::registry

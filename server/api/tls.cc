#include "server/api/tls.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/io/atomic_file.h"

namespace qwha::api {
namespace {

// The PEM text of `path`, or InvalidArgument naming `flag`.
absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view flag) {
  auto text = io::ReadFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": cannot read ", path, ": ", text.status().message()));
  }
  if (!absl::StrContains(*text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path, " holds no PEM block (\"-----BEGIN ...\")"));
  }
  return text;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsServerFiles& files, absl::string_view prefix) {
  const std::string cert_flag = absl::StrCat(prefix, "cert");
  const std::string key_flag = absl::StrCat(prefix, "key");
  if (files.cert.empty() && files.key.empty()) return grpc::InsecureServerCredentials();
  if (files.key.empty())
    return absl::InvalidArgumentError(absl::StrCat(key_flag, ": required with ", cert_flag));
  if (files.cert.empty())
    return absl::InvalidArgumentError(absl::StrCat(cert_flag, ": required with ", key_flag));
  auto cert = ReadPem(files.cert, cert_flag);
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(files.key, key_flag);
  if (!key.ok()) return key.status();
  if (!absl::StrContains(*key, "PRIVATE KEY-----")) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, ": ", files.key, " holds no private key"));
  }
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const std::string& ca, absl::string_view flag) {
  if (ca.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  if (ca != "system") {
    auto roots = ReadPem(ca, flag);
    if (!roots.ok()) return roots.status();
    options.pem_root_certs = *roots;
  }
  return grpc::SslCredentials(options);
}

}  // namespace qwha::api

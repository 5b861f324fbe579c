// TLS for the gRPC endpoints. A server serves TLS when given a PEM certificate
// chain and its private key (--tls-cert, --tls-key), plaintext when given
// neither (loopback use, tests). A client speaks TLS when given the roots it
// trusts: a PEM file (--tls-ca FILE), or "system" for gRPC's default roots;
// plaintext when given none. Bearer tokens (auth.h) travel in the clear
// without TLS, so a server reachable from other machines wants both.
//
// Thread safety: pure functions.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qwha::api {

struct TlsServerFiles {
  std::string cert;  // PEM certificate chain, leaf first; "" with key "": plaintext
  std::string key;   // PEM private key of the leaf
};

// Credentials for ServerBuilder::AddListeningPort. InvalidArgument naming the
// flag (`prefix` + "cert" / "key", e.g. "--tls-cert") when one file is given
// without the other, a file cannot be read, or holds no PEM block.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsServerFiles& files, absl::string_view prefix = "--tls-");

// Credentials for grpc::CreateChannel: `ca` "" plaintext, "system" TLS
// against gRPC's default roots, else TLS against the PEM roots in file `ca`.
// InvalidArgument naming `flag` when that file cannot be read or holds no PEM
// block.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const std::string& ca, absl::string_view flag = "--tls-ca");

// "tls" or "plaintext", for startup lines and errors.
inline const char* TransportName(bool tls) { return tls ? "tls" : "plaintext"; }

}  // namespace qwha::api

// SHA-256 digests (lower-case hex) of bytes, files and file sets, as used for
// content addressing in the registry and the quantized-base cache.
//
// Thread safety: all functions and Sha256Stream objects are independent; a
// Sha256Stream may not be shared between threads without locking.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace qwha::io {

// Incremental digest: Update() any number of times, then Finish() once.
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;

  void Update(std::string_view data);
  // 64 hex characters. The stream cannot be used afterwards.
  std::string Finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Digest of `data`.
std::string Sha256Hex(std::string_view data);

// Digest and size of the file at `path`, read in 1 MiB pieces; NotFound /
// Internal naming the path otherwise.
absl::StatusOr<std::pair<std::string, int64_t>> Sha256File(const std::string& path);

// Digest of a set of named files: sha256 over the lines "<name> <sha256>\n"
// sorted by name. Equal sets give equal digests whatever their order.
std::string Sha256OfFileSet(std::vector<std::pair<std::string, std::string>> name_and_sha256);

// True iff `s` is 64 lower-case hex characters.
bool IsSha256Hex(std::string_view s);

}  // namespace qwha::io

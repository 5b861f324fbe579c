// Internal to registry_store: helpers shared by its two .cc files (models,
// datasets and collection in registry_store.cc; adapters in
// registry_store_adapters.cc). Not part of the registry's contract.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "google/protobuf/timestamp.pb.h"
#include "qwha/v1/registry.pb.h"
#include "server/registry/blob_store.h"
#include "server/store/sqlite_db.h"

namespace qwha::registry::internal {

// store::NowSeconds()-style seconds → Timestamp (millisecond resolution).
google::protobuf::Timestamp ToTimestamp(double seconds);

// Names, digests and sizes of `files` are well-formed, names unique, and
// each blob is stored: InvalidArgument / FailedPrecondition naming `what`.
absl::Status CheckFiles(const std::string& what,
                        const google::protobuf::RepeatedPtrField<v1::FileInfo>& files,
                        const BlobStore& blobs);

// io::Sha256OfFileSet over (name, sha256).
std::string FileSetDigest(const google::protobuf::RepeatedPtrField<v1::FileInfo>& files);

// Records the files' blobs in the blobs table (existing rows kept).
absl::Status RecordBlobs(store::Transaction& tx,
                         const google::protobuf::RepeatedPtrField<v1::FileInfo>& files, double now);

}  // namespace qwha::registry::internal

// Job files: a qwha.v1.JobSpec written as YAML or JSON, with the proto's
// field names (snake_case), e.g.
//
//   base_model_id: m-123
//   quantization: {bits: 2, group_size: 64, method: gptq}
//   adapter: {type: qwha, rank: 64, target_modules: [q_proj, v_proj]}
//   train_dataset_id: d-456
//   training: {max_steps: 200, learning_rate: 1.0e-2}
//   labels: {team: nlp}
//
// Every field of JobSpec and its messages may appear; null or a missing key
// leaves the proto default (which the server reads as "use the default").
// Strings in YAML may be quoted or not; numbers may not be quoted; integers
// may also be strings of digits, as in protobuf's JSON mapping (which writes
// 64-bit integers as strings, so the JSON of a JobSpec parses back); other
// JSON values must have their JSON type. Repeated fields are lists, map
// fields (labels) mappings of strings.
//
// Errors are InvalidArgument "<source>[:<line>]: <key path>: <reason>", the
// key path dotted with list indices, e.g.
//   "job.yaml:7: training.max_steps: expected an integer, got ten"
//   "job.json: adapter.target_modules[1]: expected a string, got 3"
//   "job.yaml:3: quantization.bitz: unknown key (did you mean bits?)"
// Line numbers are given for YAML only.
//
// Thread safety: pure functions, safe to call concurrently.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/document.h"
#include "google/protobuf/message.h"
#include "qwha/v1/job.pb.h"

namespace qwha::client {

// Reads the file at `path`: JSON if the name ends in ".json", YAML
// otherwise. NotFound / PermissionDenied naming the path if it cannot be read.
absl::StatusOr<qwha::v1::JobSpec> ReadJobFile(const std::string& path);

// Parses `content`; `source` names it in errors.
absl::StatusOr<qwha::v1::JobSpec> ParseJobFile(absl::string_view content, DocumentFormat format,
                                               absl::string_view source);

// Fills `message` from `node` by the message's field names, with the rules
// and errors above (`path` prefixes the key paths; "" at the top). Fields not
// named in `node` are left as they are.
absl::Status FillMessage(const Node& node, absl::string_view source, const std::string& path,
                         google::protobuf::Message* message);

}  // namespace qwha::client

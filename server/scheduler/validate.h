// Validation of a submitted JobSpec at the API edge: every range and enum is
// checked and every referenced base model and dataset must exist, before
// anything is stored. Defaults are NOT applied here: a zero field means "the
// pipeline's default" (worker/pipeline/recipe.h, converted in
// worker/runtime/job_options), so no default is repeated in the server.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "qwha/v1/job.pb.h"
#include "server/registry/registry_store.h"

namespace qwha::scheduler {

// OK, or InvalidArgument whose message starts with the proto field path
// ("quantization.bits: must be 2, 3 or 4, got 5"), or NotFound naming the
// field and the id ("train_dataset_id: dataset d-… not found"). When the base
// model's config.json is readable, group_size must divide the hidden and
// intermediate sizes.
absl::Status ValidateJobSpec(const v1::JobSpec& spec, registry::RegistryStore& registry);

// Label keys: 1..63 chars of [a-z0-9_.-]; values ≤ 256 bytes; ≤ 32 labels.
absl::Status ValidateLabels(const google::protobuf::Map<std::string, std::string>& labels,
                            const std::string& field);

}  // namespace qwha::scheduler

// Training checkpoints: everything needed to continue a run exactly where it
// stopped, stored durably under a root directory:
//
//   <root>/step-<N>/adapters.safetensors   adapter state, "<slot name>/<state key>"
//   <root>/step-<N>/optimizer.safetensors  AdamW::StateDict()
//   <root>/step-<N>/rng.safetensors        generator states, "cpu", "cuda:<i>"
//   <root>/step-<N>/trainer_state.json     {"format", "step", "epoch",
//                                            "tokens_seen", "data_position",
//                                            "metrics"}
//   <root>/latest                          "step-<N>" of the newest checkpoint
//
// Durability: a checkpoint is written into "<root>/step-<N>.tmp" (every file
// fsynced), renamed to "<root>/step-<N>" (then the root is fsynced), and only
// then is `latest` replaced atomically. A crash at any point leaves the
// previous checkpoint loadable: LoadLatestCheckpoint ignores *.tmp
// directories, and if `latest` names a directory that is missing it falls
// back to the highest complete step-<N>.
//
// Thread safety: one writer per root at a time; loading while another
// process writes is safe (it sees the previous or the new checkpoint).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/llama.h"

namespace qwha::train {

struct TrainingCheckpoint {
  int64_t step = 0;                       // optimizer steps completed (the schedule's position)
  int64_t epoch = 0;                      // epoch of the last micro-batch consumed
  int64_t tokens_seen = 0;                // input tokens consumed so far
  std::string data_position;              // BatchSource::State(), opaque UTF-8 text
  std::map<std::string, double> metrics;  // e.g. "loss", "eval_loss"; NaN allowed
  std::map<std::string, torch::Tensor> adapter_state;
  std::map<std::string, torch::Tensor> optimizer_state;
  std::map<std::string, torch::Tensor> rng_state;
};

// Writes `checkpoint` as <root>/step-<checkpoint.step> (replacing one of that
// step if present), points `latest` at it, then removes all but the newest
// `keep_last` step directories (keep_last <= 0 keeps all) and leftover
// *.tmp directories. Creates root if needed. Returns the checkpoint's
// directory. Errors name the path: InvalidArgument for a negative step or a
// data_position that is not UTF-8, I/O errors as from io::WriteFileAtomically.
absl::StatusOr<std::string> SaveCheckpoint(const std::string& root,
                                           const TrainingCheckpoint& checkpoint, int keep_last);

// The directory of the newest complete checkpoint under root: the one
// `latest` names if it exists, else the highest step-<N> that holds a
// trainer_state.json. NotFound if root holds none.
absl::StatusOr<std::string> FindLatestCheckpoint(const std::string& root);

// Reads the checkpoint in `dir` (tensors on the CPU). NotFound if a file is
// missing; InvalidArgument naming the file and field if one is malformed.
absl::StatusOr<TrainingCheckpoint> LoadCheckpoint(const std::string& dir);

// LoadCheckpoint(FindLatestCheckpoint(root)).
absl::StatusOr<TrainingCheckpoint> LoadLatestCheckpoint(const std::string& root);

// The state of every attached adapter, keyed "<slot name>/<state key>"
// (clones on the CPU). Slots without an adapter contribute nothing.
std::map<std::string, torch::Tensor> CollectAdapterState(const model::LlamaModel& model);

// Loads `state` (as from CollectAdapterState) into the adapters attached to
// `model` via Adapter::LoadStateDict, which replaces the adapters' tensors.
// InvalidArgument naming the slot if an adapter's entries are missing or
// rejected, or for an entry of a slot without an adapter. Adapters loaded
// before an error keep their new state.
absl::Status RestoreAdapterState(model::LlamaModel& model,
                                 const std::map<std::string, torch::Tensor>& state);

// The default generators' states: "cpu" and, where CUDA is available,
// "cuda:<i>" for every device (uint8 tensors, as Generator::get_state).
std::map<std::string, torch::Tensor> CaptureRngState();

// Sets the generators from CaptureRngState() output. A "cuda:<i>" entry for a
// device that does not exist here is ignored (a CPU resume of a GPU run).
// InvalidArgument naming the entry if the generator rejects it.
absl::Status RestoreRngState(const std::map<std::string, torch::Tensor>& state);

}  // namespace qwha::train

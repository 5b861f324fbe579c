// Tokenized fine-tuning datasets: JSONL records (jsonl.h) encoded with a
// Hugging Face tokenizer into token ids with a per-token loss mask, split into
// train and held-out eval sets.
//
//   auto tok = qwha::tokenizer::Tokenizer::FromFile("tokenizer.json");
//   qwha::data::DatasetOptions options;
//   options.train_path = "train.jsonl";
//   options.eval_fraction = 0.05;
//   options.seed = 1234;
//   auto split = qwha::data::LoadDatasets(options, **tok);
//   if (!split.ok()) return split.status();   // names file:line on bad data
//   // split->train, split->eval; see batcher.h for training batches.
//
// Encoding. An example is rendered to pieces (text, or the EOS id) that are
// supervised (loss) or context:
//   text               BOS  text* EOS*
//   prompt/completion  BOS  prompt  completion* EOS*
//   messages           BOS  the chat template of chat_template.h (assistant
//                      contents and their EOS supervised)
// (* = supervised). BOS is the tokenizer's bos_id() and is left out when it
// has none or `add_bos` is false; it is never supervised. EOS is the
// tokenizer's eos_id() (a tokenizer without one is rejected). Every text piece
// is encoded on its own with Encode(piece, add_special_tokens = false), so the
// mask boundary falls exactly between the prompt's and the completion's tokens,
// and the prompt ids used at evaluation (EvalPairs) are exactly the ids seen in
// training. At a piece boundary the ids may differ from those of encoding the
// concatenated text in one call (a BPE merge across the boundary does not
// happen; a sentencepiece-style tokenizer prepends its "▁" to each piece), as
// with most fine-tuning libraries. The prompt and the completion are
// concatenated as given: put any separator (" ", "\n") in one of them.
//
// Thread safety: LoadDataset(s) and the const methods may be called
// concurrently; a Dataset is a plain value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/data/jsonl.h"
#include "worker/tokenizer/tokenizer.h"

namespace qwha::data {

// One tokenized example.
struct Example {
  std::vector<int32_t> ids;   // BOS (optional) ... EOS
  std::vector<uint8_t> mask;  // same length; 1 = this token is a loss target
  int64_t line = 0;           // 1-based line in the source file
  // Exact-match evaluation (prompt/completion and messages; 0 / "" for text):
  // ids[0, prompt_length) is the prompt given to the model, `reference` the
  // text it should generate before EOS (the completion, or the content of the
  // last assistant message).
  int64_t prompt_length = 0;
  std::string reference;
};

// A prompt for exact-match evaluation and the reply it should produce.
struct EvalPair {
  std::vector<int32_t> prompt_ids;  // includes BOS; generation continues from here
  std::string reference;            // compare with the decoded generation up to EOS
  int64_t line = 0;                 // 1-based line in the source file
};

struct DatasetStats {
  int64_t examples = 0;
  int64_t tokens = 0;             // all ids, BOS and EOS included
  int64_t supervised_tokens = 0;  // ids with mask 1
};

struct Dataset {
  std::string source;  // the file the examples came from
  ExampleFormat format = ExampleFormat::kText;
  std::vector<Example> examples;  // in file order

  DatasetStats Stats() const;
  // One pair per example, in file order; empty for the text form.
  std::vector<EvalPair> EvalPairs() const;
};

struct EncodeOptions {
  bool add_bos = true;  // BOS first, when the tokenizer has one
};

// The ids and mask of `record` as described above. InvalidArgument when the
// tokenizer has no EOS id, or for messages that break ValidateChat(for_training
// = true) (ParseRecord never returns such a record).
absl::StatusOr<Example> EncodeRecord(const Record& record, const tokenizer::Tokenizer& tokenizer,
                                     const EncodeOptions& options = {});

// Encodes already-rendered pieces (chat_template.h) after an optional BOS:
// the building block of EncodeRecord, also for generation prompts at
// inference (RenderChat(history, add_generation_prompt = true)). Sets
// prompt_length to the start of the piece marked last_reply_start (0 if none).
// InvalidArgument when a piece is EOS and the tokenizer has no EOS id.
absl::StatusOr<Example> EncodePieces(const std::vector<ChatPiece>& pieces,
                                     const tokenizer::Tokenizer& tokenizer,
                                     const EncodeOptions& options = {});

struct LoadOptions {
  EncodeOptions encode;
  int max_errors = 10;  // malformed lines listed in one error (see ReadJsonl)
  // Threads that encode examples (the result does not depend on it);
  // 0 = std::thread::hardware_concurrency().
  int num_threads = 0;
};

struct DatasetOptions {
  std::string train_path;  // JSONL, required
  // Held-out evaluation data: either a separate JSONL file (`eval_path`), or
  // a fraction of the train file (`eval_fraction` in [0, 1)): round(fraction
  // * n) examples, at least 1 when fraction > 0 and n >= 2, at most n - 1,
  // chosen by `seed` alone (not by the tokenizer) and removed from train.
  // Setting both is InvalidArgument. Neither: the eval set is empty.
  std::string eval_path;
  double eval_fraction = 0.0;
  uint64_t seed = 0;
  LoadOptions load;
};

struct DatasetSplit {
  Dataset train;  // in file order
  Dataset eval;   // in file order; may be empty (see DatasetOptions)
};

// Reads, validates and encodes one JSONL file. Errors of ReadJsonl (naming
// file:line for malformed lines), InvalidArgument when the tokenizer has no
// EOS id; nothing partial is returned.
absl::StatusOr<Dataset> LoadDataset(const std::string& path, const tokenizer::Tokenizer& tokenizer,
                                    const LoadOptions& options = {});

// The train and eval sets of `options`. Errors as LoadDataset for either file,
// InvalidArgument for inconsistent options (no train_path, eval_fraction
// outside [0, 1), both eval_path and eval_fraction).
absl::StatusOr<DatasetSplit> LoadDatasets(const DatasetOptions& options,
                                          const tokenizer::Tokenizer& tokenizer);

// The indices (ascending) of the examples that form the eval split of a
// dataset of `n` examples, as LoadDatasets picks them.
std::vector<int64_t> EvalSplitIndices(int64_t n, double eval_fraction, uint64_t seed);

}  // namespace qwha::data

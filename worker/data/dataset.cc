#include "worker/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/data/shuffle.h"

namespace qwha::data {
namespace {

std::vector<ChatPiece> RecordPieces(const Record& record) {
  auto text = [](std::string s, bool supervised, bool reply_start) {
    ChatPiece piece;
    piece.text = std::move(s);
    piece.supervised = supervised;
    piece.last_reply_start = reply_start;
    return piece;
  };
  ChatPiece eos;
  eos.kind = ChatPiece::Kind::kEos;
  eos.supervised = true;
  switch (record.format) {
    case ExampleFormat::kText:
      return {text(record.text, true, false), eos};
    case ExampleFormat::kPromptCompletion:
      return {text(record.prompt, false, false), text(record.completion, true, true), eos};
    case ExampleFormat::kMessages:
      return RenderChat(record.messages, /*add_generation_prompt=*/false);
  }
  return {};
}

std::string RecordReference(const Record& record) {
  switch (record.format) {
    case ExampleFormat::kText:
      return "";
    case ExampleFormat::kPromptCompletion:
      return record.completion;
    case ExampleFormat::kMessages:
      for (auto it = record.messages.rbegin(); it != record.messages.rend(); ++it) {
        if (it->role == Role::kAssistant) return it->content;
      }
      return "";
  }
  return "";
}

absl::Status NoEos() {
  return absl::InvalidArgumentError(
      "the tokenizer has no EOS token (eos_id()); examples must end with one");
}

// Encodes records[begin, end) into examples[begin, end).
void EncodeRange(const std::vector<Record>& records, const tokenizer::Tokenizer& tokenizer,
                 const EncodeOptions& options, size_t begin, size_t end,
                 std::vector<Example>& examples) {
  for (size_t i = begin; i < end; ++i) {
    // The EOS id was checked by the caller and the records were validated by
    // ParseRecord, so encoding cannot fail.
    Example example = *EncodeRecord(records[i], tokenizer, options);
    examples[i] = std::move(example);
  }
}

}  // namespace

DatasetStats Dataset::Stats() const {
  DatasetStats stats;
  stats.examples = static_cast<int64_t>(examples.size());
  for (const Example& e : examples) {
    stats.tokens += static_cast<int64_t>(e.ids.size());
    for (uint8_t m : e.mask) stats.supervised_tokens += m;
  }
  return stats;
}

std::vector<EvalPair> Dataset::EvalPairs() const {
  std::vector<EvalPair> pairs;
  if (format == ExampleFormat::kText) return pairs;
  pairs.reserve(examples.size());
  for (const Example& e : examples) {
    EvalPair pair;
    pair.prompt_ids.assign(e.ids.begin(), e.ids.begin() + e.prompt_length);
    pair.reference = e.reference;
    pair.line = e.line;
    pairs.push_back(std::move(pair));
  }
  return pairs;
}

absl::StatusOr<Example> EncodePieces(const std::vector<ChatPiece>& pieces,
                                     const tokenizer::Tokenizer& tokenizer,
                                     const EncodeOptions& options) {
  Example example;
  auto append = [&example](int32_t id, bool supervised) {
    example.ids.push_back(id);
    example.mask.push_back(supervised ? 1 : 0);
  };
  if (options.add_bos && tokenizer.bos_id()) append(*tokenizer.bos_id(), false);
  for (const ChatPiece& piece : pieces) {
    if (piece.last_reply_start) example.prompt_length = static_cast<int64_t>(example.ids.size());
    if (piece.kind == ChatPiece::Kind::kEos) {
      if (!tokenizer.eos_id()) return NoEos();
      append(*tokenizer.eos_id(), piece.supervised);
      continue;
    }
    if (piece.text.empty()) continue;
    for (int32_t id : tokenizer.Encode(piece.text, /*add_special_tokens=*/false)) {
      append(id, piece.supervised);
    }
  }
  return example;
}

absl::StatusOr<Example> EncodeRecord(const Record& record, const tokenizer::Tokenizer& tokenizer,
                                     const EncodeOptions& options) {
  if (record.format == ExampleFormat::kMessages) {
    if (absl::Status s = ValidateChat(record.messages, /*for_training=*/true); !s.ok()) return s;
  }
  absl::StatusOr<Example> example = EncodePieces(RecordPieces(record), tokenizer, options);
  if (!example.ok()) return example.status();
  example->line = record.line;
  example->reference = RecordReference(record);
  return example;
}

absl::StatusOr<Dataset> LoadDataset(const std::string& path, const tokenizer::Tokenizer& tokenizer,
                                    const LoadOptions& options) {
  if (!tokenizer.eos_id()) {
    return absl::Status(NoEos().code(), absl::StrCat(path, ": ", NoEos().message()));
  }
  absl::StatusOr<JsonlFile> file = ReadJsonl(path, options.max_errors);
  if (!file.ok()) return file.status();

  Dataset dataset;
  dataset.source = path;
  dataset.format = file->format;
  const std::vector<Record>& records = file->records;
  dataset.examples.resize(records.size());

  size_t threads = options.num_threads > 0 ? static_cast<size_t>(options.num_threads)
                                           : std::max(1u, std::thread::hardware_concurrency());
  // Below a few hundred examples a thread costs more than it saves.
  threads = std::min(threads, std::max<size_t>(1, records.size() / 256));
  if (threads <= 1) {
    EncodeRange(records, tokenizer, options.encode, 0, records.size(), dataset.examples);
  } else {
    std::vector<std::thread> workers;
    const size_t chunk = (records.size() + threads - 1) / threads;
    for (size_t begin = 0; begin < records.size(); begin += chunk) {
      const size_t end = std::min(records.size(), begin + chunk);
      workers.emplace_back([&, begin, end] {
        EncodeRange(records, tokenizer, options.encode, begin, end, dataset.examples);
      });
    }
    for (std::thread& t : workers) t.join();
  }
  return dataset;
}

std::vector<int64_t> EvalSplitIndices(int64_t n, double eval_fraction, uint64_t seed) {
  if (n < 2 || !(eval_fraction > 0.0)) return {};
  int64_t count = static_cast<int64_t>(std::llround(eval_fraction * static_cast<double>(n)));
  count = std::clamp<int64_t>(count, 1, n - 1);
  std::vector<int64_t> order = Permutation(n, DeriveSeed(seed, RandomStream::kEvalSplit, 0));
  order.resize(static_cast<size_t>(count));
  std::sort(order.begin(), order.end());
  return order;
}

absl::StatusOr<DatasetSplit> LoadDatasets(const DatasetOptions& options,
                                          const tokenizer::Tokenizer& tokenizer) {
  if (options.train_path.empty()) return absl::InvalidArgumentError("train_path is empty");
  if (!(options.eval_fraction >= 0.0 && options.eval_fraction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("eval_fraction must be in [0, 1), got ", options.eval_fraction));
  }
  if (!options.eval_path.empty() && options.eval_fraction > 0.0) {
    return absl::InvalidArgumentError("set eval_path or eval_fraction, not both");
  }
  absl::StatusOr<Dataset> train = LoadDataset(options.train_path, tokenizer, options.load);
  if (!train.ok()) return train.status();

  DatasetSplit split;
  if (!options.eval_path.empty()) {
    absl::StatusOr<Dataset> eval = LoadDataset(options.eval_path, tokenizer, options.load);
    if (!eval.ok()) return eval.status();
    split.train = *std::move(train);
    split.eval = *std::move(eval);
    return split;
  }

  const std::vector<int64_t> held_out = EvalSplitIndices(
      static_cast<int64_t>(train->examples.size()), options.eval_fraction, options.seed);
  split.train.source = split.eval.source = train->source;
  split.train.format = split.eval.format = train->format;
  size_t next = 0;  // into held_out
  for (size_t i = 0; i < train->examples.size(); ++i) {
    if (next < held_out.size() && held_out[next] == static_cast<int64_t>(i)) {
      split.eval.examples.push_back(std::move(train->examples[i]));
      ++next;
    } else {
      split.train.examples.push_back(std::move(train->examples[i]));
    }
  }
  return split;
}

}  // namespace qwha::data

// qwhactl base-model and dataset commands: models register | upload | list |
// get | delete, datasets push | list | delete.
#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "client/render.h"
#include "worker/data/jsonl.h"

namespace qwha::client {
namespace {

using qwha::v1::BaseModel;

std::string Short(const std::string& digest) { return digest.substr(0, 12); }

int64_t ModelSize(const BaseModel& model) {
  int64_t total = 0;
  for (const auto& file : model.files()) total += file.size();
  return total;
}

// --name, else the last component of `path` (without a ".jsonl" extension).
std::string NameFor(Context& context, const std::string& path, bool strip_extension) {
  if (context.flags().Has("name")) return context.flags().String("name");
  std::filesystem::path p(path);
  if (!p.has_filename()) p = p.parent_path();  // "dir/"
  return strip_extension ? p.stem().string() : p.filename().string();
}

int PrintModel(Context& context, const BaseModel& model, const std::string& verb) {
  if (context.json()) return context.PrintJson(model);
  context.out() << verb << " model " << model.id() << " (" << model.name() << ", "
                << model.files_size() << " files, " << HumanBytes(ModelSize(model)) << ", digest "
                << Short(model.digest()) << ")\n";
  return kExitOk;
}

int Register(Context& context) {
  auto model =
      context.client().RegisterModel(NameFor(context, context.arg(0), false), context.arg(0));
  if (!model.ok()) return context.Fail(model.status());
  return PrintModel(context, *model, "Registered");
}

int Upload(Context& context) {
  auto model = context.client().UploadModel(context.arg(0), NameFor(context, context.arg(0), false),
                                            context.TransferProgress("Uploading"));
  context.EndTransfer();
  if (!model.ok()) return context.Fail(model.status());
  return PrintModel(context, *model, "Uploaded");
}

int ListModels(Context& context) {
  auto models = context.client().ListModels();
  if (!models.ok()) return context.Fail(models.status());
  if (context.json()) return context.PrintJson(*models);
  Table table({"ID", "NAME", "FILES", "SIZE", "DIGEST", "AGE"});
  const auto now = std::chrono::system_clock::now();
  for (const BaseModel& model : models->models()) {
    table.AddRow({model.id(), model.name(), absl::StrCat(model.files_size()),
                  HumanBytes(ModelSize(model)), Short(model.digest()),
                  Age(model.created_at(), now)});
  }
  table.Print(context.out());
  return kExitOk;
}

int GetModel(Context& context) {
  auto model = context.client().GetModel(context.arg(0));
  if (!model.ok()) return context.Fail(model.status());
  if (context.json()) return context.PrintJson(*model);
  PrintFields(context.out(), {{"ID", model->id()},
                              {"Name", model->name()},
                              {"Digest", model->digest()},
                              {"Source", model->source_path()},
                              {"Size", HumanBytes(ModelSize(*model))},
                              {"Created", LocalTime(model->created_at())}});
  context.out() << "\n";
  Table files({"FILE", "SIZE", "SHA256"});
  for (const auto& file : model->files()) {
    files.AddRow({file.name(), HumanBytes(file.size()), file.sha256()});
  }
  files.Print(context.out());
  return kExitOk;
}

int DeleteModel(Context& context) {
  auto status = context.client().DeleteModel(context.arg(0));
  if (!status.ok()) return context.Fail(status);
  if (context.json()) return context.PrintJson(qwha::v1::DeleteResponse());
  context.out() << "Deleted model " << context.arg(0) << "\n";
  return kExitOk;
}

int Push(Context& context) {
  const std::string& path = context.arg(0);
  if (!context.flags().Bool("no-validate")) {
    // The server checks every line too; checking here first fails fast,
    // before a large upload, with the same messages.
    auto file = data::ReadJsonl(path);
    if (!file.ok()) return context.Fail(file.status());
  }
  auto dataset = context.client().UploadDataset(path, NameFor(context, path, true),
                                                context.TransferProgress("Uploading"));
  context.EndTransfer();
  if (!dataset.ok()) return context.Fail(dataset.status());
  if (context.json()) return context.PrintJson(*dataset);
  context.out() << "Uploaded dataset " << dataset->id() << " (" << dataset->name() << ", "
                << dataset->records() << " " << dataset->format() << " records, "
                << HumanBytes(dataset->file().size()) << ")\n";
  return kExitOk;
}

int ListDatasets(Context& context) {
  auto datasets = context.client().ListDatasets();
  if (!datasets.ok()) return context.Fail(datasets.status());
  if (context.json()) return context.PrintJson(*datasets);
  Table table({"ID", "NAME", "FORMAT", "RECORDS", "SIZE", "AGE"});
  const auto now = std::chrono::system_clock::now();
  for (const auto& dataset : datasets->datasets()) {
    table.AddRow({dataset.id(), dataset.name(), dataset.format(), absl::StrCat(dataset.records()),
                  HumanBytes(dataset.file().size()), Age(dataset.created_at(), now)});
  }
  table.Print(context.out());
  return kExitOk;
}

int DeleteDataset(Context& context) {
  auto status = context.client().DeleteDataset(context.arg(0));
  if (!status.ok()) return context.Fail(status);
  if (context.json()) return context.PrintJson(qwha::v1::DeleteResponse());
  context.out() << "Deleted dataset " << context.arg(0) << "\n";
  return kExitOk;
}

const FlagSpec kNameFlag{"name", FlagType::kString, "N", "name (default: from the path)"};

}  // namespace

void AddModelAndDatasetCommands(std::vector<Command>* commands) {
  commands->push_back({"models register",
                       "[--name N] PATH",
                       "Register a model directory on the server",
                       "PATH is a directory the scheduler can read under its model root\n"
                       "(config.json, *.safetensors, tokenizer.json).",
                       {kNameFlag},
                       1,
                       1,
                       Register});
  commands->push_back({"models upload",
                       "[--name N] DIR",
                       "Upload a local model directory",
                       "Uploads every file below DIR (links followed, names starting with '.'\n"
                       "skipped) with its size and sha256; the server verifies both.",
                       {kNameFlag},
                       1,
                       1,
                       Upload});
  commands->push_back({"models list", "", "List base models", "", {}, 0, 0, ListModels});
  commands->push_back(
      {"models get", "ID", "Show a base model and its files", "", {}, 1, 1, GetModel});
  commands->push_back({"models delete", "ID", "Delete a base model", "", {}, 1, 1, DeleteModel});
  commands->push_back(
      {"datasets push",
       "[--name N] FILE",
       "Upload a JSONL dataset",
       "Every line is {\"text\"}, {\"prompt\",\"completion\"} or {\"messages\"}; the file\n"
       "is checked locally first (exit code 5 naming the bad lines), then uploaded.",
       {kNameFlag, {"no-validate", FlagType::kBool, "", "skip the local check"}},
       1,
       1,
       Push});
  commands->push_back({"datasets list", "", "List datasets", "", {}, 0, 0, ListDatasets});
  commands->push_back({"datasets delete", "ID", "Delete a dataset", "", {}, 1, 1, DeleteDataset});
}

}  // namespace qwha::client

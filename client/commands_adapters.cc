// qwhactl adapter commands: adapters list | get | pull | delete.
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/commands.h"
#include "client/render.h"
#include "nlohmann/json.hpp"

namespace qwha::client {
namespace {

using qwha::v1::Adapter;

int64_t TotalSize(const google::protobuf::RepeatedPtrField<qwha::v1::FileInfo>& files) {
  int64_t total = 0;
  for (const auto& file : files) total += file.size();
  return total;
}

std::string Short(const std::string& digest) { return digest.substr(0, 12); }

int List(Context& context) {
  const ParsedFlags& f = context.flags();
  qwha::v1::ListAdaptersRequest request;
  request.set_job_id(f.String("job"));
  request.set_base_model_id(f.String("model"));
  request.set_adapter_type(f.String("type"));
  for (const std::string& text : f.List("label")) {
    auto pair = ParseKeyValue("label", text);
    if (!pair.ok()) return context.Usage(std::string(pair.status().message()));
    (*request.mutable_labels())[pair->first] = pair->second;
  }
  const int64_t limit = f.Int("limit", 50);
  if (limit <= 0) return context.Usage("--limit: expected a positive number");
  qwha::v1::ListAdaptersResponse all;
  do {
    request.set_page_size(
        static_cast<int32_t>(std::min<int64_t>(limit - all.adapters_size(), 1000)));
    auto page = context.client().ListAdapters(request);
    if (!page.ok()) return context.Fail(page.status());
    for (Adapter& adapter : *page->mutable_adapters()) {
      if (all.adapters_size() < limit) *all.add_adapters() = std::move(adapter);
    }
    all.set_next_page_token(page->next_page_token());
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty() && all.adapters_size() < limit);
  if (context.json()) return context.PrintJson(all);
  Table table({"ID", "NAME", "JOB", "MODEL", "TYPE", "BITS", "SIZE", "AGE"});
  const auto now = std::chrono::system_clock::now();
  for (const Adapter& adapter : all.adapters()) {
    table.AddRow({adapter.id(), adapter.name(), adapter.job_id(), adapter.base_model_id(),
                  adapter.adapter().type().empty() ? "qwha" : adapter.adapter().type(),
                  absl::StrCat(adapter.quantization().bits()),
                  HumanBytes(TotalSize(adapter.files())), Age(adapter.created_at(), now)});
  }
  table.Print(context.out());
  if (!all.next_page_token().empty()) {
    context.err() << "(more adapters: raise --limit to see them)\n";
  }
  return kExitOk;
}

// metrics.json as indented "key: value" lines, or as it is if not an object.
std::string Metrics(const std::string& metrics_json) {
  if (metrics_json.empty()) return "";
  nlohmann::json metrics = nlohmann::json::parse(metrics_json, nullptr, /*allow_exceptions=*/false);
  if (!metrics.is_object()) return metrics_json;
  std::vector<std::string> lines;
  for (const auto& [key, value] : metrics.items()) {
    lines.push_back(absl::StrCat(key, " ", value.dump()));
  }
  return absl::StrJoin(lines, ", ");
}

int Get(Context& context) {
  auto adapter = context.client().GetAdapter(context.arg(0));
  if (!adapter.ok()) return context.Fail(adapter.status());
  if (context.json()) return context.PrintJson(*adapter);
  const auto& q = adapter->quantization();
  const auto& a = adapter->adapter();
  std::vector<std::string> labels;
  for (const auto& [key, value] : adapter->labels())
    labels.push_back(absl::StrCat(key, "=", value));
  std::sort(labels.begin(), labels.end());
  const auto now = std::chrono::system_clock::now();
  PrintFields(context.out(),
              {{"ID", adapter->id()},
               {"Name", adapter->name()},
               {"Job", adapter->job_id()},
               {"Base model", absl::StrCat(adapter->base_model_id(), " (digest ",
                                           Short(adapter->base_model_digest()), ")")},
               {"Quantization",
                absl::StrCat(q.bits(), "-bit ", q.method().empty() ? "rtn" : q.method(),
                             q.group_size() ? absl::StrCat(", group size ", q.group_size()) : "")},
               {"Adapter", absl::StrCat(a.type().empty() ? "qwha" : a.type(),
                                        a.rank() ? absl::StrCat(", rank ", a.rank()) : "")},
               {"Metrics", Metrics(adapter->metrics_json())},
               {"Labels", absl::StrJoin(labels, ",")},
               {"Digest", adapter->digest()},
               {"Created", absl::StrCat(LocalTime(adapter->created_at()), " (",
                                        Age(adapter->created_at(), now), " ago)")}});
  context.out() << "\n";
  Table files({"FILE", "SIZE", "SHA256"});
  for (const auto& file : adapter->files()) {
    files.AddRow({file.name(), HumanBytes(file.size()), file.sha256()});
  }
  files.Print(context.out());
  return kExitOk;
}

int Pull(Context& context) {
  const std::string dir = context.flags().String("dir", context.arg(0));
  auto adapter =
      context.client().PullAdapter(context.arg(0), dir, context.TransferProgress("Pulling"));
  context.EndTransfer();
  if (!adapter.ok()) return context.Fail(adapter.status());
  if (context.json()) return context.PrintJson(*adapter);
  context.out() << "Pulled adapter " << adapter->id() << " (" << adapter->files_size() << " files, "
                << HumanBytes(TotalSize(adapter->files())) << ", sha256 verified) to " << dir
                << "\n";
  return kExitOk;
}

int Delete(Context& context) {
  auto status = context.client().DeleteAdapter(context.arg(0));
  if (!status.ok()) return context.Fail(status);
  if (context.json()) return context.PrintJson(qwha::v1::DeleteResponse());
  context.out() << "Deleted adapter " << context.arg(0) << "\n";
  return kExitOk;
}

}  // namespace

void AddAdapterCommands(std::vector<Command>* commands) {
  commands->push_back({"adapters list",
                       "[flags]",
                       "List adapters, newest first",
                       "",
                       {{"job", FlagType::kString, "ID", "only the adapter of this job"},
                        {"model", FlagType::kString, "ID", "only adapters of this base model"},
                        {"type", FlagType::kString, "TYPE", "only this adapter type"},
                        {"label", FlagType::kList, "K=V", "only adapters with this label"},
                        {"limit", FlagType::kInt, "N", "at most N adapters (default 50)"}},
                       0,
                       0,
                       List});
  commands->push_back({"adapters get", "ID", "Show an adapter and its files", "", {}, 1, 1, Get});
  commands->push_back(
      {"adapters pull",
       "ID [--dir D]",
       "Download an adapter's files",
       "Downloads every file into D (default: ./ID). An interrupted pull resumes\n"
       "where it stopped (FILE.part); each file is checked against its sha256 before\n"
       "it takes its name.",
       {{"dir", FlagType::kString, "D", "destination directory (default ./ID)"}},
       1,
       1,
       Pull});
  commands->push_back({"adapters delete", "ID", "Delete an adapter", "", {}, 1, 1, Delete});
}

}  // namespace qwha::client

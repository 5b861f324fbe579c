// qwhactl job commands: submit, list, get, watch, cancel, events.
#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/commands.h"
#include "client/job_file.h"
#include "client/render.h"
#include "client/watch_view.h"

namespace qwha::client {
namespace {

using qwha::v1::Job;
using qwha::v1::JobSpec;

// "default" for the proto's 0, which the server reads as its default.
template <typename T>
std::string OrDefault(T value) {
  return value == T() ? std::string("default") : absl::StrCat(value);
}

std::string Labels(const google::protobuf::Map<std::string, std::string>& labels) {
  std::vector<std::string> pairs;
  for (const auto& [key, value] : labels) pairs.push_back(absl::StrCat(key, "=", value));
  std::sort(pairs.begin(), pairs.end());
  return absl::StrJoin(pairs, ",");
}

// --label K=V pairs into `labels`; a usage message naming --label on error.
absl::Status AddLabels(const ParsedFlags& flags,
                       google::protobuf::Map<std::string, std::string>* labels) {
  for (const std::string& text : flags.List("label")) {
    auto pair = ParseKeyValue("label", text);
    if (!pair.ok()) return pair.status();
    (*labels)[pair->first] = pair->second;
  }
  return absl::OkStatus();
}

// Flags over the job file (if any): the spec to submit, or a usage message.
absl::StatusOr<JobSpec> SpecFromFlags(const ParsedFlags& f) {
  JobSpec spec;
  if (f.Has("file")) {
    auto from_file = ReadJobFile(f.String("file"));
    if (!from_file.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--file: ", from_file.status().message()));
    }
    spec = *std::move(from_file);
  }
  if (f.Has("model")) spec.set_base_model_id(f.String("model"));
  if (f.Has("bits")) spec.mutable_quantization()->set_bits(static_cast<int32_t>(f.Int("bits")));
  if (f.Has("group-size")) {
    spec.mutable_quantization()->set_group_size(static_cast<int32_t>(f.Int("group-size")));
  }
  if (f.Has("quant-method")) spec.mutable_quantization()->set_method(f.String("quant-method"));
  if (f.Has("adapter")) spec.mutable_adapter()->set_type(f.String("adapter"));
  if (f.Has("rank")) spec.mutable_adapter()->set_rank(static_cast<int32_t>(f.Int("rank")));
  if (f.Has("alpha")) spec.mutable_adapter()->set_alpha(f.Double("alpha"));
  if (f.Has("target-modules")) {
    spec.mutable_adapter()->clear_target_modules();
    for (absl::string_view module : absl::StrSplit(f.String("target-modules"), ',')) {
      module = absl::StripAsciiWhitespace(module);
      if (!module.empty()) spec.mutable_adapter()->add_target_modules(std::string(module));
    }
    if (spec.adapter().target_modules_size() == 0) {
      return absl::InvalidArgumentError("--target-modules: expected a comma-separated list");
    }
  }
  if (f.Has("train-dataset")) spec.set_train_dataset_id(f.String("train-dataset"));
  if (f.Has("eval-dataset")) spec.set_eval_dataset_id(f.String("eval-dataset"));
  if (f.Has("max-steps")) spec.mutable_training()->set_max_steps(f.Int("max-steps"));
  if (f.Has("lr")) spec.mutable_training()->set_learning_rate(f.Double("lr"));
  if (f.Has("batch-size")) spec.mutable_training()->set_batch_size(f.Int("batch-size"));
  if (f.Has("seq-len")) spec.mutable_training()->set_seq_len(f.Int("seq-len"));
  if (f.Has("priority")) spec.set_priority(static_cast<int32_t>(f.Int("priority")));
  if (f.Has("name")) spec.set_name(f.String("name"));
  if (f.Bool("load-on-inference-servers")) spec.set_load_on_inference_servers(true);
  if (auto status = AddLabels(f, spec.mutable_labels()); !status.ok()) return status;
  if (spec.base_model_id().empty()) {
    return absl::InvalidArgumentError("--model is required (or base_model_id in --file)");
  }
  if (spec.train_dataset_id().empty()) {
    return absl::InvalidArgumentError(
        "--train-dataset is required (or train_dataset_id in --file)");
  }
  return spec;
}

int Submit(Context& context) {
  auto spec = SpecFromFlags(context.flags());
  if (!spec.ok()) return context.Usage(std::string(spec.status().message()));
  auto job = context.client().SubmitJob(*spec, context.flags().String("idempotency-key"));
  if (!job.ok()) return context.Fail(job.status());
  if (context.flags().Bool("watch")) {
    if (!context.json()) context.out() << "Submitted job " << job->id() << "\n";
    return WatchAndReport(context, job->id());
  }
  if (context.json()) return context.PrintJson(*job);
  context.out() << "Submitted job " << job->id() << " (" << StateName(job->state()) << ")\n"
                << "Follow it with: qwhactl watch " << job->id() << "\n";
  return kExitOk;
}

int List(Context& context) {
  const ParsedFlags& f = context.flags();
  qwha::v1::ListJobsRequest request;
  for (const std::string& text : f.List("state")) {
    for (absl::string_view name : absl::StrSplit(text, ',', absl::SkipEmpty())) {
      qwha::v1::JobState state;
      if (!ParseState(std::string(name), &state)) {
        return context.Usage(absl::StrCat("--state: unknown state \"", name,
                                          "\" (queued, assigned, running, succeeded, failed, "
                                          "cancelled)"));
      }
      request.add_states(state);
    }
  }
  if (auto status = AddLabels(f, request.mutable_labels()); !status.ok()) {
    return context.Usage(std::string(status.message()));
  }
  request.set_base_model_id(f.String("model"));
  const int64_t limit = f.Int("limit", 50);
  if (limit <= 0) return context.Usage("--limit: expected a positive number");
  qwha::v1::ListJobsResponse all;
  do {
    request.set_page_size(static_cast<int32_t>(std::min<int64_t>(limit - all.jobs_size(), 1000)));
    auto page = context.client().ListJobs(request);
    if (!page.ok()) return context.Fail(page.status());
    for (Job& job : *page->mutable_jobs()) {
      if (all.jobs_size() < limit) *all.add_jobs() = std::move(job);
    }
    all.set_next_page_token(page->next_page_token());
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty() && all.jobs_size() < limit);
  if (context.json()) return context.PrintJson(all);
  Table table({"ID", "NAME", "STATE", "PROGRESS", "MODEL", "ADAPTER", "BITS", "AGE"});
  const auto now = std::chrono::system_clock::now();
  for (const Job& job : all.jobs()) {
    const JobSpec& spec = job.spec();
    table.AddRow({job.id(), spec.name(), StateName(job.state()), ProgressSummary(job),
                  spec.base_model_id(),
                  spec.adapter().type().empty() ? "qwha" : spec.adapter().type(),
                  absl::StrCat(spec.quantization().bits()), Age(job.created_at(), now)});
  }
  table.Print(context.out());
  if (!all.next_page_token().empty()) {
    context.err() << "(more jobs: raise --limit to see them)\n";
  }
  return kExitOk;
}

void PrintJob(const Job& job, std::ostream& out) {
  const JobSpec& spec = job.spec();
  const auto now = std::chrono::system_clock::now();
  std::string state = StateName(job.state());
  if (job.state() == qwha::v1::RUNNING) {
    absl::StrAppend(&state, "  ", ProgressLine(job.progress(), 100));
  }
  if (job.cancel_requested() && job.state() != qwha::v1::CANCELLED) {
    absl::StrAppend(&state, " (cancel requested)");
  }
  const auto& q = spec.quantization();
  const auto& a = spec.adapter();
  const auto& t = spec.training();
  auto when = [&](const google::protobuf::Timestamp& time) {
    return time.seconds() == 0 ? std::string()
                               : absl::StrCat(LocalTime(time), " (", Age(time, now), " ago)");
  };
  PrintFields(
      out,
      {{"ID", job.id()},
       {"Name", spec.name()},
       {"State", state},
       {"Error", job.error()},
       {"Adapter ID", job.adapter_id()},
       {"Base model", spec.base_model_id()},
       {"Quantization", absl::StrCat(q.bits(), "-bit ", q.method().empty() ? "rtn" : q.method(),
                                     ", group size ", OrDefault(q.group_size()))},
       {"Adapter",
        absl::StrCat(a.type().empty() ? "qwha" : a.type(), ", rank ", OrDefault(a.rank()),
                     a.target_modules().empty()
                         ? ""
                         : absl::StrCat(", modules ", absl::StrJoin(a.target_modules(), ",")))},
       {"Train dataset", spec.train_dataset_id()},
       {"Eval dataset", spec.eval_dataset_id()},
       {"Training",
        absl::StrCat("max steps ", OrDefault(t.max_steps()), ", lr ", OrDefault(t.learning_rate()),
                     ", batch ", OrDefault(t.batch_size()), ", seq len ", OrDefault(t.seq_len()))},
       {"Priority", absl::StrCat(spec.priority())},
       {"Labels", Labels(spec.labels())},
       {"Deploy", spec.load_on_inference_servers()
                      ? "on the base model's inference servers when done (see `events`)"
                      : ""},
       {"Worker", job.worker_id().empty()
                      ? ""
                      : absl::StrCat(job.worker_id(), " (attempt ", job.attempts(), ")")},
       {"Checkpoint", job.resume_checkpoint()},
       {"Created", when(job.created_at())},
       {"Started", when(job.started_at())},
       {"Finished", when(job.finished_at())}});
}

int Get(Context& context) {
  auto job = context.client().GetJob(context.arg(0));
  if (!job.ok()) return context.Fail(job.status());
  if (context.json()) return context.PrintJson(*job);
  PrintJob(*job, context.out());
  return kExitOk;
}

int WatchCommand(Context& context) { return WatchAndReport(context, context.arg(0)); }

int Cancel(Context& context) {
  auto job = context.client().CancelJob(context.arg(0));
  if (!job.ok()) return context.Fail(job.status());
  if (context.json()) return context.PrintJson(*job);
  if (job->state() == qwha::v1::CANCELLED) {
    context.out() << "Job " << job->id() << " cancelled\n";
  } else {
    context.out() << "Job " << job->id() << ": cancel requested (" << StateName(job->state())
                  << "; its worker stops it within seconds)\n";
  }
  return kExitOk;
}

int Events(Context& context) {
  qwha::v1::ListJobEventsRequest request;
  request.set_id(context.arg(0));
  request.set_after_sequence(context.flags().Int("after"));
  request.set_limit(static_cast<int32_t>(context.flags().Int("limit")));
  auto events = context.client().ListJobEvents(request);
  if (!events.ok()) return context.Fail(events.status());
  if (context.json()) return context.PrintJson(*events);
  Table table({"SEQ", "TIME", "TYPE", "DETAIL"});
  for (const qwha::v1::JobEvent& event : events->events()) {
    std::string detail;
    if (event.type() == qwha::v1::JobEvent::STATE) {
      detail = StateName(event.job().state());
      if (!event.job().error().empty()) absl::StrAppend(&detail, ": ", event.job().error());
    } else if (event.type() == qwha::v1::JobEvent::PROGRESS) {
      detail = ProgressLine(event.job().progress(), 200);
    }
    if (!event.message().empty())
      absl::StrAppend(&detail, detail.empty() ? "" : "  ", event.message());
    table.AddRow({absl::StrCat(event.sequence()), LocalTime(event.time()),
                  qwha::v1::JobEvent::Type_Name(event.type()), detail});
  }
  table.Print(context.out());
  return kExitOk;
}

}  // namespace

int WatchAndReport(Context& context, const std::string& job_id) {
  WatchView::Mode mode = context.json()                        ? WatchView::Mode::kJson
                         : context.environment().stdout_is_tty ? WatchView::Mode::kTerminal
                                                               : WatchView::Mode::kPlain;
  WatchView view(context.out(), mode, context.terminal_width());
  auto job = context.client().Watch(job_id, [&view](const qwha::v1::JobEvent& event) {
    view.OnEvent(event);
    return true;
  });
  if (!job.ok()) return context.Fail(job.status());
  view.Finish(*job);
  return ExitCodeForJob(*job);
}

void AddJobCommands(std::vector<Command>* commands) {
  commands->push_back(
      {"submit",
       "[flags]",
       "Submit a fine-tuning job",
       "The job comes from --file (YAML or JSON with the JobSpec field names) and\n"
       "the flags, which override the file. --model and --train-dataset are required\n"
       "(here or in the file). With --watch, follows the job and exits as `watch`.\n"
       "With --load-on-inference-servers the scheduler asks every live inference\n"
       "server registered for the job's base model (qwha-serve --advertise) to load\n"
       "the adapter once the job succeeded; `qwhactl events ID` shows the outcome.",
       {{"file", FlagType::kString, "JOB.yaml", "job file (YAML or .json)"},
        {"model", FlagType::kString, "ID", "base model id (base_model_id)"},
        {"bits", FlagType::kInt, "N", "quantization bits: 2, 3 or 4"},
        {"group-size", FlagType::kInt, "N", "quantization group size (default 64)"},
        {"quant-method", FlagType::kString, "M", "rtn or gptq (default rtn)"},
        {"adapter", FlagType::kString, "TYPE", "qwha, lora, loftq, cloq or random-wht"},
        {"rank", FlagType::kInt, "R", "LoRA-rank-equivalent budget (default 64)"},
        {"alpha", FlagType::kDouble, "A", "AdaAlloc exponent (default 1)"},
        {"target-modules", FlagType::kString, "LIST", "comma-separated, e.g. q_proj,v_proj"},
        {"train-dataset", FlagType::kString, "ID", "training dataset id"},
        {"eval-dataset", FlagType::kString, "ID", "evaluation dataset id"},
        {"max-steps", FlagType::kInt, "N", "optimizer steps (default 100)"},
        {"lr", FlagType::kDouble, "LR", "learning rate"},
        {"batch-size", FlagType::kInt, "N", "sequences per micro-batch (default 8)"},
        {"seq-len", FlagType::kInt, "N", "tokens per sequence (default 256)"},
        {"priority", FlagType::kInt, "P", "-100..100, higher runs first"},
        {"label", FlagType::kList, "K=V", "label (repeatable)"},
        {"name", FlagType::kString, "NAME", "name shown in listings"},
        {"idempotency-key", FlagType::kString, "KEY", "a retried submit returns the same job"},
        {"load-on-inference-servers", FlagType::kBool, "",
         "when done, load the adapter on the registered inference servers of the base model"},
        {"watch", FlagType::kBool, "", "follow the job until it finishes"}},
       0,
       0,
       Submit});
  commands->push_back({"list",
                       "[flags]",
                       "List jobs, newest first",
                       "",
                       {{"state", FlagType::kList, "S", "only these states (repeatable or a,b)"},
                        {"label", FlagType::kList, "K=V", "only jobs with this label (repeatable)"},
                        {"model", FlagType::kString, "ID", "only jobs on this base model"},
                        {"limit", FlagType::kInt, "N", "at most N jobs (default 50)"}},
                       0,
                       0,
                       List});
  commands->push_back({"get", "ID", "Show a job", "", {}, 1, 1, Get});
  commands->push_back({"watch",
                       "ID",
                       "Follow a job until it finishes",
                       "Shows a live progress line on a terminal, plain lines otherwise.\n"
                       "Exit code: 0 SUCCEEDED, 1 FAILED, 2 CANCELLED.",
                       {},
                       1,
                       1,
                       WatchCommand});
  commands->push_back({"cancel", "ID", "Cancel a job", "", {}, 1, 1, Cancel});
  commands->push_back({"events",
                       "ID",
                       "List a job's stored events",
                       "",
                       {{"after", FlagType::kInt, "SEQ", "only events after this sequence"},
                        {"limit", FlagType::kInt, "N", "at most N events (default 1000)"}},
                       1,
                       1,
                       Events});
}

}  // namespace qwha::client

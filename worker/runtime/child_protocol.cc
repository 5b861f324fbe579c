#include "worker/runtime/child_protocol.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace qwha::runtime {
namespace {

using Json = nlohmann::json;

const char* TypeName(ChildEvent::Type type) {
  switch (type) {
    case ChildEvent::Type::kPhase:
      return "phase";
    case ChildEvent::Type::kProgress:
      return "progress";
    case ChildEvent::Type::kWarning:
      return "warning";
    case ChildEvent::Type::kDone:
      return "done";
    case ChildEvent::Type::kError:
      return "error";
  }
  return "?";
}

Json Number(double v) { return std::isfinite(v) ? Json(v) : Json(); }

double NumberOr(const Json& object, const char* key, double missing) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return missing;
  return it->get<double>();
}

int64_t IntOr(const Json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return 0;
  return it->get<int64_t>();
}

std::string StringOr(const Json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

}  // namespace

std::string EncodeChildEvent(const ChildEvent& event) {
  Json j = {{"event", TypeName(event.type)}};
  switch (event.type) {
    case ChildEvent::Type::kPhase:
      j["phase"] = event.phase;
      j["detail"] = event.detail;
      break;
    case ChildEvent::Type::kProgress: {
      const train::Progress& p = event.progress;
      j["phase"] = p.phase;
      j["step"] = p.step;
      j["total_steps"] = p.total_steps;
      j["epoch"] = p.epoch;
      j["loss"] = Number(p.loss);
      j["lr"] = Number(p.lr);
      j["grad_norm"] = Number(p.grad_norm);
      j["tokens_per_second"] = Number(p.tokens_per_second);
      j["eta_seconds"] = Number(p.eta_seconds);
      j["eval_loss"] = Number(p.eval_loss);
      break;
    }
    case ChildEvent::Type::kWarning:
    case ChildEvent::Type::kDone:
      j["detail"] = event.detail;
      break;
    case ChildEvent::Type::kError:
      j["phase"] = event.phase;
      j["code"] = StatusCodeName(event.code);
      j["detail"] = event.detail;
      break;
  }
  // Replace invalid UTF-8 (e.g. a path in an error) instead of throwing.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

absl::StatusOr<ChildEvent> DecodeChildEvent(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("child event: not a JSON object");
  }
  const std::string type = StringOr(j, "event");
  ChildEvent e;
  e.phase = StringOr(j, "phase");
  e.detail = StringOr(j, "detail");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (type == "phase") {
    e.type = ChildEvent::Type::kPhase;
  } else if (type == "progress") {
    e.type = ChildEvent::Type::kProgress;
    train::Progress& p = e.progress;
    p.phase = e.phase;
    p.step = IntOr(j, "step");
    p.total_steps = IntOr(j, "total_steps");
    p.epoch = IntOr(j, "epoch");
    p.loss = NumberOr(j, "loss", nan);
    p.lr = NumberOr(j, "lr", nan);
    p.grad_norm = NumberOr(j, "grad_norm", nan);
    p.tokens_per_second = NumberOr(j, "tokens_per_second", 0);
    p.eta_seconds = NumberOr(j, "eta_seconds", nan);
    p.eval_loss = NumberOr(j, "eval_loss", nan);
  } else if (type == "warning") {
    e.type = ChildEvent::Type::kWarning;
  } else if (type == "done") {
    e.type = ChildEvent::Type::kDone;
  } else if (type == "error") {
    e.type = ChildEvent::Type::kError;
    e.code = StatusCodeFromName(StringOr(j, "code"));
    if (e.code == absl::StatusCode::kOk) e.code = absl::StatusCode::kUnknown;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("child event: unknown type \"", type, "\""));
  }
  return e;
}

qwha::v1::Phase RecipePhaseToProto(const std::string& phase) {
  if (phase == "loading") return qwha::v1::LOADING;
  if (phase == "calibrating") return qwha::v1::CALIBRATING;
  if (phase == "quantizing") return qwha::v1::QUANTIZING;
  if (phase == "initializing") return qwha::v1::INITIALIZING;
  if (phase == "training") return qwha::v1::TRAINING;
  if (phase == "evaluating") return qwha::v1::EVALUATING;
  if (phase == "exporting" || phase == "uploading") return qwha::v1::UPLOADING;
  return qwha::v1::PHASE_UNSPECIFIED;
}

qwha::v1::Progress ProgressToProto(const train::Progress& p) {
  qwha::v1::Progress out;
  out.set_phase(qwha::v1::TRAINING);
  out.set_step(p.step);
  out.set_total_steps(p.total_steps);
  out.set_loss(p.loss);
  out.set_learning_rate(p.lr);
  out.set_tokens_per_second(p.tokens_per_second);
  out.set_eta_seconds(std::isfinite(p.eta_seconds) ? p.eta_seconds : -1.0);
  out.set_eval_loss(p.eval_loss);
  if (p.phase == "eval") out.set_detail("eval");
  return out;
}

std::string StatusCodeName(absl::StatusCode code) {
  // absl spells them "INVALID_ARGUMENT", … — the gRPC names.
  return absl::StatusCodeToString(code);
}

absl::StatusCode StatusCodeFromName(std::string_view name) {
  for (int c = 0; c <= 16; ++c) {
    const auto code = static_cast<absl::StatusCode>(c);
    if (absl::StatusCodeToString(code) == name) return code;
  }
  return absl::StatusCode::kUnknown;
}

}  // namespace qwha::runtime

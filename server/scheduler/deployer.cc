#include "server/scheduler/deployer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "qwha/v1/inference.grpc.pb.h"
#include "server/api/auth.h"
#include "server/scheduler/status_macros.h"
#include "server/store/schema.h"

namespace qwha::scheduler {
namespace {

using store::AsInt;
using store::AsString;
using store::NowSeconds;

bool Retryable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED;
}

std::string CodeAndMessage(const grpc::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                      ": ", status.error_message());
}

std::string Short(const std::string& digest) { return digest.substr(0, 12); }

}  // namespace

Deployer::Deployer(store::Db* db, Scheduler* scheduler, registry::InferenceServerDirectory* servers,
                   DeployerOptions options, DeployerObserver observer)
    : db_(db),
      scheduler_(scheduler),
      servers_(servers),
      options_(options),
      observer_(std::move(observer)) {}

void Deployer::Stop() {
  stopping_ = true;
  std::lock_guard<std::mutex> lock(calls_mu_);
  for (grpc::ClientContext* call : calls_) call->TryCancel();
}

double Deployer::Backoff(int64_t attempts) const {
  const double backoff =
      options_.initial_backoff_seconds * std::pow(2.0, static_cast<double>(attempts - 1));
  return std::min(backoff, options_.max_backoff_seconds);
}

absl::StatusOr<int> Deployer::RunDue() {
  ASSIGN_OR_RETURN(auto rows,
                   db_->Query("SELECT id, job_id, adapter_id, base_model_digest, attempts FROM "
                              "deployments WHERE state = 'pending' AND next_attempt_at <= ? "
                              "ORDER BY next_attempt_at, id LIMIT 64",
                              {NowSeconds()}));
  int worked = 0;
  for (const store::Row& r : rows) {
    if (stopping_) break;
    Deployment d{AsInt(r[0]), AsString(r[1]), AsString(r[2]), AsString(r[3]), AsInt(r[4])};
    RETURN_IF_ERROR(Deploy(d));
    ++worked;
  }
  return worked;
}

absl::StatusOr<bool> Deployer::ChooseTargets(const Deployment& d) {
  if (d.attempts > 0) return true;  // chosen on the first round
  ASSIGN_OR_RETURN(auto chosen, db_->Query("SELECT COUNT(*) FROM deployment_targets WHERE "
                                           "deployment_id = ?",
                                           {d.id}));
  if (AsInt(chosen[0][0]) > 0) return true;  // chosen, then stopped before any call
  ASSIGN_OR_RETURN(std::vector<v1::InferenceServer> live, servers_->Live(d.base_model_digest));
  const double now = NowSeconds();
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  if (live.empty()) {
    RETURN_IF_ERROR(tx->Exec("UPDATE deployments SET state = 'done', finished_at = ? WHERE id = ?",
                             {now, d.id}));
    RETURN_IF_ERROR(scheduler_->AppendJobLog(
        *tx, d.job_id,
        absl::StrCat("deployment: no live inference server serves base model ",
                     Short(d.base_model_digest), "; adapter ", d.adapter_id,
                     " was not loaded anywhere")));
    RETURN_IF_ERROR(tx->Commit());
    scheduler_->NotifyChanged();
    return false;
  }
  std::vector<std::string> addresses;
  for (const v1::InferenceServer& server : live) {
    RETURN_IF_ERROR(
        tx->Exec("INSERT INTO deployment_targets(deployment_id, address, state, updated_at) "
                 "VALUES(?, ?, 'pending', ?)",
                 {d.id, server.address(), now}));
    addresses.push_back(server.address());
  }
  RETURN_IF_ERROR(scheduler_->AppendJobLog(
      *tx, d.job_id,
      absl::StrCat("deployment: loading adapter ", d.adapter_id, " on ", addresses.size(),
                   " inference server(s): ", absl::StrJoin(addresses, ", "))));
  RETURN_IF_ERROR(tx->Commit());
  scheduler_->NotifyChanged();
  return true;
}

grpc::Status Deployer::Load(const std::string& address, const std::string& adapter_id,
                            v1::LoadedAdapter* loaded) {
  auto stub = v1::InferenceService::NewStub(grpc::CreateChannel(address, options_.credentials));
  grpc::ClientContext call;
  api::AddToken(&call, options_.token);
  call.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(options_.load_timeout_seconds * 1000)));
  {
    std::lock_guard<std::mutex> lock(calls_mu_);
    if (stopping_) return grpc::Status(grpc::StatusCode::CANCELLED, "the scheduler is stopping");
    calls_.insert(&call);
  }
  v1::LoadAdapterRequest request;
  request.set_adapter_id(adapter_id);  // serving name: the adapter id
  grpc::Status status = stub->LoadAdapter(&call, request, loaded);
  std::lock_guard<std::mutex> lock(calls_mu_);
  calls_.erase(&call);
  return status;
}

absl::Status Deployer::Deploy(const Deployment& d) {
  ASSIGN_OR_RETURN(bool go_on, ChooseTargets(d));
  if (!go_on) return absl::OkStatus();
  ASSIGN_OR_RETURN(auto rows, db_->Query("SELECT address, attempts FROM deployment_targets "
                                         "WHERE deployment_id = ? AND state = 'pending' "
                                         "ORDER BY address",
                                         {d.id}));
  std::vector<Target> targets;
  for (const store::Row& r : rows) targets.push_back({AsString(r[0]), AsInt(r[1])});

  // Step 2: every pending server at once.
  struct Outcome {
    grpc::Status status;
    v1::LoadedAdapter loaded;
    double seconds = 0;
  };
  std::vector<Outcome> outcomes(targets.size());
  {
    std::vector<std::thread> calls;
    for (size_t i = 0; i < targets.size(); ++i) {
      calls.emplace_back([&, i] {
        const auto start = std::chrono::steady_clock::now();
        outcomes[i].status = Load(targets[i].address, d.adapter_id, &outcomes[i].loaded);
        outcomes[i].seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      });
    }
    for (std::thread& t : calls) t.join();
  }

  // Step 3: every outcome and its event in one commit.
  const double now = NowSeconds();
  int attempts_made = 0;
  std::vector<bool> done_targets;  // loaded (true) / failed (false), for the observer
  int still_pending = 0;
  ASSIGN_OR_RETURN(auto tx, db_->Begin());
  for (size_t i = 0; i < targets.size(); ++i) {
    const Target& t = targets[i];
    const Outcome& o = outcomes[i];
    if (stopping_ && o.status.error_code() == grpc::StatusCode::CANCELLED) {
      ++still_pending;  // not an attempt: the next start calls again
      continue;
    }
    ++attempts_made;
    const int64_t attempts = t.attempts + 1;
    // A literal in the SQL below (bound strings are blobs, which never equal
    // the text literals the queries compare with).
    std::string state, message;
    if (o.status.ok()) {
      state = "loaded";
      message =
          absl::StrFormat("deployment: loaded adapter %s on %s (digest %s, %s, %.2f s)",
                          d.adapter_id, t.address, Short(o.loaded.digest()),
                          o.loaded.cache_hit() ? "already in memory" : "downloaded", o.seconds);
    } else if (Retryable(o.status.error_code()) && attempts < options_.max_attempts) {
      state = "pending";
      ++still_pending;
      message =
          absl::StrFormat("deployment: %s did not answer (attempt %d/%d): %s; retrying", t.address,
                          attempts, options_.max_attempts, CodeAndMessage(o.status));
    } else if (Retryable(o.status.error_code())) {
      state = "failed";
      message = absl::StrFormat("deployment: gave up on %s after %d attempts: %s", t.address,
                                attempts, CodeAndMessage(o.status));
    } else {
      state = "failed";
      message = absl::StrFormat("deployment: %s refused adapter %s: %s", t.address, d.adapter_id,
                                CodeAndMessage(o.status));
    }
    store::Value error = o.status.ok() ? store::Value{} : store::Value{CodeAndMessage(o.status)};
    RETURN_IF_ERROR(tx->Exec(absl::StrCat("UPDATE deployment_targets SET state = '", state,
                                          "', attempts = ?, error = ?, updated_at = ? WHERE "
                                          "deployment_id = ? AND address = ?"),
                             {attempts, error, now, d.id, t.address}));
    RETURN_IF_ERROR(scheduler_->AppendJobLog(*tx, d.job_id, message));
    if (state != "pending") done_targets.push_back(state == "loaded");
  }
  if (still_pending > 0) {
    const int64_t round = d.attempts + 1;
    RETURN_IF_ERROR(
        tx->Exec("UPDATE deployments SET attempts = ?, next_attempt_at = ? WHERE id = ?",
                 {round, now + (attempts_made > 0 ? Backoff(round) : 0.0), d.id}));
  } else {
    ASSIGN_OR_RETURN(auto counts,
                     tx->Query("SELECT COUNT(*), SUM(state = 'loaded') FROM deployment_targets "
                               "WHERE deployment_id = ?",
                               {d.id}));
    RETURN_IF_ERROR(tx->Exec(
        "UPDATE deployments SET state = 'done', attempts = ?, finished_at = ? WHERE id = ?",
        {d.attempts + 1, now, d.id}));
    RETURN_IF_ERROR(scheduler_->AppendJobLog(
        *tx, d.job_id,
        absl::StrCat("deployment: done; adapter ", d.adapter_id, " loaded on ", AsInt(counts[0][1]),
                     " of ", AsInt(counts[0][0]), " inference server(s)")));
  }
  RETURN_IF_ERROR(tx->Commit());
  scheduler_->NotifyChanged();
  for (int i = 0; i < attempts_made; ++i) {
    if (observer_.on_load_attempt) observer_.on_load_attempt();
  }
  for (bool loaded : done_targets) {
    if (observer_.on_target_done) observer_.on_target_done(loaded);
  }
  return absl::OkStatus();
}

}  // namespace qwha::scheduler

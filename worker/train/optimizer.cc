#include "worker/train/optimizer.h"

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"

namespace qwha::train {
namespace {

bool IsLowPrecision(torch::ScalarType t) { return t == torch::kBFloat16 || t == torch::kHalf; }

// The dtype of the moments (and master) for a parameter of dtype t.
torch::ScalarType StateDtype(torch::ScalarType t) {
  return t == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

std::string ShapeString(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = absl::StrCat(c10::toString(t.scalar_type()), " [");
  for (int64_t i = 0; i < t.dim(); ++i) absl::StrAppend(&s, i ? ", " : "", t.size(i));
  return s + "]";
}

absl::Status CheckParameters(const std::vector<NamedParameter>& params) {
  std::set<std::string> names;
  for (const NamedParameter& p : params) {
    if (p.name.empty() || p.name.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter name must be non-empty without '/': \"", p.name, "\""));
    }
    if (!names.insert(p.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate parameter name ", p.name));
    }
    const torch::Tensor& t = p.tensor;
    if (!t.defined() || !t.is_floating_point() || !t.is_leaf() || !t.requires_grad()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter ", p.name,
                       " must be a floating-point leaf that requires grad, got ", ShapeString(t)));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateAdamWOptions(const AdamWOptions& o) {
  if (!(o.beta1 >= 0 && o.beta1 < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("beta1 must be in [0, 1), got ", o.beta1));
  }
  if (!(o.beta2 >= 0 && o.beta2 < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("beta2 must be in [0, 1), got ", o.beta2));
  }
  if (!(o.eps > 0) || !std::isfinite(o.eps)) {
    return absl::InvalidArgumentError(absl::StrCat("eps must be finite and > 0, got ", o.eps));
  }
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay)) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight_decay must be finite and >= 0, got ", o.weight_decay));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AdamW>> AdamW::Create(std::vector<NamedParameter> params,
                                                     const AdamWOptions& options) {
  if (absl::Status st = ValidateAdamWOptions(options); !st.ok()) return st;
  if (absl::Status st = CheckParameters(params); !st.ok()) return st;
  return std::unique_ptr<AdamW>(new AdamW(std::move(params), options));
}

AdamW::AdamW(std::vector<NamedParameter> params, const AdamWOptions& options)
    : params_(std::move(params)), options_(options) {
  torch::NoGradGuard no_grad;
  slots_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const torch::Tensor& p = params_[i].tensor;
    const auto opts = p.options().dtype(StateDtype(p.scalar_type()));
    slots_[i].exp_avg = torch::zeros(p.sizes(), opts);
    slots_[i].exp_avg_sq = torch::zeros(p.sizes(), opts);
    if (IsLowPrecision(p.scalar_type())) slots_[i].master = p.detach().to(torch::kFloat32).clone();
  }
}

absl::Status AdamW::Step(double lr) {
  if (!(lr >= 0) || !std::isfinite(lr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning rate must be finite and >= 0, got ", lr));
  }
  for (const NamedParameter& p : params_) {
    const torch::Tensor& g = p.tensor.grad();
    if (g.defined() && g.sizes() != p.tensor.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("gradient of ", p.name, " is ", ShapeString(g),
                                                     ", parameter is ", ShapeString(p.tensor)));
    }
  }
  torch::NoGradGuard no_grad;
  const double beta1 = options_.beta1, beta2 = options_.beta2;
  // The update is the same elementwise sequence per parameter as
  //   target ·= 1 − lr·wd;  m = β1 m + (1 − β1) g;  v = β2 v + (1 − β2) g²;
  //   target −= lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
  // run as _foreach ops over all parameters that share a device, state dtype
  // and update count: a handful of launches instead of ten per parameter.
  struct Group {
    std::vector<torch::Tensor> targets, grads, exp_avgs, exp_avg_sqs;
    std::vector<size_t> members;
  };
  std::map<std::tuple<std::string, int, int64_t>, Group> groups;
  for (size_t i = 0; i < params_.size(); ++i) {
    const torch::Tensor& param = params_[i].tensor;
    const torch::Tensor& grad = param.grad();
    if (!grad.defined()) continue;
    Slot& s = slots_[i];
    ++s.step;
    const auto key =
        std::make_tuple(param.device().str(), static_cast<int>(s.exp_avg.scalar_type()), s.step);
    Group& g = groups[key];
    // The tensor the update is applied to: the master copy, or the parameter.
    g.targets.push_back(s.master.defined() ? s.master : param);
    g.grads.push_back(grad.to(s.exp_avg.scalar_type()));
    g.exp_avgs.push_back(s.exp_avg);
    g.exp_avg_sqs.push_back(s.exp_avg_sq);
    g.members.push_back(i);
  }
  for (auto& [key, g] : groups) {
    const double t = static_cast<double>(std::get<2>(key));
    const double bias1 = 1.0 - std::pow(beta1, t);
    const double bias2 = 1.0 - std::pow(beta2, t);
    if (options_.weight_decay != 0) {
      at::_foreach_mul_(g.targets, at::Scalar(1.0 - lr * options_.weight_decay));
    }
    at::_foreach_mul_(g.exp_avgs, at::Scalar(beta1));
    at::_foreach_add_(g.exp_avgs, g.grads, at::Scalar(1.0 - beta1));
    at::_foreach_mul_(g.exp_avg_sqs, at::Scalar(beta2));
    at::_foreach_addcmul_(g.exp_avg_sqs, g.grads, g.grads, at::Scalar(1.0 - beta2));
    // sqrt(v̂) + eps = sqrt(v) / sqrt(1 − β2^t) + eps;  p -= (lr / (1 − β1^t)) · m / that.
    std::vector<torch::Tensor> denoms = at::_foreach_sqrt(g.exp_avg_sqs);
    at::_foreach_div_(denoms, at::Scalar(std::sqrt(bias2)));
    at::_foreach_add_(denoms, at::Scalar(options_.eps));
    at::_foreach_addcdiv_(g.targets, g.exp_avgs, denoms, at::Scalar(-lr / bias1));
    for (size_t i : g.members) {
      if (slots_[i].master.defined()) params_[i].tensor.copy_(slots_[i].master);
    }
  }
  return absl::OkStatus();
}

void AdamW::ZeroGrad() {
  for (NamedParameter& p : params_) p.tensor.mutable_grad().reset();
}

std::map<std::string, torch::Tensor> AdamW::StateDict() const {
  std::map<std::string, torch::Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].name;
    const Slot& s = slots_[i];
    out[name + "/step"] = torch::tensor({s.step}, torch::kInt64);
    out[name + "/exp_avg"] = s.exp_avg.clone();
    out[name + "/exp_avg_sq"] = s.exp_avg_sq.clone();
    if (s.master.defined()) out[name + "/master"] = s.master.clone();
  }
  return out;
}

absl::Status AdamW::LoadStateDict(const std::map<std::string, torch::Tensor>& state) {
  std::set<std::string> expected;
  std::vector<Slot> loaded(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const torch::Tensor& p = params_[i].tensor;
    const std::string& name = params_[i].name;
    const torch::ScalarType dtype = StateDtype(p.scalar_type());
    auto find = [&](const std::string& key) -> const torch::Tensor* {
      expected.insert(key);
      auto it = state.find(key);
      return it == state.end() ? nullptr : &it->second;
    };
    const torch::Tensor* step = find(name + "/step");
    if (step == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("missing entry ", name, "/step"));
    if (!step->defined() || step->scalar_type() != torch::kInt64 || step->numel() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, "/step: expected int64 [1], got ", ShapeString(*step)));
    }
    loaded[i].step = step->item<int64_t>();
    if (loaded[i].step < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, "/step is negative"));
    }
    for (const char* key : {"exp_avg", "exp_avg_sq", "master"}) {
      const std::string full = absl::StrCat(name, "/", key);
      const torch::Tensor* t = find(full);
      const bool is_master = std::string(key) == "master";
      if (t == nullptr) {
        if (is_master) continue;
        return absl::InvalidArgumentError(absl::StrCat("missing entry ", full));
      }
      const torch::ScalarType want = is_master ? torch::kFloat32 : dtype;
      if (!t->defined() || t->scalar_type() != want || t->sizes() != p.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(full, ": expected ", c10::toString(want),
                                                       " with the parameter's shape, got ",
                                                       ShapeString(*t)));
      }
      torch::Tensor copy = t->detach().to(p.device()).clone();
      if (is_master) {
        loaded[i].master = copy;
      } else if (std::string(key) == "exp_avg") {
        loaded[i].exp_avg = copy;
      } else {
        loaded[i].exp_avg_sq = copy;
      }
    }
  }
  for (const auto& [key, value] : state) {
    if (expected.count(key) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown optimizer state entry ", key));
    }
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor param = params_[i].tensor;
    if (IsLowPrecision(param.scalar_type())) {
      if (loaded[i].master.defined()) {
        param.copy_(loaded[i].master);
      } else {
        loaded[i].master = param.detach().to(torch::kFloat32).clone();
      }
    } else if (loaded[i].master.defined()) {
      // A master saved from a low-precision run: the parameter takes its value.
      param.copy_(loaded[i].master);
      loaded[i].master = torch::Tensor();
    }
  }
  slots_ = std::move(loaded);
  return absl::OkStatus();
}

absl::Status AdamW::RebindParameters(std::vector<NamedParameter> params) {
  if (absl::Status st = CheckParameters(params); !st.ok()) return st;
  if (params.size() != params_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", params_.size(), " parameters, got ", params.size()));
  }
  std::map<std::string, const torch::Tensor*> by_name;
  for (const NamedParameter& p : params) by_name[p.name] = &p.tensor;
  std::vector<NamedParameter> rebound = params_;
  for (NamedParameter& old : rebound) {
    auto it = by_name.find(old.name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat("parameter ", old.name, " is missing"));
    }
    const torch::Tensor& t = *it->second;
    if (t.sizes() != old.tensor.sizes() || t.scalar_type() != old.tensor.scalar_type() ||
        t.device() != old.tensor.device()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter ", old.name, " was ", ShapeString(old.tensor), ", now ", ShapeString(t)));
    }
    old.tensor = t;
  }
  params_ = std::move(rebound);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& master = slots_[i].master;
    if (!master.defined()) continue;
    // Keep the master where the parameter still holds its rounded value.
    const torch::Tensor& p = params_[i].tensor;
    const torch::Tensor changed = master.to(p.scalar_type()).ne(p);
    master.copy_(torch::where(changed, p.to(torch::kFloat32), master));
  }
  return absl::OkStatus();
}

}  // namespace qwha::train

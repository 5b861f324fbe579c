#include "worker/train/loss.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cross_entropy.h"

namespace qwha::train {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

torch::ScalarType AccumulationDtype(torch::ScalarType t) {
  return t == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// Σ_r −log softmax(h_r Wᵀ)[y_r] over the rows of h [R, H] with targets y [R],
// `chunk` rows at a time, in the accumulation dtype. With `grad` ([R, H], h's
// dtype) also writes grad_scale · d(sum)/dh = grad_scale · (softmax − onehot) W
// there. A chunk's logits live only inside the loop: the fused kernel
// (kernels/cross_entropy.h) turns them into their gradient in place.
torch::Tensor ChunkedNllSum(const torch::Tensor& h, const torch::Tensor& w,
                            const torch::Tensor& targets, int64_t chunk, double grad_scale,
                            torch::Tensor* grad) {
  torch::Tensor total = torch::zeros({}, h.options().dtype(AccumulationDtype(h.scalar_type())));
  const int64_t rows = h.size(0);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    torch::Tensor logits = torch::matmul(h.narrow(0, r0, n), w.t());  // [n, V], h's dtype
    const torch::Tensor nll = kernels::SoftmaxCrossEntropy(
        logits, targets.narrow(0, r0, n),
        grad != nullptr ? std::optional<double>(grad_scale) : std::nullopt);
    total.add_(nll.sum());
    if (grad != nullptr) {
      torch::Tensor slice = grad->narrow(0, r0, n);  // contiguous rows
      torch::mm_out(slice, logits, w);
    }
  }
  return total;
}

// The mean NLL of the supervised rows of hidden, with d/dhidden formed in
// forward (ChunkedNllSum) and only scattered into place in backward.
struct ChunkedLmLossFunction : public torch::autograd::Function<ChunkedLmLossFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& lm_head, const torch::Tensor& rows,
                               const torch::Tensor& targets, int64_t chunk) {
    const torch::Tensor flat = hidden.reshape({-1, hidden.size(-1)});
    const torch::Tensor h = flat.index_select(0, rows);
    const double tokens = static_cast<double>(rows.size(0));
    torch::Tensor grad = torch::empty_like(h);
    torch::Tensor sum = ChunkedNllSum(h, lm_head, targets, chunk, 1.0 / tokens, &grad);
    ctx->save_for_backward({rows, grad});
    ctx->saved_data["shape"] = hidden.sizes().vec();
    return sum / tokens;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& rows = saved[0];
    const torch::Tensor& grad = saved[1];
    const std::vector<int64_t> shape = ctx->saved_data["shape"].toIntVector();
    const torch::Tensor& g = grad_outputs[0];  // scalar, accumulation dtype
    const int64_t positions = shape[0] * shape[1];
    torch::Tensor out = torch::zeros({positions, grad.size(1)}, grad.options());
    out.index_copy_(0, rows, (grad.to(g.scalar_type()) * g).to(grad.scalar_type()));
    return {out.view(shape), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

std::string ShapeString(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = absl::StrCat(c10::toString(t.scalar_type()), " [");
  for (int64_t i = 0; i < t.dim(); ++i) absl::StrAppend(&s, i ? ", " : "", t.size(i));
  return s + "]";
}

}  // namespace

absl::StatusOr<LossResult> TokenCrossEntropy(const torch::Tensor& logits,
                                             const torch::Tensor& labels) {
  if (!logits.defined() || logits.dim() != 3 || !logits.is_floating_point()) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits must be float [B, T, V], got ", ShapeString(logits)));
  }
  if (!labels.defined() || labels.dim() != 2 || labels.is_floating_point() ||
      labels.scalar_type() == torch::kBool || labels.size(0) != logits.size(0) ||
      labels.size(1) != logits.size(1)) {
    return absl::InvalidArgumentError(absl::StrCat("labels must be integer [", logits.size(0), ", ",
                                                   logits.size(1), "], got ", ShapeString(labels)));
  }
  const int64_t vocab = logits.size(2);
  const torch::Tensor target = labels.to(logits.device(), torch::kInt64);
  const torch::Tensor mask = target.ne(kIgnoreIndex);
  const torch::Tensor invalid = mask.logical_and(target.lt(0).logical_or(target.ge(vocab)));
  // One synchronization for both counts.
  const torch::Tensor counts = torch::stack({mask.sum(), invalid.sum()}).cpu();
  const int64_t tokens = counts[0].item<int64_t>();
  if (counts[1].item<int64_t>() > 0) {
    return absl::InvalidArgumentError(absl::StrCat("labels hold ", counts[1].item<int64_t>(),
                                                   " ids outside [0, ", vocab, ") other than ",
                                                   kIgnoreIndex));
  }
  const torch::Tensor x =
      logits.scalar_type() == torch::kFloat64 ? logits : logits.to(torch::kFloat32);
  // −log softmax(x)[y] = logsumexp(x) − x[y]; ignored positions pick id 0 and
  // are masked out.
  const torch::Tensor safe = target.masked_fill(mask.logical_not(), 0);
  const torch::Tensor picked = x.gather(2, safe.unsqueeze(2)).squeeze(2);
  const torch::Tensor nll = (x.logsumexp(2) - picked) * mask.to(x.scalar_type());
  LossResult result;
  result.tokens = tokens;
  result.loss = tokens > 0 ? nll.sum() / static_cast<double>(tokens) : nll.sum() * 0.0;
  return result;
}

absl::StatusOr<LossResult> CausalLmLoss(const torch::Tensor& logits, const torch::Tensor& labels) {
  if (!logits.defined() || logits.dim() != 3 || !labels.defined() || labels.dim() != 2 ||
      logits.size(1) < 1 || labels.size(1) != logits.size(1)) {
    return absl::InvalidArgumentError(absl::StrCat("CausalLmLoss: logits ", ShapeString(logits),
                                                   " and labels ", ShapeString(labels),
                                                   " must be [B, T, V] and [B, T], T >= 1"));
  }
  const int64_t t = logits.size(1);
  return TokenCrossEntropy(logits.narrow(1, 0, t - 1), labels.narrow(1, 1, t - 1));
}

absl::StatusOr<LossResult> ChunkedCausalLmLoss(const torch::Tensor& hidden,
                                               const torch::Tensor& lm_head,
                                               const torch::Tensor& labels, int64_t chunk_tokens) {
  if (!hidden.defined() || hidden.dim() != 3 || !hidden.is_floating_point() || hidden.size(1) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("hidden must be float [B, T, H] with T >= 1, got ", ShapeString(hidden)));
  }
  if (!lm_head.defined() || lm_head.dim() != 2 || lm_head.size(1) != hidden.size(2) ||
      lm_head.scalar_type() != hidden.scalar_type() || lm_head.device() != hidden.device()) {
    return absl::InvalidArgumentError(absl::StrCat("lm_head must be [V, ", hidden.size(2),
                                                   "] of hidden's dtype and device, got ",
                                                   ShapeString(lm_head)));
  }
  if (!labels.defined() || labels.dim() != 2 || labels.is_floating_point() ||
      labels.scalar_type() == torch::kBool || labels.size(0) != hidden.size(0) ||
      labels.size(1) != hidden.size(1)) {
    return absl::InvalidArgumentError(absl::StrCat("labels must be integer [", hidden.size(0), ", ",
                                                   hidden.size(1), "], got ", ShapeString(labels)));
  }
  if (chunk_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_tokens must be >= 1, got ", chunk_tokens));
  }
  const int64_t b = hidden.size(0), t = hidden.size(1), vocab = lm_head.size(0);
  // Position t is scored against labels[t + 1]; the last position against nothing.
  const torch::Tensor target = labels.to(hidden.device(), torch::kInt64);
  const torch::Tensor shifted =
      torch::cat({target.narrow(1, 1, t - 1), torch::full({b, 1}, kIgnoreIndex, target.options())},
                 1)
          .reshape({-1});
  const torch::Tensor mask = shifted.ne(kIgnoreIndex);
  const torch::Tensor invalid = mask.logical_and(shifted.lt(0).logical_or(shifted.ge(vocab)));
  const int64_t bad = invalid.sum().item<int64_t>();
  if (bad > 0) {
    return absl::InvalidArgumentError(absl::StrCat("labels hold ", bad, " ids outside [0, ", vocab,
                                                   ") other than ", kIgnoreIndex));
  }
  const torch::Tensor rows = mask.nonzero().squeeze(1);
  const torch::Tensor targets = shifted.index_select(0, rows);
  LossResult result;
  result.tokens = rows.size(0);
  const torch::ScalarType acc = AccumulationDtype(hidden.scalar_type());
  if (result.tokens == 0) {
    result.loss = hidden.sum().to(acc) * 0.0;
    return result;
  }
  if (torch::GradMode::is_enabled() && hidden.requires_grad()) {
    result.loss =
        ChunkedLmLossFunction::apply(hidden, lm_head.detach(), rows, targets, chunk_tokens);
  } else {
    torch::NoGradGuard no_grad;
    const torch::Tensor h = hidden.reshape({-1, hidden.size(2)}).index_select(0, rows);
    result.loss = ChunkedNllSum(h, lm_head, targets, chunk_tokens, 1.0, nullptr) /
                  static_cast<double>(result.tokens);
  }
  return result;
}

int64_t CountCausalLmTokens(const torch::Tensor& labels) {
  if (!labels.defined() || labels.dim() != 2 || labels.size(1) < 2) return 0;
  return labels.narrow(1, 1, labels.size(1) - 1).ne(kIgnoreIndex).sum().item<int64_t>();
}

}  // namespace qwha::train

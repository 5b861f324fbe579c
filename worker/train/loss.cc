#include "worker/train/loss.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace qwha::train {
namespace {

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

int64_t CountCausalLmTokens(const torch::Tensor& labels) {
  if (!labels.defined() || labels.dim() != 2 || labels.size(1) < 2) return 0;
  return labels.narrow(1, 1, labels.size(1) - 1).ne(kIgnoreIndex).sum().item<int64_t>();
}

}  // namespace qwha::train

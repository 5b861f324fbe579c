#include "worker/train/progress.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qwha::train {
namespace {

// "950", "1.2k", "34.5M".
std::string FormatRate(double value) {
  if (!std::isfinite(value) || value < 0) return "--";
  if (value < 1e3) return absl::StrFormat("%.0f", value);
  if (value < 1e6) return absl::StrFormat("%.1fk", value / 1e3);
  return absl::StrFormat("%.1fM", value / 1e6);
}

}  // namespace

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const int64_t total = static_cast<int64_t>(std::llround(seconds));
  const int64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  if (h > 0) return absl::StrFormat("%dh%02dm%02ds", h, m, s);
  if (m > 0) return absl::StrFormat("%dm%02ds", m, s);
  return absl::StrFormat("%ds", s);
}

std::string FormatProgressBar(const Progress& p, int width) {
  if (width < 1) return "";
  const double fraction =
      p.total_steps > 0
          ? std::clamp(static_cast<double>(p.step) / static_cast<double>(p.total_steps), 0.0, 1.0)
          : 0.0;
  std::string tail =
      absl::StrFormat(" %d/%d %d%% loss %.4f lr %.2e %s tok/s ETA %s", p.step, p.total_steps,
                      static_cast<int>(fraction * 100), p.loss, p.lr,
                      FormatRate(p.tokens_per_second), FormatDuration(p.eta_seconds));
  if (std::isfinite(p.eval_loss))
    absl::StrAppend(&tail, absl::StrFormat(" eval %.4f", p.eval_loss));
  const std::string head = p.phase.empty() ? "train" : p.phase;
  const int fixed = static_cast<int>(head.size() + 3 + tail.size());  // " [" + "]"
  const int bar = std::max(10, width - fixed);
  const int filled = static_cast<int>(std::floor(fraction * bar));
  std::string line =
      absl::StrCat(head, " [", std::string(filled, '#'), std::string(bar - filled, '-'), "]", tail);
  if (static_cast<int>(line.size()) > width) line.resize(static_cast<size_t>(width));
  if (static_cast<int>(line.size()) < width) line.append(width - line.size(), ' ');
  return line;
}

}  // namespace qwha::train

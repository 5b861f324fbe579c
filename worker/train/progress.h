// Training progress as the loop reports it, and its one-line terminal form.
//
// The trainer calls a ProgressCallback from its own thread after each
// reported step (and after each evaluation); the callback should return
// quickly (copy what it needs, hand it to a reporter thread).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>

namespace qwha::train {

struct Progress {
  std::string phase;             // "train" after a step, "eval" after an evaluation
  int64_t step = 0;              // optimizer steps completed (1-based count)
  int64_t total_steps = 0;       // TrainOptions::max_steps
  int64_t epoch = 0;             // epoch of the step's last micro-batch
  double loss = 0;               // mean training loss of the step (per supervised token)
  double lr = 0;                 // learning rate the step used
  double grad_norm = 0;          // global gradient norm before clipping
  double tokens_per_second = 0;  // input tokens per second since training (re)started
  double eta_seconds = std::numeric_limits<double>::quiet_NaN();  // NaN: unknown
  double eval_loss = std::numeric_limits<double>::quiet_NaN();    // NaN: none yet
};

using ProgressCallback = std::function<void(const Progress&)>;

// "1h02m03s", "4m05s", "12s"; "--" for a negative or non-finite duration.
std::string FormatDuration(double seconds);

// One terminal line of exactly `width` characters (ASCII, no newline), e.g.
//   train [#########-----------] 120/1000 12% loss 2.3456 lr 1.98e-04 1.2k tok/s ETA 4m05s
// The bar takes what the text leaves, at least 10 characters; if the text
// alone is too long the line is cut to `width`. width < 1 gives "".
std::string FormatProgressBar(const Progress& progress, int width);

}  // namespace qwha::train

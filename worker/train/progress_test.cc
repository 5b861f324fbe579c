#include "worker/train/progress.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace qwha::train {
namespace {

TEST(ProgressTest, FormatDuration) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(12.4), "12s");
  EXPECT_EQ(FormatDuration(245), "4m05s");
  EXPECT_EQ(FormatDuration(3723), "1h02m03s");
  EXPECT_EQ(FormatDuration(-1), "--");
  EXPECT_EQ(FormatDuration(std::nan("")), "--");
  EXPECT_EQ(FormatDuration(INFINITY), "--");
}

TEST(ProgressTest, ProgressBarHasExactWidthAndContent) {
  Progress p;
  p.phase = "train";
  p.step = 120;
  p.total_steps = 1000;
  p.loss = 2.34561;
  p.lr = 1.98e-4;
  p.tokens_per_second = 1234;
  p.eta_seconds = 245;
  for (int width : {60, 80, 120, 200}) {
    const std::string line = FormatProgressBar(p, width);
    EXPECT_EQ(static_cast<int>(line.size()), width) << line;
  }
  const std::string line = FormatProgressBar(p, 100);
  EXPECT_EQ(line.rfind("train [", 0), 0u) << line;
  for (const char* part :
       {"120/1000", "12%", "loss 2.3456", "lr 1.98e-04", "1.2k tok/s", "ETA 4m05s"}) {
    EXPECT_NE(line.find(part), std::string::npos) << part << " in " << line;
  }
  EXPECT_EQ(line.find("eval"), std::string::npos);
  // The bar is 12% filled.
  const size_t open = line.find('['), close = line.find(']');
  const std::string bar = line.substr(open + 1, close - open - 1);
  const size_t filled = bar.find_first_not_of('#');
  EXPECT_EQ(filled, static_cast<size_t>(bar.size() * 0.12)) << bar;

  p.eval_loss = 1.5;
  p.eta_seconds = std::nan("");
  p.step = 1000;
  const std::string done = FormatProgressBar(p, 100);
  EXPECT_NE(done.find("eval 1.5000"), std::string::npos) << done;
  EXPECT_NE(done.find("ETA --"), std::string::npos) << done;
  EXPECT_NE(done.find("100%"), std::string::npos) << done;
  const std::string full_bar = done.substr(done.find('[') + 1, done.find(']') - done.find('[') - 1);
  EXPECT_EQ(full_bar.find_first_not_of('#'), std::string::npos) << done;

  // Too narrow: the bar keeps 10 cells and the line is cut to width.
  EXPECT_EQ(FormatProgressBar(p, 20).size(), 20u);
  EXPECT_EQ(FormatProgressBar(p, 0), "");
}

}  // namespace
}  // namespace qwha::train

#!/usr/bin/env bash
# The main job on embedded defaults, end to end on the CPU: installs what is missing, builds,
# then (1) compares every adapter initialization on a synthetic LLM-like layer at 2/3/4 bits and
# (2) fine-tunes the bundled demo model (tests/fixtures/demo) with a 2-bit QWHA adapter:
# load → calibrate → quantize → initialize → train → evaluate → export to $OUT (default
# /tmp/qwha-demo). Extra arguments go to qwha-train.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bazel build //worker/bench:qwha-bench //worker/pipeline:qwha-train
bazel-bin/worker/bench/qwha-bench init-error --device cpu --quick
out="${OUT:-/tmp/qwha-demo}"
demo=tests/fixtures/demo
bazel-bin/worker/pipeline/qwha-train --model "$demo/model" --data "$demo/data/train.jsonl" \
  --eval-data "$demo/data/eval.jsonl" --output "$out" --bits 2 --rank 8 --steps 20 \
  --batch-size 4 --seq-len 64 --device cpu "$@"
ls -l "$out"

#!/usr/bin/env bash
# The main job on embedded defaults: installs what is missing, builds qwha-bench and runs the
# QWHA initialization comparison on synthetic LLM-like layers on the CPU (quantize at 2/3/4 bits,
# initialize each adapter type at the same budget, print the layer-output error each leaves).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bazel build //worker/bench:qwha-bench
bazel-bin/worker/bench/qwha-bench init-error --device cpu --quick "$@"

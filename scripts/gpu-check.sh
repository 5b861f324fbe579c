#!/usr/bin/env bash
# On a GPU machine: build with CMake against the CUDA PyTorch install, run every
# test (CPU and CUDA paths) and the benchmarks; write logs, JSON and a summary
# table to OUTDIR.
#   scripts/gpu-check.sh OUTDIR [bench subcommands...]   (default: all)
# Needs .deps/ from scripts/fetch-gpu-deps.sh when the machine lacks Abseil,
# nlohmann-json or GoogleTest.
set -uo pipefail
out="${1:?usage: scripts/gpu-check.sh OUTDIR [bench...]}"
shift
benches=("$@")
((${#benches[@]})) || benches=(fwht layer init-time init-error)
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$out"
# shellcheck source=scripts/gpu-env.sh
source scripts/gpu-env.sh

gpu_configure "$out" || exit 1
# Keep going past a failing target so every other test and the benchmarks still run.
if cmake --build "$build" -j"$(nproc)" -- -k 0 >"$out/build.log" 2>&1; then
  echo "build ok"
else
  build_rc=1
  echo "BUILD FAILED (continuing with what built):"
  grep -E "error|FAILED" "$out/build.log" | head -40
fi

ctest --test-dir "$build" --output-on-failure -j4 >"$out/ctest.log" 2>&1
test_rc=$?
grep -E "tests passed|tests failed|\*\*\*Failed|Failed  |Timeout" "$out/ctest.log" | tail -20

bench_rc=0
build_rc=${build_rc:-0}
for b in "${benches[@]}"; do
  if ! "$build/qwha-bench" "$b" --json-out "$out/bench-$b.json" >"$out/bench-$b.txt" 2>&1; then
    bench_rc=1
  fi
  cat "$out/bench-$b.txt"
done
echo "build rc=$build_rc tests rc=$test_rc benches rc=$bench_rc"
exit $((build_rc || test_rc || bench_rc))

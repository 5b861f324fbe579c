#!/usr/bin/env bash
# On a GPU machine: build the serving benchmark and the tests of the code it runs (CMake against
# the CUDA PyTorch install), run those tests, then qwha-serve-bench; logs under OUTDIR.
#   scripts/gpu-serve.sh OUTDIR [qwha-serve-bench flags...]
# Needs .deps/ from scripts/fetch-gpu-deps.sh when the machine lacks Abseil, nlohmann-json or
# GoogleTest. QWHA_GPU_TESTS overrides the ctest regex of the tests to run, QWHA_GPU_TARGETS the
# targets built. With QWHA_NCU set
# (Nsight Compute arguments, e.g. "--kernel-name regex:SpectrumApply --launch-count 7"), only the
# benchmark is built and it runs under ncu, whose report goes to OUTDIR/ncu.txt.
set -uo pipefail
out="${1:?usage: scripts/gpu-serve.sh OUTDIR [bench flags...]}"
shift
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$out"
# shellcheck source=scripts/gpu-env.sh
source scripts/gpu-env.sh
tests="${QWHA_GPU_TESTS:-^(spectrum_apply_test|serving_graph_test|fwht_test|rms_norm_test|llama_test|trainer_test)$}"

gpu_configure "$out" || exit 1
# shellcheck disable=SC2206  # QWHA_GPU_TARGETS is a list of targets
targets=(${QWHA_GPU_TARGETS:-qwha-serve-bench qwha-train spectrum_apply_test serving_graph_test
  fwht_test rms_norm_test llama_test trainer_test})
if [[ -n "${QWHA_NCU:-}" ]]; then targets=(qwha-serve-bench); fi
if ! cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >"$out/build.log" 2>&1; then
  grep -E "error|FAILED" "$out/build.log" | head -40
  # The benchmark's --trace needs LibTorch's Kineto headers: without them, build the rest.
  if ! grep -q "serve_bench.cc" "$out/build.log" ||
    ! cmake -B "$build" -DQWHA_SERVE_TRACE=OFF >>"$out/cmake.log" 2>&1 ||
    ! cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >"$out/build.log" 2>&1; then
    exit 1
  fi
  echo "built without QWHA_SERVE_TRACE"
fi
echo "build ok"
if [[ -n "${QWHA_NCU:-}" ]]; then
  # shellcheck disable=SC2086  # QWHA_NCU is a list of arguments
  ncu $QWHA_NCU "$build/qwha-serve-bench" "$@" >"$out/ncu.txt" 2>&1
  rc=$?
  grep -vE "^==PROF==" "$out/ncu.txt" | tail -150
  exit $rc
fi
ctest --test-dir "$build" --output-on-failure -R "$tests" >"$out/ctest.log" 2>&1
test_rc=$?
grep -E "tests passed|tests failed|\*\*\*Failed|Failed  |Timeout" "$out/ctest.log" | tail -20
gpu_clocks "$out" "before the benchmark"
"$build/qwha-serve-bench" "$@" 2>&1 | tee "$out/serve-bench.txt"
bench_rc=${PIPESTATUS[0]}
gpu_clocks "$out" "after the benchmark"
echo "tests rc=$test_rc bench rc=$bench_rc"
exit $((test_rc || bench_rc))

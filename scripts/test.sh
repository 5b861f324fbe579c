#!/usr/bin/env bash
# Runs every test: installs what is missing (Debian 12), then `bazel test //...`.
# Extra arguments go to bazel (e.g. a target pattern such as //kernels/...).
# Without arguments it also compiles the CUDA kernels with nvcc when /usr/local/cuda exists.
# Ends with a summary line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
targets=("$@")
((${#targets[@]})) || targets=(//...)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
bazel test "${targets[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# The CUDA kernels must also compile (nvcc, no GPU needed) wherever the toolkit is installed.
if ((rc == 0)) && [[ -x /usr/local/cuda/bin/nvcc ]] && ((${#@} == 0)); then
  bazel build --config=cuda //kernels:kernels_cuda || rc=$?
fi
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log" || true)
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|INCOMPLETE)' "$log" || true)
if ((rc != 0 && failed == 0)); then failed=1; fi  # build failure: no test ran
echo "${passed} passed, ${failed} failed"
exit "$rc"

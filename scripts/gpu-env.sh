#!/usr/bin/env bash
# Sourced by scripts/gpu-check.sh and scripts/gpu-serve.sh (from the repository root): the
# environment of a CMake build against the CUDA PyTorch install, and gpu_configure OUTDIR, which
# records the GPU in OUTDIR/gpu.txt and configures the build directory $build (logging to
# OUTDIR/cmake.log; on failure it prints the log's tail and returns 1).
# Uses .deps/ from scripts/fetch-gpu-deps.sh when the machine lacks Abseil, nlohmann-json or
# GoogleTest. QWHA_BUILD_DIR, PYTHON and TORCH_CUDA_ARCH_LIST override the defaults.
build="${QWHA_BUILD_DIR:-build-gpu}"
python="${PYTHON:-python3}"
export LD_LIBRARY_PATH="$PWD/.deps/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"

gpu_configure() {
  local out="$1" prefix
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
  prefix="$("$python" -c 'import torch;print(torch.utils.cmake_prefix_path)')"
  if ! cmake -S . -B "$build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc >"$out/cmake.log" 2>&1; then
    tail -40 "$out/cmake.log"
    return 1
  fi
}

# Appends the GPU's clocks, temperature, power and clock-event reasons to OUTDIR/gpu.txt under
# LABEL, and warns when the SM clock is below 1900 MHz under load or a thermal or power reason
# is active (a run on such a machine is no measure of anything: the twelfth session's H100 ran
# at 1800 MHz and 87 C, its base decode step 26 % slower).
gpu_clocks() {
  local out="$1" label="$2" line sm reasons
  line="$(nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,clocks_throttle_reasons.active \
    --format=csv,noheader,nounits 2>/dev/null | head -1)"
  echo "$label: sm MHz, mem MHz, C, W, reasons = $line" | tee -a "$out/gpu.txt"
  sm="$(echo "$line" | cut -d, -f1 | tr -d ' ')"
  reasons="$(echo "$line" | cut -d, -f5 | tr -d ' ')"
  # 0x20 / 0x40: software / hardware thermal slowdown; 0x4 / 0x80: power cap / power brake.
  if [[ -n "$reasons" && "$reasons" =~ ^0x ]] && (((reasons & 0xE4) != 0)); then
    echo "WARNING: the GPU is throttled (clock event reasons $reasons): timings are not comparable" |
      tee -a "$out/gpu.txt"
  elif [[ "$label" == after* && "$sm" =~ ^[0-9]+$ ]] && ((sm > 1000 && sm < 1900)); then
    echo "WARNING: SM clock $sm MHz after the run (full: 1980): timings may not be comparable" |
      tee -a "$out/gpu.txt"
  fi
}

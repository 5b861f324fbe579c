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

#!/bin/bash
# Builds kernels/dev/spectrum_apply_dev.cu (nvcc alone, the four objects in
# parallel) and runs it once per argument set, output into OUTDIR/harness.txt.
# On a GPU machine, from the repository root:
#   bash kernels/dev/spectrum_apply_dev.sh OUTDIR "--chunks 1 --cv 0" "--chunks 1 --cv 0.3"
# QWHA_SA_BUILD=DIR keeps the objects and the binary (DIR/sa_dev), e.g. for Nsight Compute.
set -euo pipefail
out=$1
shift
nvcc=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc
flags=(-std=c++17 -O3 "-gencode=arch=compute_90,code=sm_90" -I.)
build=${QWHA_SA_BUILD:-$(mktemp -d)}
mkdir -p "$build"
for f in kernels/dev/spectrum_apply_dev.cu kernels/spectrum_apply_cuda.cu kernels/fwht_cuda.cu \
  kernels/fwht_k_cuda.cu; do
  "$nvcc" "${flags[@]}" -c "$f" -o "$build/$(basename "$f" .cu).o" &
done
wait
"$nvcc" "${flags[@]}" "$build"/*.o -lcublas -o "$build/sa_dev"
mkdir -p "$out"
{
  nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv || true
  for args in "$@"; do
    echo "=== $args"
    # shellcheck disable=SC2086
    "$build/sa_dev" $args
  done
} 2>&1 | tee "$out/harness.txt"

#!/bin/bash
# Builds and runs the kernels/ GoogleTest suites with the CUDA dispatch
# (-DQWHA_WITH_CUDA) against the LibTorch of the local PyTorch install, on a
# GPU machine without Bazel. Abseil and GoogleTest come from DEPS
# (include/, lib/, absl_libs.txt: the pkg-config link line); the CUDA objects
# from OBJS (nvcc-compiled kernels/*_cuda.cu). Usage, from the repo root:
#   kernels/dev/run_gpu_tests.sh DEPS OBJS OUTDIR
set -euo pipefail
deps=$1 objs=$2 out=$3
torch=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
abi=$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
cuda=${CUDA_HOME:-/usr/local/cuda}
flags=(-std=c++17 -O2 -DQWHA_WITH_CUDA -D_GLIBCXX_USE_CXX11_ABI="$abi" -I. -I"$deps/include"
       -isystem "$torch/include" -isystem "$torch/include/torch/csrc/api/include"
       -I"$cuda/include")
mkdir -p "$out/obj"
for f in fwht dequant spectrum fwht_test dequant_test spectrum_test; do
  g++ "${flags[@]}" -c "kernels/$f.cc" -o "$out/obj/$f.o" &
done
wait
libs=(-L"$torch/lib" -Wl,-rpath,"$torch/lib" -ltorch -ltorch_cpu -ltorch_cuda -lc10 -lc10_cuda
      -L"$cuda/lib64" -lcudart -L"$deps/lib" -Wl,-rpath,"$deps/lib" $(cat "$deps/absl_libs.txt")
      "$deps/lib/libgtest_main.a" "$deps/lib/libgtest.a" -lpthread)
status=0
for t in fwht dequant spectrum; do
  g++ -o "$out/${t}_test" "$out/obj/${t}_test.o" "$out/obj/fwht.o" "$out/obj/dequant.o" \
      "$out/obj/spectrum.o" "$objs"/*_cuda.o -Wl,--no-as-needed "${libs[@]}"
  "$out/${t}_test" || status=1
done
exit $status

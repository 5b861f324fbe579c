#!/usr/bin/env bash
# train-throughput on a GPU machine: training tokens/s and peak GPU memory of qwha-train
# (2-bit QWHA, rank-64 budget) vs HF transformers + PEFT LoRA r=64 on the bf16 model, same
# LLaMA-3.2-1B-shaped random weights, batches of 8x512 tokens, in one run.
#   scripts/train-throughput.sh OUTDIR [STEPS]     (after scripts/gpu-check.sh built build-gpu)
set -uo pipefail
out="${1:?usage: scripts/train-throughput.sh OUTDIR [STEPS]}"
steps="${2:-30}"
cd "$(dirname "$0")/.."
build="${QWHA_BUILD_DIR:-build-gpu}"
export LD_LIBRARY_PATH="$PWD/.deps/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
work="$(mktemp -d)"
mkdir -p "$out"
python3 scripts/bench/peft_lora_throughput.py make-model "$work/model" || exit 1
cp tests/fixtures/tokenizer/llama3_style/tokenizer.json "$work/model/"
"$build/qwha-train" --model "$work/model" --data "$work/model/train.jsonl" --output "$work/qwha" \
  --eval-fraction 0 --bits 2 --rank 64 --steps "$steps" --batch-size 8 --seq-len 512 \
  --calibration-batches 2 --lr 1e-4 2>"$out/qwha-train.log" | tee "$out/qwha-train.txt"
python3 scripts/bench/peft_lora_throughput.py peft "$work/model" "$steps" | tee "$out/peft.json"
rm -rf "$work"

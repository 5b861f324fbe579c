#!/usr/bin/env bash
# train-throughput on a GPU machine: training tokens/s and peak GPU memory of qwha-train
# (2-bit QWHA, rank-64 budget) vs HF transformers + PEFT LoRA r=64 on the bf16 model, same
# LLaMA-3.2-1B-shaped random weights, batches of 8x512 input tokens, in one run.
#   scripts/train-throughput.sh OUTDIR [STEPS] [WARMUP]   (after scripts/gpu-check.sh built build-gpu)
# Both sides run WARMUP + STEPS optimizer steps and time the last STEPS (default 30 after 3):
# qwha-train's "steady state" line, the "tokens_per_second" of the PEFT JSON. qwha-train's
# --seq-len 511 gives rows of 512 input tokens (511 rows of labels + the next token), as
# PEFT's 512-token rows with labels = input_ids.
# QWHA_TT_VARIANTS (space-separated) adds qwha-train runs after the default one:
#   eager-attention  --attention eager         full-logits  --loss-chunk 0
#   bf16-adapter     --adapter-dtype bfloat16
#   phases           --profile-phases (per-phase ms/step, a device sync after each phase)
#   checkpointing    --activation-checkpointing (recompute layer activations in backward)
# QWHA_TT_SKIP_PEFT=1 leaves the PEFT side out (qwha-train variants only).
set -uo pipefail
out="${1:?usage: scripts/train-throughput.sh OUTDIR [STEPS] [WARMUP]}"
steps="${2:-30}"
warmup="${3:-3}"
cd "$(dirname "$0")/.."
build="${QWHA_BUILD_DIR:-build-gpu}"
export LD_LIBRARY_PATH="$PWD/.deps/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
work="$(mktemp -d)"
mkdir -p "$out"
python3 scripts/bench/peft_lora_throughput.py make-model "$work/model" || exit 1
cp tests/fixtures/tokenizer/llama3_style/tokenizer.json "$work/model/"

# One qwha-train run: NAME, then extra flags. (No --cache-dir: the float64 calibration Grams
# of this model are about 10 GB, slower to write and read than to recompute from 2 batches.)
qwha() {
  local name="$1"
  shift
  echo "== qwha-train $name: $*" | tee -a "$out/qwha-train.txt"
  "$build/qwha-train" --model "$work/model" --data "$work/model/train.jsonl" \
    --output "$work/qwha-$name" \
    --eval-fraction 0 --bits 2 --rank 64 --steps "$((steps + warmup))" --batch-size 8 \
    --seq-len 511 --calibration-batches 2 --lr 1e-4 "$@" \
    2>"$out/qwha-train-$name.log" | tee -a "$out/qwha-train.txt"
}
qwha default
for v in ${QWHA_TT_VARIANTS:-}; do
  case "$v" in
    eager-attention) qwha "$v" --attention eager ;;
    full-logits) qwha "$v" --loss-chunk 0 ;;
    bf16-adapter) qwha "$v" --adapter-dtype bfloat16 ;;
    phases) qwha "$v" --profile-phases ;;
    checkpointing) qwha "$v" --activation-checkpointing ;;
    *) echo "unknown variant $v" >&2 ;;
  esac
done
if [[ -z "${QWHA_TT_SKIP_PEFT:-}" ]]; then
  python3 scripts/bench/peft_lora_throughput.py peft "$work/model" "$steps" "$warmup" \
    | tee "$out/peft.json"
fi
rm -rf "$work"

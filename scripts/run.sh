#!/usr/bin/env bash
# The main job on embedded defaults, end to end on this machine (CPU when there is no GPU):
# installs what is missing, builds, starts a local qwha-scheduler and one qwha-worker,
# registers the bundled demo model (tests/fixtures/demo/model), uploads its fine-tuning set,
# submits a 2-bit QWHA fine-tuning job with qwhactl, watches it to the end, pulls the adapter
# and verifies every file against the registry's sha256.
#   QWHA_DEMO_DIR   working directory (default /tmp/qwha-demo; wiped first)
#   QWHA_STEPS      training steps (default 30)
# Extra arguments go to `qwhactl submit` (e.g. --bits 3 --adapter lora).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bazel build //server:qwha-scheduler //worker/runtime:qwha-worker //client:qwhactl
bin="$PWD/bazel-bin"
demo="${QWHA_DEMO_DIR:-/tmp/qwha-demo}"
rm -rf "$demo" && mkdir -p "$demo/models"
cp -rL tests/fixtures/demo/model "$demo/models/demo"

"$bin/server/qwha-scheduler" --listen 127.0.0.1:0 --http 127.0.0.1:0 --data-dir "$demo/data" \
  --model-root "$demo/models" --port-file "$demo/ports" 2>"$demo/scheduler.log" &
scheduler=$!
worker=""
trap 'kill $scheduler $worker 2>/dev/null || true; wait 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
for _ in $(seq 100); do [[ -s "$demo/ports" ]] && break; sleep 0.1; done
read -r grpc_port http_port <"$demo/ports"
export QWHA_ADDRESS="127.0.0.1:$grpc_port"
echo "scheduler: grpc $QWHA_ADDRESS, metrics http://127.0.0.1:$http_port/metrics (logs in $demo)"
"$bin/worker/runtime/qwha-worker" --scheduler "$QWHA_ADDRESS" --name demo-worker \
  --work-dir "$demo/worker" --http 127.0.0.1:0 2>"$demo/worker.log" &
worker=$!

ctl="$bin/client/qwhactl"
model=$("$ctl" models register --name demo "$demo/models/demo" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
train=$("$ctl" datasets push --name kjv-train tests/fixtures/demo/data/train.jsonl -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
evalset=$("$ctl" datasets push --name kjv-eval tests/fixtures/demo/data/eval.jsonl -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "model $model, train $train, eval $evalset"
job=$("$ctl" submit --model "$model" --train-dataset "$train" --eval-dataset "$evalset" \
  --bits 2 --adapter qwha --rank 8 --max-steps "${QWHA_STEPS:-30}" --batch-size 4 --seq-len 64 \
  --name demo "$@" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "job $job submitted; watching"
"$ctl" watch "$job"
adapter=$("$ctl" get "$job" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["adapter_id"])')
"$ctl" adapters pull "$adapter" --dir "$demo/adapter"
# Verify independently: each pulled file's sha256 equals the registry's.
"$ctl" adapters get "$adapter" -o json | python3 -c '
import hashlib, json, os, sys
adapter = json.load(sys.stdin)
for f in adapter["files"]:
    name, want, size = f["name"], f["sha256"], int(f["size"])
    digest = hashlib.sha256(open(os.path.join(sys.argv[1], name), "rb").read()).hexdigest()
    assert digest == want, "%s: sha256 %s != registry %s" % (name, digest, want)
    print("verified %-24s %10d bytes  sha256 %s" % (name, size, digest[:16]))
print("metrics:", adapter.get("metrics_json", "")[:400])
' "$demo/adapter"
echo "adapter $adapter pulled to $demo/adapter"

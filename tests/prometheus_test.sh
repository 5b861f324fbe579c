#!/usr/bin/env bash
# A real Prometheus (Debian's package) scrapes a running qwha-scheduler and
# qwha-worker with deploy/prometheus/{prometheus.yml,alerts.yml}; the test
# passes when the qwha series and the alert rules are loaded.
set -euo pipefail
runfiles="${TEST_SRCDIR:-.}/qwha"
tmp="${TEST_TMPDIR:-$(mktemp -d)}/prometheus_test"
rm -rf "$tmp" && mkdir -p "$tmp/models"
prometheus_bin=$(command -v prometheus || true)
if [[ -z "$prometheus_bin" ]]; then
  echo "FAIL: prometheus is not installed (apt-get install prometheus; scripts/install-deps.sh does)" >&2
  exit 1
fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sched_http=$(free_port); worker_http=$(free_port); prom_port=$(free_port)

"$runfiles/server/qwha-scheduler" --listen 127.0.0.1:0 --http "127.0.0.1:$sched_http" \
  --data-dir "$tmp/data" --model-root "$tmp/models" --port-file "$tmp/ports" >"$tmp/scheduler.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -s "$tmp/ports" ]] && break; sleep 0.1; done
read -r grpc_port _ <"$tmp/ports"
"$runfiles/worker/runtime/qwha-worker" --scheduler "127.0.0.1:$grpc_port" --name prom-w1 \
  --work-dir "$tmp/worker" --http "127.0.0.1:$worker_http" >"$tmp/worker.log" 2>&1 &
pids+=($!)

sed -e "s/127.0.0.1:7421/127.0.0.1:$sched_http/" -e "s/127.0.0.1:7431/127.0.0.1:$worker_http/" \
  -e "s/scrape_interval: 5s/scrape_interval: 1s/" \
  "$runfiles/deploy/prometheus/prometheus.yml" >"$tmp/prometheus.yml"
cp "$runfiles/deploy/prometheus/alerts.yml" "$tmp/alerts.yml"
"$prometheus_bin" --config.file "$tmp/prometheus.yml" --storage.tsdb.path "$tmp/tsdb" \
  --web.listen-address "127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)

query() {
  python3 - "$prom_port" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
port, q = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(q)}", timeout=2) as r:
        print(len(json.load(r)["data"]["result"]))
except Exception:
    print(0)
PY
}
want=("qwha_jobs" "qwha_workers_live" "qwha_rpc_requests_total" 'up{job="qwha-scheduler"} == 1'
      'up{job="qwha-worker"} == 1' "qwha_worker_device_memory_total_bytes" "qwha_worker_training_loss")
for q in "${want[@]}"; do
  found=0
  for _ in $(seq 60); do
    n=$(query "$q"); if [[ "$n" -gt 0 ]]; then found=1; break; fi; sleep 0.5
  done
  if [[ $found -eq 0 ]]; then
    echo "FAIL: Prometheus has no series for: $q" >&2
    tail -5 "$tmp/prometheus.log" "$tmp/scheduler.log" "$tmp/worker.log" >&2
    exit 1
  fi
  echo "ok: $q"
done
rules=$(python3 - "$prom_port" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v1/rules", timeout=2) as r:
    print(sum(len(g["rules"]) for g in json.load(r)["data"]["groups"]))
PY
)
[[ "$rules" -ge 6 ]] || { echo "FAIL: alert rules not loaded ($rules)" >&2; exit 1; }
echo "ok: $rules alert rules loaded"
echo PASS

#!/usr/bin/env bash
# Runs each qwha-bench subcommand with --quick on the CPU and checks that it
# prints one JSON object with a non-empty table.
set -euo pipefail
bench="${TEST_SRCDIR:-.}/qwha/worker/bench/qwha-bench"
[[ -x "$bench" ]] || bench="$(dirname "$0")/qwha-bench"
for cmd in init-error fwht layer init-time; do
  out="$("$bench" "$cmd" --quick --device cpu --json)"
  python3 - "$cmd" "$out" <<'PY'
import json, sys
cmd, text = sys.argv[1], sys.argv[2]
obj = json.loads(text)
rows = obj["tables"][0]["rows"]
assert obj["command"] == cmd and rows, f"{cmd}: empty table"
print(f"{cmd}: {len(rows)} rows ok")
PY
done
# Bad input is rejected with exit code 2 and a message naming the flag.
if "$bench" init-error --bits 5 2>/tmp/qwha_bench_err; then exit 1; fi
grep -q -- "--bits" /tmp/qwha_bench_err
echo "smoke ok"

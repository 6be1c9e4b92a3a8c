#!/usr/bin/env bash
# The cost of security, in one run: the named customer lookup at 8 clients
# (wrk: requests/s and p99) and a 1-million-row CSV export of the golden
# customers (`SELECT * FROM customer`, wall time at the client), each as
# `admin` (no masks, no row filters) and as `analyst` (L3/L4 masked), with
# the audit trail on and off. Prints each figure and the ratios
# analyst/admin and audit on/off (target: each at most 1.10). The four
# configurations run in ROUNDS rounds (default 3), interleaved, and each
# figure is the median of its rounds (one run of a saturated 2-core machine
# swings by 15 %).
#
#   benches/security_cost.sh LAKE_DIR [BIN]
#
# LAKE_DIR must hold a lake loaded and resolved from `custlake generate
# --customers 1000000` (core ids C1000000000 … C1000999999). Needs wrk.
set -euo pipefail
lake="${1:?usage: benches/security_cost.sh LAKE_DIR [BIN]}"
bin="${2:-target/release/custlake}"
port=18556
seconds="${SECONDS_PER_RUN:-15}"
rounds="${ROUNDS:-3}"
work="$(mktemp -d)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

declare -A token
for role in admin analyst; do
  token[$role]="$("$bin" --quiet --lake "$lake" token create --user "bench-$role" --role "$role" | tail -1)"
done

cat > "$work/lookup.lua" <<'LUA'
math.randomseed(42)
local auth = "Bearer " .. os.getenv("BENCH_TOKEN")
request = function()
  return wrk.format("GET", "/v1/queries/customer_lookup?id=C" .. (1000000000 + math.random(0, 999999)),
    { ["Authorization"] = auth })
end
LUA

export_csv() {
  BENCH_TOKEN="$1" python3 - "$port" <<'PY'
import json, os, sys, time, urllib.request
port = sys.argv[1]
body = json.dumps({"sql": "SELECT * FROM customer", "limit": 1000000, "timeout_ms": 600000}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/query?format=csv", data=body,
                             headers={"content-type": "application/json",
                                      "authorization": "Bearer " + os.environ["BENCH_TOKEN"]})
t = time.perf_counter()
lines = size = 0
with urllib.request.urlopen(req) as r:
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        size += len(chunk)
        lines += chunk.count(b"\n")
print(f"{time.perf_counter() - t:.2f} {lines - 1} {size}")
PY
}

declare -A rps p99 csv
ms() { # wrk latency (e.g. 3.21ms, 812.00us, 1.02s) in ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
for round in $(seq 1 "$rounds"); do
for audit in on off; do
  enabled=$([ "$audit" = on ] && echo true || echo false)
  CUSTLAKE__SECURITY__AUDIT__ENABLED=$enabled \
  CUSTLAKE__ROLES__ADMIN__RATE_PER_SECOND=1000000 CUSTLAKE__ROLES__ADMIN__BURST=1000000 \
  CUSTLAKE__ROLES__ANALYST__RATE_PER_SECOND=1000000 CUSTLAKE__ROLES__ANALYST__BURST=1000000 \
  CUSTLAKE__ROLES__ANALYST__MAX_ROWS=100000000 \
  CUSTLAKE__SERVER__MAX_CONCURRENT_QUERIES=128 CUSTLAKE__SERVER__MAX_QUERIES_PER_USER=128 \
  CUSTLAKE__SCHEDULER__ENABLED=false \
    "$bin" serve --lake "$lake" --bind "127.0.0.1:$port" > "$work/server-$audit.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz')" 2>/dev/null && break
    sleep 0.1
  done
  for role in admin analyst; do
    # Warm: the tables' state and the Parquet footers.
    BENCH_TOKEN="${token[$role]}" wrk -t2 -c8 -d3s -s "$work/lookup.lua" "http://127.0.0.1:$port" > /dev/null
    out=$(BENCH_TOKEN="${token[$role]}" wrk -t2 -c8 -d"${seconds}s" --latency -s "$work/lookup.lua" "http://127.0.0.1:$port")
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    [ -n "$non2xx" ] && { echo "$role/audit $audit: $non2xx non-2xx answers"; echo "$out"; exit 1; }
    r=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p=$(ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
    read -r secs rows bytes < <(export_csv "${token[$role]}")
    [ "$rows" = 1000000 ] || { echo "the export returned $rows rows"; exit 1; }
    rps[$role-$audit]+="$r "; p99[$role-$audit]+="$p "; csv[$role-$audit]+="$secs "
    echo "round $round, audit $audit, $role: lookup $r req/s, p99 $p ms; CSV export of $rows rows ($bytes bytes) in $secs s" >&2
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
done
for k in "${!rps[@]}"; do
  rps[$k]=$(echo "${rps[$k]}" | median); p99[$k]=$(echo "${p99[$k]}" | median); csv[$k]=$(echo "${csv[$k]}" | median)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

echo "Medians of $rounds rounds:"
echo "| audit | role | lookup req/s | lookup p99 ms | 1M-row CSV export s |"
echo "|---|---|---:|---:|---:|"
for audit in on off; do
  for role in admin analyst; do
    echo "| $audit | $role | ${rps[$role-$audit]} | ${p99[$role-$audit]} | ${csv[$role-$audit]} |"
  done
done
echo
echo "| ratio | req/s (lower is worse: admin/analyst) | p99 | CSV export |"
echo "|---|---:|---:|---:|"
for audit in on off; do
  echo "| analyst / admin, audit $audit | $(ratio "${rps[admin-$audit]}" "${rps[analyst-$audit]}") | $(ratio "${p99[analyst-$audit]}" "${p99[admin-$audit]}") | $(ratio "${csv[analyst-$audit]}" "${csv[admin-$audit]}") |"
done
for role in admin analyst; do
  echo "| audit on / off, $role | $(ratio "${rps[$role-off]}" "${rps[$role-on]}") | $(ratio "${p99[$role-on]}" "${p99[$role-off]}") | $(ratio "${csv[$role-on]}" "${csv[$role-off]}") |"
done

#!/usr/bin/env bash
# HTTP service load: the four customer lookups (golden id, source id, phone,
# id number; named queries) at 1, 8 and 64 concurrent clients (wrk), after a
# sample of each is checked against the Delta files read with `deltalake`;
# then a 10-million-row CSV export (time and the server's peak memory).
# Needs `wrk` (Debian package), Python's deltalake and pyarrow, and a
# release build. CUSTLAKE_BENCH_SECONDS sets each run's length (15).
#
#   benches/http_load.sh LAKE_DIR [BIN]
#
# LAKE_DIR must hold a lake loaded from `custlake generate --customers 1000000`
# (core customer ids C1000000000 … C1000999999).
set -euo pipefail
lake="${1:?usage: benches/http_load.sh LAKE_DIR [BIN]}"
bin="${2:-target/release/custlake}"
port=18555
work="$(mktemp -d)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

token="$("$bin" --quiet --lake "$lake" token create --user bench --role admin | tail -1)"
export CUSTLAKE_BENCH_TOKEN="$token"
CUSTLAKE__ROLES__ADMIN__RATE_PER_SECOND=1000000 CUSTLAKE__ROLES__ADMIN__BURST=1000000 \
CUSTLAKE__SERVER__MAX_CONCURRENT_QUERIES=128 CUSTLAKE__SERVER__MAX_QUERIES_PER_USER=128 CUSTLAKE__SERVER__MAX_ROW_LIMIT=100000000 \
CUSTLAKE__SCHEDULER__ENABLED=false \
  "$bin" serve --lake "$lake" --bind "127.0.0.1:$port" > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz')" 2>/dev/null && break
  sleep 0.1
done

# Keys read from the Delta files with the `deltalake` package, and a sample
# of each kind checked against them through the API first.
python3 "$(dirname "$0")/lookup_keys.py" "$lake" "$work" --check "http://127.0.0.1:$port" "$token"

cat > "$work/lookup.lua" <<'LUA'
local keys = {}
for line in io.lines(os.getenv("CUSTLAKE_BENCH_KEYS")) do keys[#keys + 1] = line end
local path = os.getenv("CUSTLAKE_BENCH_PATH")
local headers = { ["Authorization"] = "Bearer " .. os.getenv("CUSTLAKE_BENCH_TOKEN") }
math.randomseed(42)
request = function()
  return wrk.format("GET", path .. keys[math.random(#keys)], headers)
end
LUA

secs="${CUSTLAKE_BENCH_SECONDS:-15}"
echo
echo "| lookup | clients | requests/s | p50 ms | p99 ms | errors |"
echo "|---|---:|---:|---:|---:|---:|"
for kind in golden source phone id_number; do
  case "$kind" in
    golden) path="/v1/queries/customer_golden?id=" ;;
    source) path="/v1/queries/customer_lookup?id=" ;;
    phone) path="/v1/queries/customer_by_phone?phone=" ;;
    id_number) path="/v1/queries/customer_by_id_number?id_number=" ;;
  esac
  for c in 1 8 64; do
    t=$(( c < 2 ? 1 : 2 ))
    out=$(CUSTLAKE_BENCH_KEYS="$work/keys_$kind.txt" CUSTLAKE_BENCH_PATH="$path" \
      wrk -t"$t" -c"$c" -d"${secs}s" --latency -s "$work/lookup.lua" "http://127.0.0.1:$port")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    sockerr=$(echo "$out" | awk '/Socket errors/ {print $0}')
    echo "| $kind | $c | $rps | $p50 | $p99 | ${non2xx:-0}${sockerr:+ ($sockerr)} |"
  done
done

echo
echo "10-million-row CSV export:"
start=$(date +%s.%N)
python3 - "$port" <<'PY'
import json, os, sys, urllib.request
port = sys.argv[1]
body = json.dumps({
    "sql": "SELECT p.* FROM payment p CROSS JOIN (VALUES (1), (2)) AS t(x)",
    "limit": 10000000, "timeout_ms": 600000,
}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/query?format=csv", data=body,
                             headers={"content-type": "application/json",
                                      "authorization": "Bearer " + os.environ["CUSTLAKE_BENCH_TOKEN"]})
rows = size = 0
with urllib.request.urlopen(req) as r:
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        size += len(chunk)
        rows += chunk.count(b"\n")
print(f"  rows (with header): {rows}, bytes: {size}")
PY
end=$(date +%s.%N)
echo "  seconds: $(echo "$end - $start" | bc)"
echo "  server peak memory: $(awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/$pid/status)"

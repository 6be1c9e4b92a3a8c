#!/usr/bin/env python3
"""Where one customer lookup's time goes: one client, sequential requests.

Starts a server over LAKE (as benches/wire_protocols.py does) and times, per
line, REQUESTS sequential requests with golden ids read from the lake's
Delta files (`deltalake`, not custlake), p50 and mean in ms:

- `SELECT 1` through POST /v1/query (HTTP, authentication, audit record);
- the golden lookup's SQL with `AND 1 = 0` (parsed, secured, planned and
  optimised; nothing scanned);
- the lookup returning only `customer_id` (one column read);
- the full lookup (17 columns);
- the named query `customer_golden` (the same lookup);
- `SELECT count(*) FROM customer`.

The differences give planning and the cost of each column read.

    python3 benches/lookup_breakdown.py --lake LAKE --bin target/release/custlake [--requests 150] [--rounds 2]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire_protocols  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lake", required=True)
    p.add_argument("--bin", default="target/release/custlake")
    p.add_argument("--requests", type=int, default=150)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--http-port", type=int, default=18557)
    args = p.parse_args()
    # wire_protocols.start also opens the PG and Flight listeners.
    args.pg_port, args.flight_port = 15533, 15053

    from deltalake import DeltaTable

    ids = (
        DeltaTable(os.path.join(args.lake, "hot", "customer"))
        .to_pyarrow_table(columns=["customer_id"])
        .column(0)
        .to_pylist()
    )
    step = max(1, len(ids) // args.requests)
    keys = ids[::step][: args.requests]

    proc, token = wire_protocols.start(args, tempfile.mkdtemp())
    base = f"http://127.0.0.1:{args.http_port}"
    auth = {"authorization": f"Bearer {token}"}

    def post(sql):
        req = urllib.request.Request(
            f"{base}/v1/query",
            data=json.dumps({"sql": sql}).encode(),
            headers={**auth, "content-type": "application/json"},
        )
        return urllib.request.urlopen(req).read()

    def get(path):
        return urllib.request.urlopen(urllib.request.Request(base + path, headers=auth)).read()

    lookup = wire_protocols.LOOKUP
    cases = {
        "SELECT 1": lambda k: post("SELECT 1"),
        "lookup AND 1 = 0 (planned, no scan)": lambda k: post(lookup.format(f"'{k}' AND 1 = 0")),
        "lookup, customer_id only": lambda k: post(
            f"SELECT customer_id FROM customer WHERE customer_id = '{k}'"
        ),
        "lookup, 17 columns": lambda k: post(lookup.format(f"'{k}'")),
        "named query customer_golden": lambda k: get(f"/v1/queries/customer_golden?id={k}"),
        "SELECT count(*) FROM customer": lambda k: post("SELECT count(*) FROM customer"),
    }
    try:
        print("| request | round | p50 ms | mean ms |")
        print("|---|---:|---:|---:|")
        for r in range(1, args.rounds + 1):
            for name, call in cases.items():
                times = []
                for k in keys:
                    t = time.perf_counter()
                    call(k)
                    times.append((time.perf_counter() - t) * 1000)
                print(f"| {name} | {r} | {statistics.median(times):.2f} | {statistics.mean(times):.2f} |")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    sys.exit(main())

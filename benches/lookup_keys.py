#!/usr/bin/env python3
"""Keys for the lookup load test, and a check that the API finds the right
customers.

Reads the lake's Delta tables with the `deltalake` package (not custlake),
writes one file of URL-encoded keys per lookup kind into OUT_DIR (for wrk's
Lua script), and, with --check URL TOKEN, asks the API for a sample of each
kind and compares every reply with what the Delta files hold.

    python3 benches/lookup_keys.py LAKE OUT_DIR [--keys 20000] [--check URL TOKEN]
"""

import argparse
import json
import random
import sys
import urllib.parse
import urllib.request

import pyarrow.compute as pc
from deltalake import DeltaTable

# kind -> (named query, parameter, table, column)
KINDS = {
    "golden": ("customer_golden", "id", "customer", "customer_id"),
    "source": ("customer_lookup", "id", "source_customer", "source_id"),
    "phone": ("customer_by_phone", "phone", "source_customer", "phone"),
    "id_number": ("customer_by_id_number", "id_number", "source_customer", "id_number"),
}


def table(lake, name, columns):
    return DeltaTable(f"{lake}/hot/{name}").to_pyarrow_table(columns=columns)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lake")
    ap.add_argument("out")
    ap.add_argument("--keys", type=int, default=20000)
    ap.add_argument("--sample", type=int, default=100)
    ap.add_argument("--check", nargs=2, metavar=("URL", "TOKEN"))
    a = ap.parse_args()
    rng = random.Random(7)
    tables = {
        "customer": table(a.lake, "customer", ["customer_id"]),
        "source_customer": table(
            a.lake, "source_customer", ["source_system", "source_id", "phone", "id_number"]
        ),
    }
    src = tables["source_customer"]
    core = src.filter(pc.equal(src["source_system"], "core"))
    failures = 0
    for kind, (query, param, tname, column) in KINDS.items():
        t = core if kind == "source" else tables[tname]
        values = [v for v in t[column].to_pylist() if v]
        keys = rng.sample(values, min(a.keys, len(values)))
        with open(f"{a.out}/keys_{kind}.txt", "w") as f:
            for k in keys:
                f.write(urllib.parse.quote(k, safe="") + "\n")
        if not a.check:
            continue
        url, token = a.check
        for k in keys[: a.sample]:
            # What the Delta files hold for this key.
            if kind == "golden":
                want = {(k,)}
            else:
                hit = src.filter(pc.equal(src[column], k))
                if kind == "source":
                    hit = hit.filter(pc.equal(hit["source_system"], "core"))
                want = set(zip(hit["source_system"].to_pylist(), hit["source_id"].to_pylist()))
            req = urllib.request.Request(
                f"{url}/v1/queries/{query}?{param}={urllib.parse.quote(k, safe='')}&format=json",
                headers={"authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(req) as r:
                rows = json.load(r)["rows"]
            if kind == "golden":
                got = {(r["customer_id"],) for r in rows}
            else:
                got = {(r["source_system"], r["source_id"]) for r in rows}
            if got != want:
                failures += 1
                print(f"{kind} {k}: expected {sorted(want)}, got {sorted(got)}", file=sys.stderr)
        print(f"  {kind}: {min(a.sample, len(keys))} lookups checked against the Delta files")
    if failures:
        sys.exit(f"{failures} lookups answered the wrong customers")


if __name__ == "__main__":
    main()

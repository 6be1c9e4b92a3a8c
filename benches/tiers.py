#!/usr/bin/env python3
"""Tiered against untiered `policy`, in one run, and the cost of a move.

    python3 benches/tiers.py --customers 1000000 --bin target/release/custlake

1. Generates a sample insurer (or reuses --sample) and ingests its policies
   into a lake: every row is hot, in one Delta table (the untiered case).
2. Copies that lake and moves it to tiers as of a year before --as-of (the
   bulk of the history goes warm and cold), then times `tier apply --as-of`
   itself: exactly one year of partitions moves hot -> warm and warm -> cold.
   Prints its time, rows, bytes read and written.
3. Runs three queries on both lakes, alternating, --runs times each (the
   first run of each is a warm-up): the last 3 months, the last 2 years, all
   history. Prints the median times, the ratio tiered / untiered, and the
   files each query opened under each tier's root (from strace).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

QUERIES = [
    ("last 3 months", "SELECT product_line, count(*) AS n, sum(premium) AS premium FROM policy WHERE effective_month >= '{m3}' GROUP BY product_line ORDER BY product_line"),
    ("last 2 years", "SELECT product_line, count(*) AS n, sum(premium) AS premium FROM policy WHERE effective_month >= '{m24}' GROUP BY product_line ORDER BY product_line"),
    ("all history", "SELECT product_line, count(*) AS n, sum(premium) AS premium FROM policy GROUP BY product_line ORDER BY product_line"),
]


def month(y, m, back):
    i = y * 12 + (m - 1) - back
    return f"{i // 12:04d}-{i % 12 + 1:02d}"


CONFIG = []


def run(cmd, cwd=None):
    cmd = cmd[:1] + CONFIG + cmd[1:]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return p


def timed_query(bin_, lake, sql, runs):
    p = run([bin_, "--quiet", "--lake", lake, "sql", "--format", "csv", "--runs", str(runs), "--timing", sql])
    ms = [json.loads(l)["ms"] for l in p.stderr.splitlines() if l.startswith("{") and '"ms"' in l]
    return ms[1:] if len(ms) > 1 else ms, p.stdout


def opened_per_tier(bin_, lake, sql):
    """Files the query opens under each tier root (one run, traced)."""
    with tempfile.NamedTemporaryFile(suffix=".trace") as t:
        subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat", "-o", t.name,
                        bin_, *CONFIG, "--quiet", "--lake", lake, "sql", "--format", "csv", sql],
                       capture_output=True, text=True, check=True)
        text = open(t.name, errors="replace").read()
    out = {}
    for tier in ("hot", "warm", "cold"):
        root = os.path.join(os.path.abspath(lake), tier) + "/"
        files = set(re.findall(r'openat\([^"]*"(' + re.escape(root) + r'[^"]+)"', text))
        out[tier] = len({f for f in files if not f.endswith("/")})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--as-of", default="2026-11-01")
    ap.add_argument("--runs", type=int, default=6, help="runs per query and lake (the first is a warm-up)")
    ap.add_argument("--sample", help="an existing sample directory (generate --out)")
    ap.add_argument("--bin", default="target/release/custlake")
    ap.add_argument("--work", default="/tmp/custlake-tiers")
    a = ap.parse_args()
    bin_ = os.path.abspath(a.bin)
    os.makedirs(a.work, exist_ok=True)
    sample = a.sample or os.path.join(a.work, f"sample-{a.customers}")
    if not os.path.exists(os.path.join(sample, "core", "policies.csv")):
        run([bin_, "--quiet", "generate", "--customers", str(a.customers), "--seed", str(a.seed),
             "--as-of", a.as_of, "--out", sample])
    # Nothing is purged here: both tables hold the same rows.
    config = os.path.join(a.work, "custlake.toml")
    with open(config, "w") as f:
        f.write("[retention]\nyears = 30\n")
    CONFIG.extend(["--config", config])
    untiered = os.path.join(a.work, "untiered")
    tiered = os.path.join(a.work, "tiered")
    for d in (untiered, tiered):
        shutil.rmtree(d, ignore_errors=True)
    t = time.time()
    run([bin_, "--quiet", "--lake", untiered, "ingest", "--source", "core", "--entity", "policy",
         os.path.join(sample, "core", "policies.csv")])
    print(f"ingest policies                {time.time() - t:8.2f} s")
    shutil.copytree(untiered, tiered)
    y, m = int(a.as_of[:4]), int(a.as_of[5:7])
    year_before = f"{y - 1:04d}-{a.as_of[5:]}"
    t = time.time()
    run([bin_, "--quiet", "--lake", tiered, "tier", "apply", "--as-of", year_before])
    print(f"tier apply --as-of {year_before}   {time.time() - t:8.2f} s  (first move: all history)")
    p = run([bin_, "--quiet", "--lake", tiered, "tier", "apply", "--as-of", a.as_of, "--json"])
    applied = json.loads(p.stdout)
    mib = 1024 * 1024
    print(f"tier apply --as-of {a.as_of}   {applied['seconds']:8.2f} s  (one year: {applied['rows_moved']} rows "
          f"in {applied['ranges_moved']} ranges, {applied['bytes_read'] / mib:.1f} MiB read, "
          f"{applied['bytes_written'] / mib:.1f} MiB written)")
    status = json.loads(run([bin_, "--quiet", "--lake", tiered, "tier", "status", "--json"]).stdout)
    for s in status:
        if s["table"] == "policy":
            print(f"  {s['tier']:<5} owns {s['range_from'] or 'start'}..{s['range_before'] or 'end'}: "
                  f"{s['rows']} rows, {s['files']} files, {s['bytes'] / mib:.1f} MiB")
    print()
    print(f"{'query':<15} {'untiered ms':>12} {'tiered ms':>10} {'ratio':>6}   files opened (hot/warm/cold): untiered | tiered")
    for name, sql in QUERIES:
        sql = sql.format(m3=month(y, m, 2), m24=month(y, m, 23))
        u, u_out = timed_query(bin_, untiered, sql, a.runs)
        tt, t_out = timed_query(bin_, tiered, sql, a.runs)
        if u_out != t_out:
            sys.exit(f"{name}: the tiered and untiered tables give different results")
        mu, mt = statistics.median(u), statistics.median(tt)
        fu, ft = opened_per_tier(bin_, untiered, sql), opened_per_tier(bin_, tiered, sql)
        print(f"{name:<15} {mu:12.1f} {mt:10.1f} {mt / mu:6.2f}   "
              f"{fu['hot']}/{fu['warm']}/{fu['cold']} | {ft['hot']}/{ft['warm']}/{ft['cold']}")


if __name__ == "__main__":
    main()

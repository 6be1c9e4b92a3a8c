#!/usr/bin/env python3
"""Full against incremental resolve, on one lake, in one run.

    python3 benches/incremental_resolve.py --customers 1000000 --bin target/release/custlake

1. Generates a sample insurer of N customers and a bigger one (N + 1 %)
   with the same seed and as-of date, and an increment holding only the
   bigger one's new rows (benches/increment.py), plus --changed existing
   leads with a new phone number.
2. Ingests the sample and resolves it (the first, full run).
3. Ingests the increment, resolves it incrementally, then resolves the same
   state with --full, which must find nothing left to change (the check
   that the incremental run wrote what a full run would).

Prints the time and peak memory of each step and the ratio incremental /
full. Samples and the lake are kept under --work for reuse.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import run_measured  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--growth", type=float, default=0.01, help="share of new customers in the increment")
    ap.add_argument("--changed", type=int, default=1000, help="existing leads that come again with a new phone")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--as-of", default="2026-11-01")
    ap.add_argument("--bin", default="target/release/custlake")
    ap.add_argument("--work", default="/tmp/custlake-incremental")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    bigger_n = int(a.customers * (1 + a.growth))
    base, bigger = os.path.join(a.work, f"sample-{a.customers}"), os.path.join(a.work, f"sample-{bigger_n}")
    delta, lake = os.path.join(a.work, "increment"), os.path.join(a.work, "lake")

    def step(name, cmd):
        t, rss, out, err = run_measured(cmd)
        print(f"{name:<34} {t:8.2f} s {rss:8.0f} MiB", flush=True)
        return t, rss, out, err

    for path, n in ((base, a.customers), (bigger, bigger_n)):
        if not os.path.exists(os.path.join(path, "truth.csv")):
            step(f"generate {n}", [a.bin, "--quiet", "generate", "--customers", str(n), "--seed", str(a.seed),
                                   "--as-of", a.as_of, "--out", path])
    shutil.rmtree(delta, ignore_errors=True)
    subprocess.run([sys.executable, os.path.join(HERE, "increment.py"), "--base", base, "--bigger", bigger,
                    "--out", delta, "--changed", str(a.changed)], check=True)
    shutil.rmtree(lake, ignore_errors=True)
    lk = [a.bin, "--quiet", "--lake", lake]
    step("ingest the sample", lk + ["ingest", "--from", base])
    first, first_rss, out, _ = step("resolve (first run, full)", lk + ["resolve", "--json"])
    step("ingest the increment", lk + ["ingest", "--from", delta])
    inc, inc_rss, out, _ = step("resolve (incremental)", lk + ["resolve", "--json"])
    r_inc = json.loads(out)
    full, full_rss, out, _ = step("resolve --full (same state)", lk + ["resolve", "--full", "--json"])
    r_full = json.loads(out)
    print()
    print(f"increment: {r_inc['new_or_changed']} new or changed records; the incremental run re-examined "
          f"{r_inc['records']} of {r_full['records']} records ({r_inc['mode']})")
    print(f"incremental / full: {inc:.2f} s / {full:.2f} s = {inc / full:.3f}  "
          f"(peak {inc_rss:.0f} MiB / {full_rss:.0f} MiB)")
    same = r_full["changed_links"] == 0 and r_full["changed_customers"] == 0
    print("full run after the incremental one: "
          + ("nothing to change (same result)" if same else
             f"CHANGED {r_full['changed_links']} links and {r_full['changed_customers']} customers"))
    if not same or r_inc["mode"] != "incremental":
        sys.exit(1)


if __name__ == "__main__":
    main()

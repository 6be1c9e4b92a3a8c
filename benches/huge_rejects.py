#!/usr/bin/env python3
"""Rejected rows worth more than 2 GiB in one load, through the real binary.

Writes a telesales leads file of ROWS rows, each with a 40 KB address and a
birthday that is no date, so every row is quarantined with its raw text
(over 2 GiB of text in all: more than one Arrow batch's 32-bit offsets can
address). Loads it with `custlake ingest` and checks that the load ends
normally, every row is accounted for as quarantined, and the quarantine
holds them all. Prints the time and the peak memory of the load.

    python3 benches/huge_rejects.py --bin target/release/custlake [--rows 70000]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HEADER = ("lead_id,cust_kind,cust_name,gender,birthday,cert_type,cert_no,org_code,tax_no,"
          "contact_person,tel,email,address,industry,source_channel,team,region,agent_code,"
          "created,modified\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rows", type=int, default=70000)
    ap.add_argument("--field-kb", type=int, default=40)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    a = ap.parse_args()
    work = a.dir or tempfile.mkdtemp(prefix="huge-rejects-")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "leads.csv")
    filler = "x" * (a.field_kb * 1024)
    t0 = time.time()
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADER)
        for i in range(a.rows):
            f.write(f"L{i:08d},IND,name{i},男,not-a-date,ID,370102196310214573,,,,19962040343,,"
                    f"{filler},,WEB,电销中心,east,A01381,2018/10/29,2018/10/29 11:19:43\n")
    size = os.path.getsize(path)
    print(f"wrote {a.rows} rows, {size / 2**30:.2f} GiB in {time.time() - t0:.1f} s", file=sys.stderr)
    binary = os.path.abspath(a.bin)
    t0 = time.time()
    run = subprocess.run([binary, "ingest", "--source", "telesales", "--entity", "customer", path],
                         cwd=work, capture_output=True, text=True)
    took = time.time() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if run.returncode != 0:
        print(run.stdout, run.stderr, file=sys.stderr)
        sys.exit(f"ingest failed with exit {run.returncode}")
    q = subprocess.run([binary, "sql", "--format", "csv",
                        "SELECT count(*) AS n, sum(length(raw)) AS bytes FROM quarantine"],
                       cwd=work, capture_output=True, text=True, check=True)
    n, raw_bytes = q.stdout.strip().splitlines()[1].split(",")
    loaded = subprocess.run([binary, "sql", "--format", "csv",
                             "SELECT count(*) FROM source_customer"],
                            cwd=work, capture_output=True, text=True)
    result = {
        "rows": a.rows,
        "file_gib": round(size / 2**30, 2),
        "ingest_seconds": round(took, 1),
        "peak_rss_mb": round(peak_mb),
        "quarantined": int(n),
        "quarantined_raw_gib": round(int(raw_bytes) / 2**30, 2),
        "loaded": loaded.stdout.strip().splitlines()[1:] if loaded.returncode == 0 else "no table",
    }
    print(json.dumps(result))
    if int(n) != a.rows:
        sys.exit(f"{a.rows} rows written, {n} quarantined")


if __name__ == "__main__":
    main()

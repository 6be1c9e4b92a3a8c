#!/usr/bin/env python3
"""Ingest throughput: custlake vs DuckDB on the same source extracts.

For every extract of a generated sample insurer, side by side in one run and
alternating the two engines:
  custlake  `custlake ingest` into a fresh lake (read, map, normalise, validate,
            quarantine, upsert into Delta, ingest_batch record)
  DuckDB    COPY (SELECT * FROM read_csv/read_json/read_parquet(...)) TO ... (FORMAT parquet)
            -- no validation at all.
Both run with the same number of threads. Reports rows/s and MB/s per source,
the time ratio custlake/DuckDB and the peak memory (max RSS) of each.

DuckDB cannot read GBK without an extension download, so it reads a UTF-8
copy of the GBK files (custlake decodes GBK itself); the MB/s figures use the
original file's size for both.

    python3 benches/ingest_vs_duckdb.py --customers 1000000 --bin target/release/custlake

Needs `pip install duckdb`.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile

from measure import run_measured

FILES = [
    ("core", "customer", "core/customers.csv", "csv-gbk"),
    ("core", "policy", "core/policies.csv", "csv-gbk"),
    ("claims", "customer", "claims/claimants.jsonl", "jsonl"),
    ("claims", "claim", "claims/claims.jsonl", "jsonl"),
    ("telesales", "customer", "telesales/leads.csv", "csv"),
    ("telesales", "interaction", "telesales/calls.csv", "csv"),
    ("telesales", "consent", "telesales/consents.csv", "csv"),
    ("finance", "customer", "finance/payers.parquet", "parquet"),
    ("finance", "payment", "finance/payments.parquet", "parquet"),
]

DUCK = r"""
import duckdb, sys
src, kind, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
reader = {
    "csv": f"read_csv('{src}', header = true, all_varchar = true)",
    "jsonl": f"read_json('{src}', format = 'newline_delimited')",
    "parquet": f"read_parquet('{src}')",
}[kind]
con.execute(f"COPY (SELECT * FROM {reader}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
"""


def run(cmd, env=None):
    """Run a command; return (seconds, peak RSS in MiB)."""
    try:
        elapsed, peak, _, _ = run_measured(cmd, env)
    except RuntimeError as e:
        sys.exit(str(e))
    return elapsed, peak


def rows_of(path, kind):
    import duckdb
    reader = {
        "csv": f"read_csv('{path}', header = true, all_varchar = true)",
        "jsonl": f"read_json('{path}', format = 'newline_delimited')",
        "parquet": f"read_parquet('{path}')",
    }[kind]
    return duckdb.connect().execute(f"SELECT count(*) FROM {reader}").fetchall()[0][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--bin", default="target/release/custlake")
    ap.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="custlake-bench-")
    sample = os.path.join(work, f"sample-{args.customers}")
    if not os.path.exists(os.path.join(sample, "truth.csv")):
        t, _ = run([args.bin, "generate", "--quiet", "--customers", str(args.customers), "--seed", str(args.seed),
                    "--as-of", "2026-11-01", "--out", sample])
        print(f"generated {args.customers} customers in {t:.1f}s", file=sys.stderr)

    env = dict(os.environ, CUSTLAKE__QUERY__TARGET_PARTITIONS=str(args.threads))
    rows_out = []
    total = {"custlake": 0.0, "duckdb": 0.0}
    for system, entity, rel, kind in FILES:
        path = os.path.join(sample, rel)
        size = os.path.getsize(path)
        duck_src, duck_kind = path, kind
        if kind == "csv-gbk":
            duck_src = path + ".utf8.csv"
            if not os.path.exists(duck_src):
                with open(path, encoding="gbk") as f, open(duck_src, "w", encoding="utf-8") as g:
                    shutil.copyfileobj(f, g)
            duck_kind = "csv"
        n = rows_of(duck_src, duck_kind)
        times = {"custlake": [], "duckdb": []}
        mem = {"custlake": 0.0, "duckdb": 0.0}
        for i in range(args.runs):
            for engine in (["custlake", "duckdb"] if i % 2 == 0 else ["duckdb", "custlake"]):
                out = tempfile.mkdtemp(dir=work)
                if engine == "custlake":
                    t, m = run([args.bin, "ingest", "--quiet", "--lake", os.path.join(out, "lake"),
                                "--source", system, "--entity", entity, path], env)
                else:
                    t, m = run([sys.executable, "-c", DUCK, duck_src, duck_kind, os.path.join(out, "x.parquet"),
                                str(args.threads)])
                shutil.rmtree(out)
                times[engine].append(t)
                mem[engine] = max(mem[engine], m)
        med = {e: statistics.median(v) for e, v in times.items()}
        for e in total:
            total[e] += med[e]
        rows_out.append((f"{system}/{entity}", kind, n, size, med, mem))

    print(f"\nIngest at {args.customers} customers, {args.threads} threads, median of {args.runs} runs\n")
    print("| source | format | rows | MB | custlake s | rows/s | MB/s | DuckDB s | rows/s | MB/s | ratio | custlake peak MiB | DuckDB peak MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, kind, n, size, med, mem in rows_out:
        c, d = med["custlake"], med["duckdb"]
        print(f"| {name} | {kind} | {n} | {size/1e6:.1f} | {c:.2f} | {n/c:,.0f} | {size/1e6/c:.1f} | {d:.2f} | {n/d:,.0f} | "
              f"{size/1e6/d:.1f} | {c/d:.2f} | {mem['custlake']:.0f} | {mem['duckdb']:.0f} |")
    print(f"\nTotal: custlake {total['custlake']:.1f}s, DuckDB {total['duckdb']:.1f}s, ratio {total['custlake']/total['duckdb']:.2f}")
    if not args.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

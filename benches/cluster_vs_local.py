#!/usr/bin/env python3
"""Each analytics shape on the local engine and on a Ballista cluster.

Starts one scheduler and two executors (`custlake scheduler`, `custlake
executor`, one task at a time each) on localhost over LAKE, then, for each
shape of the analytics benchmark (benches/compare_duckdb.py), runs
`custlake sql --runs N --timing` locally and with `--engine ballista`,
alternating, and reports the median of the warm runs (all but the first),
the ratio cluster/local, and how the cluster split the work: stages, tasks,
rows and bytes shuffled (from the scheduler's metrics of the job, logged by
the server side at info). The two answers must agree (row count and a
checksum of the sorted rows); a shape whose answers differ is FAILED.

    python3 benches/cluster_vs_local.py --lake /path/to/lake \\
        --bin target/release/custlake --runs 4

On one machine the cluster cannot be faster: the figure is its overhead
(planning here, job scheduling, shuffle files and Flight transfers between
processes).
"""
import argparse
import datetime as dt
import hashlib
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_duckdb import analytics  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


# Settings every custlake process of the run gets (--memory-limit-mb).
SETTINGS = {}


def env_without_config(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTLAKE")}
    env.update(SETTINGS)
    env.update(extra or {})
    return env


def start_cluster(binary, lake, work):
    port = free_port()
    procs = []
    log = open(os.path.join(work, "scheduler.log"), "w")
    procs.append(subprocess.Popen([binary, "--quiet", "--lake", lake, "scheduler", "--bind", f"127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=log, env=env_without_config()))
    wait_port(port)
    for i in (1, 2):
        flight, grpc = free_port(), free_port()
        wd = os.path.join(work, f"executor{i}")
        os.makedirs(wd, exist_ok=True)
        log = open(os.path.join(work, f"executor{i}.log"), "w")
        procs.append(subprocess.Popen(
            [binary, "--quiet", "--lake", lake, "executor", "--scheduler", f"127.0.0.1:{port}",
             "--bind", f"127.0.0.1:{flight}", "--grpc-port", str(grpc), "--work-dir", wd,
             "--concurrent-tasks", "1"],
            stdout=subprocess.DEVNULL, stderr=log, env=env_without_config()))
        wait_port(flight)
    return f"127.0.0.1:{port}", procs


SPLIT = re.compile(r"cluster job finished .*?stages=(\d+) tasks=(\d+) shuffled_rows=(\d+) shuffled_bytes=(\d+)")


def run(binary, lake, sql, runs, scheduler=None):
    args = [binary, "--quiet", "--lake", lake, "sql", "--format", "csv", "--runs", str(runs), "--timing"]
    if scheduler:
        args += ["--engine", "ballista", "--scheduler", scheduler]
    out = subprocess.run(args + [sql], capture_output=True, text=True,
                         env=env_without_config({"CUSTLAKE_LOG": "warn,custlake::query::cluster=info"}))
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-2000:])
    times = [json.loads(line)["ms"] for line in out.stderr.splitlines() if line.startswith('{"') and '"run"' in line]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out.stderr)
    splits = [tuple(int(x) for x in m.groups()) for m in SPLIT.finditer(plain)]
    rows = out.stdout.splitlines()
    body = sorted(rows[1:])
    digest = hashlib.sha256("\n".join(body).encode()).hexdigest()[:16]
    return times, splits[-1] if splits else None, (len(body), digest)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", required=True)
    ap.add_argument("--bin", default="target/release/custlake")
    ap.add_argument("--runs", type=int, default=4, help="runs per engine and round (the first is a warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    ap.add_argument("--as-of", default="2026-06-30")
    ap.add_argument("--memory-limit-mb", type=int,
                    help="query.memory_limit_mb of every process (it bounds the local engine; executors do not take it)")
    a = ap.parse_args()
    if a.memory_limit_mb:
        SETTINGS["CUSTLAKE__QUERY__MEMORY_LIMIT_MB"] = str(a.memory_limit_mb)
    binary = os.path.abspath(a.bin)
    lake = os.path.abspath(a.lake)
    as_of = dt.date.fromisoformat(a.as_of)
    work = tempfile.mkdtemp(prefix="custlake-cluster-bench-")
    scheduler, procs = start_cluster(binary, lake, work)
    results = []
    try:
        for name, sql, _ordered in analytics(as_of):
            local, remote, split, answers, failed = [], [], None, set(), None
            for _ in range(a.rounds):
                for engine in ("local", "cluster"):
                    try:
                        t, s, ans = run(binary, lake, sql, a.runs, scheduler if engine == "cluster" else None)
                    except RuntimeError as e:
                        failed = f"{engine}: {e}"
                        break
                    (local if engine == "local" else remote).extend(t[1:])
                    answers.add(ans)
                    split = s or split
                if failed:
                    break
            if failed or len(answers) != 1:
                results.append((name, None, None, None, failed or f"answers differ: {answers}"))
                print(f"{name}: FAILED {failed or answers}", flush=True)
                continue
            lm, cm = statistics.median(local), statistics.median(remote)
            results.append((name, lm, cm, split, next(iter(answers))))
            print(f"{name}: local {lm:.0f} ms, cluster {cm:.0f} ms ({cm / lm:.2f}x), split {split}", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    print()
    print("| shape | local ms | cluster ms | cluster/local | stages | tasks | rows shuffled | MB shuffled | answer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    ratios = []
    for name, lm, cm, split, ans in results:
        if lm is None:
            print(f"| {name} | | | FAILED | | | | | {ans} |")
            continue
        ratios.append(cm / lm)
        st, tk, rows, by = split or (0, 0, 0, 0)
        print(f"| {name} | {lm:.0f} | {cm:.0f} | {cm / lm:.2f} | {st} | {tk} | {rows:,} | {by / 1e6:.1f} | "
              f"{ans[0]} rows, {ans[1]} |")
    if ratios:
        g = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"\ngeometric mean cluster/local: {g:.2f}x over {len(ratios)} shapes")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Quality of identity resolution against the generator's ground truth.

    python3 benches/identity_quality.py --customers 100000 --work /tmp/idq \
        --bin target/release/custlake

Generates a sample insurer (unless --sample and --lake are given), ingests
it, runs `custlake resolve`, and compares the result with truth.csv
(source_system, source_id, entity_id) over the records that were loaded
(quarantined records cannot be resolved and are left out):

- precision of automatic merges: of all pairs of records put in the same
  golden customer, the share that are truly the same entity;
- recall of automatic merges plus suspect groups: of all truly-same pairs,
  the share that share a golden customer or sit in customers joined by an
  open suspect group;
- the same split by individuals and organisations.

Prints a Markdown table. Needs only the Python standard library.
"""

import argparse
import csv
import io
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def sql_csv(bin_, lake, sql):
    out = run([bin_, "--quiet", "--lake", lake, "sql", "--format", "csv", sql],
              capture_output=True, text=True).stdout
    return list(csv.DictReader(io.StringIO(out)))


def pairs(n):
    return n * (n - 1) // 2


class UF:
    def __init__(self):
        self.p = {}

    def find(self, x):
        p = self.p
        p.setdefault(x, x)
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.p[max(a, b)] = min(a, b)


def metrics(rows, uf):
    """rows: (entity, customer) per record."""
    by_customer = Counter(c for _, c in rows)
    by_pair = Counter(rows)
    by_entity = Counter(e for e, _ in rows)
    predicted = sum(pairs(n) for n in by_customer.values())
    true_pos = sum(pairs(n) for n in by_pair.values())
    truth = sum(pairs(n) for n in by_entity.values())
    # Recall with suspect groups: customers joined by a group count as one.
    review = Counter((e, uf.find(c)) for e, c in rows)
    found = sum(pairs(n) for n in review.values())
    precision = true_pos / predicted if predicted else 1.0
    recall_auto = true_pos / truth if truth else 1.0
    recall = found / truth if truth else 1.0
    return predicted, true_pos, truth, precision, recall_auto, recall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--work", default="/tmp/custlake-identity")
    ap.add_argument("--bin", default="target/release/custlake")
    ap.add_argument("--sample", help="an existing sample directory (with truth.csv)")
    ap.add_argument("--lake", help="an existing lake holding that sample, already resolved")
    a = ap.parse_args()

    sample = a.sample or os.path.join(a.work, f"sample-{a.customers}")
    lake = a.lake or os.path.join(a.work, f"lake-{a.customers}")
    if not a.lake:
        if not os.path.exists(os.path.join(sample, "truth.csv")):
            run([a.bin, "--quiet", "generate", "--customers", str(a.customers), "--seed", str(a.seed),
                 "--out", sample, "--as-of", "2026-11-01"])
        if os.path.exists(lake):
            sys.exit(f"{lake} exists: remove it or pass it with --lake")
        run([a.bin, "--quiet", "--lake", lake, "ingest", "--from", sample])
        t = time.time()
        run([a.bin, "--quiet", "--lake", lake, "resolve"])
        print(f"resolve: {time.time() - t:.1f} s", file=sys.stderr)

    truth = {}
    with open(os.path.join(sample, "truth.csv"), newline="") as f:
        for r in csv.DictReader(f):
            truth[(r["source_system"], r["source_id"])] = r["entity_id"]
    links = sql_csv(a.bin, lake,
                    "SELECT x.source_system, x.source_id, x.customer_id, s.customer_type "
                    "FROM customer_xref x JOIN source_customer s "
                    "ON x.source_system = s.source_system AND x.source_id = s.source_id")
    groups = sql_csv(a.bin, lake, "SELECT group_id, customer_id FROM suspect_group WHERE status = 'open'")
    uf = UF()
    first = {}
    for g in groups:
        c = g["customer_id"]
        if g["group_id"] in first:
            uf.union(first[g["group_id"]], c)
        else:
            first[g["group_id"]] = c

    kinds = defaultdict(list)
    missing = 0
    for r in links:
        e = truth.get((r["source_system"], r["source_id"]))
        if e is None:
            missing += 1
            continue
        kind = "individual" if r["customer_type"] == "individual" else "organisation"
        kinds[kind].append((e, r["customer_id"]))
        kinds["all"].append((e, r["customer_id"]))
    if missing:
        print(f"warning: {missing} resolved records are not in truth.csv", file=sys.stderr)

    print(f"\nIdentity resolution vs ground truth, {a.customers:,} customers "
          f"({len(links):,} source records loaded, {len(set(truth.values())):,} true entities, "
          f"{len(first):,} open suspect groups)\n")
    print("| records | pairs merged | of which true | true pairs | precision (auto) | recall (auto) | recall (auto + suspects) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in ("all", "individual", "organisation"):
        p, tp, t, prec, rec_a, rec = metrics(kinds[kind], uf)
        print(f"| {kind} | {p:,} | {tp:,} | {t:,} | {prec:.4f} | {rec_a:.4f} | {rec:.4f} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Data quality: a full custlake quality run vs DuckDB on the same Parquet files.

Side by side in one run, on a lake that holds a loaded and resolved sample
insurer (e.g. 1 million customers):

  custlake  `custlake quality run --full`: every rule of every dimension
            (completeness, validity, uniqueness, consistency, timeliness,
            accuracy) on every record of the checked tables, per source
            system and owning team, record scores, every failing record field
            written to quality_issue (work orders carried and closed), the
            metrics written to quality_metric.
  DuckDB    the completeness, validity and uniqueness metrics of the same
            tables, per source system and owning team, from the same Parquet
            files (the current files of each table's Delta log, read with the
            `deltalake` package), generated here from schemas/*.toml:
            completeness of every required field (per customer type), validity
            of every field with a validator or code set (code IN lists, regular
            expressions, the resident-id and USCC check digits as macros),
            duplicated keys. Nothing is written.

DuckDB computes half of the dimensions and writes nothing, so the ratio
custlake / DuckDB overstates what the same work costs custlake; the note
says so. Both run with the same number of threads.

    python3 benches/quality_vs_duckdb.py --lake /path/to/lake --bin target/release/custlake [--runs 3]

Each engine runs once per round, alternating; the medians are compared.

Needs `pip install duckdb deltalake`.
"""
import argparse
import json
import os
import sys
import tempfile
import tomllib

from measure import run_measured

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMAS = os.path.join(HERE, "..", "schemas")

# [quality.tables] of the shipped config: (source expression, team
# expression, whether facts join their source customer, row filter).
TABLES = {
    "source_customer": ("t.source_system", "t.owning_team", False, None),
    "customer": ("'golden'", "t.owning_team", False, "t.status = 'active'"),
    "policy": ("t.source_system", "t.owning_team", False, None),
    "claim": ("t.source_system", "s.owning_team", True, None),
    "payment": ("t.source_system", "s.owning_team", True, None),
    "interaction": ("t.source_system", "s.owning_team", True, None),
    "consent": ("t.source_system", "s.owning_team", True, None),
}

MACROS = r"""
CREATE MACRO filled(v) AS v IS NOT NULL AND trim(CAST(v AS VARCHAR)) <> '';
CREATE MACRO rid_ok(s) AS regexp_full_match(s, '[0-9]{17}[0-9X]')
  AND substr('10X98765432', CAST(list_sum(list_transform(range(17),
        lambda i: coalesce(TRY_CAST(substr(s, i + 1, 1) AS INTEGER), 0)
             * [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2][i + 1])) % 11 AS BIGINT) + 1, 1) = substr(s, 18, 1)
  AND try_strptime(substr(s, 7, 8), '%Y%m%d') IS NOT NULL;
CREATE MACRO uscc_ok(s) AS regexp_full_match(s, '[0-9A-HJ-NPQRTUWXY]{18}')
  AND substr('0123456789ABCDEFGHJKLMNPQRTUWXY', CAST((31 - list_sum(list_transform(range(17),
        lambda i: (instr('0123456789ABCDEFGHJKLMNPQRTUWXY', substr(s, i + 1, 1)) - 1)
             * [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28][i + 1])) % 31) % 31 AS BIGINT) + 1, 1)
      = substr(s, 18, 1);
CREATE MACRO person_ok(s) AS regexp_full_match(s, '[\p{Han}·]{2,20}|[A-Za-z][A-Za-z .''-]{1,59}');
CREATE MACRO company_ok(s) AS length(s) BETWEEN 4 AND 100 AND regexp_matches(s, '\p{Han}|[A-Za-z]{2}');
"""


def validity(field, validator, codes):
    """A DuckDB condition: the filled value of `field` passes."""
    v = f"t.{field}"
    text = f"CAST({v} AS VARCHAR)"
    if validator == "code":
        return f"{text} IN ({', '.join(repr(c) for c in codes)})"
    return {
        "non_negative": f"{v} >= 0",
        "uscc": f"uscc_ok({text})",
        "phone": f"regexp_full_match({text}, '\\+86(1[3-9][0-9]{{9}}|(10|2[0-9])[0-9]{{8}}|[3-9][0-9]{{9,10}})')",
        "email": f"regexp_full_match({text}, '[^@\\s]+@[^@\\s]+\\.[^@\\s]+')",
        "tax_id": f"regexp_full_match({text}, '[0-9A-Z]{{15}}|[0-9A-Z]{{18}}|[0-9A-Z]{{20}}')",
        "person_name": f"person_ok({text})",
        "company_name": f"company_ok({text})",
        "customer_name": f"CASE WHEN t.customer_type = 'individual' THEN person_ok({text}) ELSE company_ok({text}) END",
        "address": f"length({text}) >= 6",
        "id_number": f"CASE t.id_type WHEN 'resident_id' THEN rid_ok({text}) WHEN 'uscc' THEN uscc_ok({text}) "
        f"ELSE regexp_full_match({text}, '[0-9A-Za-z]{{5,20}}') END",
    }[validator]


def table_sql(name, decl, codes, present):
    source, team, joins, where = TABLES[name]
    metrics = []
    for f in decl["field"]:
        if f.get("system") or f["name"] not in present:
            continue
        col = f"t.{f['name']}"
        req = f.get("required")
        if req:
            applies = "TRUE" if req is True else f"t.customer_type IN ({', '.join(repr(x) for x in req)})"
            metrics.append(f"sum(CASE WHEN {applies} THEN 1 ELSE 0 END) AS \"c|{f['name']}\"")
            metrics.append(f"sum(CASE WHEN {applies} AND filled({col}) THEN 1 ELSE 0 END) AS \"p|{f['name']}\"")
        validator = f.get("validator")
        if validator:
            cond = validity(f["name"], validator, codes.get(f.get("codes"), []))
            metrics.append(f"sum(CASE WHEN filled({col}) THEN 1 ELSE 0 END) AS \"vc|{f['name']}\"")
            metrics.append(f"sum(CASE WHEN filled({col}) AND ({cond}) THEN 1 ELSE 0 END) AS \"vp|{f['name']}\"")
    key = ", ".join(decl["key"])
    join = (
        " LEFT JOIN source_customer s ON s.source_key = t.source_key"
        if joins
        else ""
    )
    filt = f" WHERE {where}" if where else ""
    return (
        f"WITH t AS (SELECT *, count(*) OVER (PARTITION BY {key}) > 1 AS _dup FROM {name}) "
        f"SELECT {source} AS source_system, {team} AS owning_team, count(*) AS rows, "
        f"sum(CASE WHEN t._dup THEN 0 ELSE 1 END) AS unique_keys, {', '.join(metrics)} "
        f"FROM t{join}{filt} GROUP BY 1, 2"
    )


DUCK = r"""
import duckdb, json, sys, time
spec = json.load(open(sys.argv[1]))
con = duckdb.connect()
con.execute(f"SET threads = {spec['threads']}")
for m in spec["macros"]:
    con.execute(m)
for name, files in spec["files"].items():
    listed = ", ".join(repr(f) for f in files)
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listed}], union_by_name = true)")
out = {}
for name, sql in spec["queries"].items():
    started = time.time()
    cur = con.execute(sql)
    rows = cur.fetchall()
    cols = [d[0] for d in cur.description]
    totals = {}
    for c, i in zip(cols, range(len(cols))):
        if "|" in c:
            totals[c] = sum(r[i] or 0 for r in rows)
    out[name] = {"groups": len(rows), "seconds": time.time() - started, "totals": totals}
json.dump(out, open(sys.argv[2], "w"))
"""


def delta_files(lake, table):
    from deltalake import DeltaTable

    out = []
    for tier in ("hot", "warm", "cold"):
        path = os.path.join(lake, tier, table)
        if os.path.isdir(os.path.join(path, "_delta_log")):
            out += [u.replace("file://", "") for u in DeltaTable(path).file_uris()]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", required=True, help="a lake holding a loaded, resolved sample insurer")
    ap.add_argument("--bin", default="target/release/custlake")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--as-of", default="2026-06-30")
    ap.add_argument("--skip-custlake", action="store_true")
    ap.add_argument("--runs", type=int, default=3, help="rounds, each engine once per round, alternating (default 3)")
    args = ap.parse_args()

    codes = tomllib.load(open(os.path.join(SCHEMAS, "codes.toml"), "rb"))
    files, queries = {}, {}
    import pyarrow.parquet as pq

    for name in TABLES:
        decl = tomllib.load(open(os.path.join(SCHEMAS, f"{name}.toml"), "rb"))
        files[name] = delta_files(args.lake, name)
        if not files[name]:
            sys.exit(f"{args.lake} holds no {name} table: load and resolve a sample first")
        present = set(pq.read_schema(files[name][0]).names)
        queries[name] = table_sql(name, decl, codes, present)

    work = tempfile.mkdtemp()
    spec = os.path.join(work, "spec.json")
    json.dump(
        {"threads": args.threads, "macros": [m for m in MACROS.split(";\n") if m.strip()], "files": files, "queries": queries},
        open(spec, "w"),
    )
    script = os.path.join(work, "duck.py")
    open(script, "w").write(DUCK)

    # The engines alternate, one run each per round; each reports its
    # median (this machine's neighbours make single runs noisy).
    env = dict(os.environ, CUSTLAKE__QUERY__TARGET_PARTITIONS=str(args.threads))
    cmd = [args.bin, "--quiet", "--lake", args.lake, "quality", "run", "--full", "--as-of", args.as_of, "--json"]
    result = os.path.join(work, "duck.json")
    ours, theirs = [], []
    summary, per_table = {}, {}
    for round_ in range(args.runs):
        if not args.skip_custlake:
            secs, peak, out, _ = run_measured(cmd, env)
            summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            ours.append((secs, peak))
            print(f"round {round_ + 1}: custlake {secs:.1f} s, peak {peak:.0f} MiB; {summary.get('open', '?')} failing record fields", flush=True)
        secs, peak, _, _ = run_measured([sys.executable, script, spec, result], None)
        per_table = json.load(open(result))
        theirs.append((secs, peak))
        print(f"round {round_ + 1}: DuckDB   {secs:.1f} s, peak {peak:.0f} MiB", flush=True)

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    print()
    if ours:
        print(f"custlake: median {median([s for s, _ in ours]):.1f} s of {len(ours)} runs "
              f"({', '.join(f'{s:.1f}' for s, _ in ours)}), peak {max(p for _, p in ours):.0f} MiB")
    print(f"DuckDB:   median {median([s for s, _ in theirs]):.1f} s of {len(theirs)} runs "
          f"({', '.join(f'{s:.1f}' for s, _ in theirs)}), peak {max(p for _, p in theirs):.0f} MiB")
    print("DuckDB per table (last run):")
    for name, r in per_table.items():
        print(f"  {name:<16} {r['seconds']:6.2f} s  {r['groups']} source x team groups")
    if ours:
        ratio = median([s for s, _ in ours]) / median([s for s, _ in theirs])
        print(f"\nratio of the medians custlake / DuckDB: {ratio:.2f} (target at most 1.0)")
    compare(args.lake, per_table)


def compare(lake, per_table):
    """The same metrics from custlake's latest run (quality_metric), summed
    over sources and teams: checked and passed per table, field and rule,
    beside DuckDB's. custlake also counts quarantined rows (they failed
    completeness or validity on the way in), DuckDB sees only the lake."""
    import duckdb

    files = delta_files(lake, "quality_metric")
    if not files:
        return
    con = duckdb.connect()
    listed = ", ".join(repr(f) for f in files)
    ours = con.execute(
        f"""WITH m AS (SELECT * FROM read_parquet([{listed}], union_by_name = true)),
                 latest AS (SELECT run_id FROM m ORDER BY run_at DESC LIMIT 1)
            SELECT table_name, field, rule, sum(checked), sum(passed) FROM m
            WHERE run_id IN (SELECT run_id FROM latest) AND rule IN ('complete', 'valid')
            GROUP BY ALL"""
    ).fetchall()
    ours = {(t, f, r): (c, p) for t, f, r, c, p in ours}
    same = differ = quarantined = 0
    shown = []
    for table, r in per_table.items():
        for col, n in r["totals"].items():
            kind, field = col.split("|")
            if kind not in ("c", "vc"):
                continue
            rule = "complete" if kind == "c" else "valid"
            passed = r["totals"][("p|" if kind == "c" else "vp|") + field]
            mine = ours.get((table, field, rule))
            if mine is None:
                continue
            if (int(mine[0]), int(mine[1])) == (n, passed):
                same += 1
            elif int(mine[1]) == passed and int(mine[0]) > n:
                quarantined += 1
            else:
                differ += 1
                shown.append(f"  {table}.{field} {rule}: custlake {int(mine[1])}/{int(mine[0])}, DuckDB {passed}/{n}")
    print(
        f"\nsame metrics: {same} field rules agree exactly; {quarantined} pass the same records and "
        f"custlake also counts the quarantined rows as checked; {differ} differ"
    )
    for line in shown[:40]:
        print(line)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""custlake and DuckDB side by side, on the same data, with the same answers.

For each scale (customers) this:
  1. generates a sample insurer (`custlake generate`) and
  2. times each workload in custlake and in DuckDB, alternating the two
     engines, a warm-up and then several runs each, with the same thread count:
       ingest      `custlake ingest --from` (map, validate, quarantine, upsert
                   into Delta) | DuckDB reading every extract and writing it to
                   Parquet (no validation)
       resolve     `custlake resolve` (rules, blocking, scoring, stable ids,
                   golden records, suspects, Delta writes) | DuckDB SQL forming
                   the clusters of the automatic rules (same valid resident id
                   and name; same valid USCC) and writing them to Parquet
       lookups and analytics: plain SQL over the lake's tables, in custlake
                   in-process (`custlake sql --runs 2 --timing`: the second,
                   warm run is timed) and through the HTTP API (`POST /v1/query`
                   or the named query, Arrow IPC reply, timed at the client),
                   and in DuckDB over exactly the Parquet files of the current
                   Delta table versions (one view per table);
  3. checks that the engines agree (row count and a checksum of the canonical
     rows) — a workload whose answers differ is reported as FAILED, not timed;
  4. prints and writes benches/RESULTS.md: median times, ratio custlake/DuckDB,
     peak memory (max RSS of the process that ran it), and the geometric mean
     of the ratios, with the machine, versions and scale.

    python3 benches/compare_duckdb.py --customers 100000 1000000 \\
        --bin target/release/custlake --work /tmp/custlake-bench

Needs `pip install duckdb deltalake pyarrow`.
"""
import argparse
import datetime as dt
import decimal
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import duckdb
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from measure import TIME, run_measured

HERE = os.path.dirname(os.path.abspath(__file__))

EXTRACTS = [
    ("core/customers.csv", "csv-gbk"),
    ("core/policies.csv", "csv-gbk"),
    ("claims/claimants.jsonl", "jsonl"),
    ("claims/claims.jsonl", "jsonl"),
    ("telesales/leads.csv", "csv"),
    ("telesales/calls.csv", "csv"),
    ("telesales/consents.csv", "csv"),
    ("finance/payers.parquet", "parquet"),
    ("finance/payments.parquet", "parquet"),
    ("telesales/agents.csv", "csv"),
    ("registry/business_registry.csv", "csv"),
]

# The domain validators as DuckDB macros, mirroring src/domain (the answers
# of the data-quality workload are compared, so they must agree exactly).
DUCK_MACROS = r"""
CREATE MACRO rid_s(x) AS upper(replace(trim(x), ' ', ''));
CREATE MACRO rid_body(s) AS CASE
    WHEN length(s) = 18 AND regexp_full_match(substr(s, 1, 17), '[0-9]{17}') THEN substr(s, 1, 17)
    WHEN length(s) = 15 AND regexp_full_match(s, '[0-9]{15}') THEN substr(s, 1, 6) || '19' || substr(s, 7)
END;
CREATE MACRO rid_check(b) AS substr('10X98765432', (list_sum(list_transform(range(17),
    lambda i: (ascii(substr(b, i + 1, 1)) - 48) * [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2][i + 1])) % 11)::INT + 1, 1);
CREATE MACRO rid_birth(b) AS try_strptime(substr(b, 7, 8), '%Y%m%d')::DATE;
CREATE MACRO rid_ok(s, b) AS b IS NOT NULL
    AND list_contains([11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45,
                       46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82], substr(b, 1, 2)::INT)
    AND coalesce(rid_birth(b) <= current_date AND year(rid_birth(b)) >= 1900, false)
    AND (length(s) = 15 OR substr(s, 18, 1) = rid_check(b));
CREATE MACRO is_valid_resident_id(x) AS rid_ok(rid_s(x), rid_body(rid_s(x)));
CREATE MACRO uscc_s(x) AS upper(regexp_replace(x, '\s', '', 'g'));
CREATE MACRO uscc_v(s) AS list_transform(range(18), lambda i: instr('0123456789ABCDEFGHJKLMNPQRTUWXY', substr(s, i + 1, 1)) - 1);
CREATE MACRO uscc_ok(s, v) AS length(s) = 18 AND list_min(v) >= 0
    AND v[18] = (31 - list_sum(list_transform(range(17),
        lambda i: v[i + 1] * [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28][i + 1])) % 31) % 31;
CREATE MACRO is_valid_uscc(x) AS uscc_ok(uscc_s(x), uscc_v(uscc_s(x)));
"""

# custlake's `named_struct` (as score.sql uses it: the fields `day` and
# `breaks_after`) and `last_run_start(days)` as DuckDB macros. The sorted
# list is bound once (the one-element list_transform) rather than sorted
# again for every element: written so, DuckDB runs score.sql as fast as the
# same rule written with `lag` over every key day (6.8-7.0 s against
# 6.9-7.1 s at a million customers, 2026-12-07).
DUCK_SCORE_MACROS = r"""
CREATE MACRO named_struct(k1, v1, k2, v2) AS struct_pack(day := v1, breaks_after := v2);
CREATE MACRO last_run_start(xs) AS list_transform([list_sort(list_filter(xs, lambda x: x.day IS NOT NULL))],
  lambda s: list_max(list_transform(list_filter(range(1, len(s) + 1),
    lambda i: i = 1 OR s[i - 1].day <= s[i].breaks_after), lambda i: s[i].day)))[1];
"""


def months_before(as_of, months):
    y, m = as_of.year, as_of.month - months
    while m <= 0:
        y, m = y - 1, m + 12
    return f"{y:04d}-{m:02d}"


def golden(fact, alias):
    """A fact joined to the golden customer id of its source customer (on the
    source record's integer key, which ingest and resolve store in both)."""
    return f"{fact} {alias} JOIN customer_xref x{alias} ON x{alias}.source_key = {alias}.source_key"


def analytics(as_of):
    """(name, sql, ordered) of the analytics shapes, as plain SQL both engines run."""
    three_years = months_before(as_of, 36)
    two_years = months_before(as_of, 24)
    horizon = as_of + dt.timedelta(days=30)
    fields = ["customer_type", "name", "gender", "birth_date", "id_type", "id_number", "uscc", "tax_id",
              "legal_rep", "phone", "email", "address", "industry", "channel", "owning_team", "region",
              "agent_id", "registered_at", "updated_at"]
    nulls = ",\n       ".join(f"count(*) - count({f}) AS {f}_null" for f in fields)
    return [
        ("counts by type × province × product line", f"""
SELECT c.customer_type, c.province, p.product_line,
       count(DISTINCT c.customer_id) AS customers, count(*) AS policies, sum(p.premium) AS premium
FROM {golden('policy', 'p')} JOIN customer c ON c.customer_id = xp.customer_id
WHERE c.status = 'active'
GROUP BY c.customer_type, c.province, p.product_line""", False),
        ("premium per golden customer, 3 years, top 100", f"""
SELECT xp.customer_id,
       sum(CASE WHEN p.payment_type = 'premium' THEN p.amount ELSE -p.amount END) AS net_premium,
       count(*) AS payments
FROM {golden('payment', 'p')}
WHERE p.paid_month >= '{three_years}'
GROUP BY xp.customer_id
ORDER BY net_premium DESC, xp.customer_id
LIMIT 100""", True),
        ("no policy, payment or interaction in 24 months", f"""
WITH recent AS (
    SELECT source_key FROM policy WHERE effective_month >= '{two_years}'
    UNION ALL SELECT source_key FROM payment WHERE paid_month >= '{two_years}'
    UNION ALL SELECT source_key FROM interaction WHERE event_month >= '{two_years}'
), active AS (
    SELECT DISTINCT x.customer_id FROM recent r
    JOIN customer_xref x ON x.source_key = r.source_key
)
SELECT c.customer_id, c.customer_type, c.name, c.phone, c.email
FROM customer c LEFT JOIN active a ON a.customer_id = c.customer_id
WHERE a.customer_id IS NULL AND c.status = 'active'""", False),
        ("policies expiring in 30 days with contacts, first 1000", f"""
SELECT p.policy_no, p.product_line, p.expiry_date, p.premium,
       c.customer_id, c.name, c.phone, c.email, c.address
FROM {golden('policy', 'p')} JOIN customer c ON c.customer_id = xp.customer_id
WHERE p.status = 'active' AND p.expiry_date >= DATE '{as_of}' AND p.expiry_date < DATE '{horizon}'
ORDER BY p.expiry_date, p.policy_no
LIMIT 1000""", True),
        ("null and validity counts of source_customer", f"""
SELECT source_system, count(*) AS records,
       {nulls},
       sum(CASE WHEN id_type = 'resident_id' AND NOT is_valid_resident_id(id_number) THEN 1 ELSE 0 END) AS id_number_invalid,
       sum(CASE WHEN uscc IS NOT NULL AND NOT is_valid_uscc(uscc) THEN 1 ELSE 0 END) AS uscc_invalid,
       sum(CASE WHEN phone IS NOT NULL AND NOT phone ~ '^\\+86[0-9]{{10,12}}$' THEN 1 ELSE 0 END) AS phone_invalid,
       sum(CASE WHEN email IS NOT NULL AND NOT email ~ '^[^@ ]+@[^@ ]+\\.[^@ ]+$' THEN 1 ELSE 0 END) AS email_invalid
FROM source_customer
GROUP BY source_system""", False),
    ]


LOOKUP_COLS = ("source_system, source_id, customer_type, name, gender, birth_date, id_type, id_number, "
               "uscc, phone, email, address, owning_team, region, agent_id, registered_at, updated_at")


def lookup_by_id(system, source_id):
    return f"SELECT {LOOKUP_COLS} FROM source_customer WHERE source_system = '{system}' AND source_id = '{source_id}'"


def lookup_by_phone(phone):
    return (f"SELECT source_system, source_id, customer_type, name, phone, email, address FROM source_customer "
            f"WHERE phone = '{phone}' ORDER BY source_system, source_id")


# ------------------------------------------------------------------ analytics rules

SQL_DIR = os.path.join(HERE, "..", "sql")


def sql_body(rel):
    """The SQL of a file of sql/ without its header and comment lines."""
    with open(os.path.join(SQL_DIR, rel), encoding="utf-8") as f:
        return "\n".join(l for l in f.read().splitlines() if not l.strip().startswith("--")).strip()


def bind(sql, params):
    """Parameters as SQL literals (the longest names first: $r_lapsed before $r)."""
    for k in sorted(params, key=len, reverse=True):
        sql = sql.replace("$" + k, params[k])
    return sql


def shipped_analytics():
    """[analytics] of the shipped config: the rules' numbers and the cross-sell pairs."""
    import tomllib
    with open(os.path.join(HERE, "..", "src", "config", "default.toml"), "rb") as f:
        return tomllib.load(f)["analytics"]


def score_sql(as_of):
    a = shipped_analytics()
    params = {k: repr(float(v)) for k, v in a["params"].items()}
    params["grace_days"] = str(int(a["params"]["grace_days"]))
    params["as_of"] = f"DATE '{as_of}'"
    # All customers in one statement (custlake's passes are for a book
    # larger than its query memory). A whole run reads the pass tables as
    # views it never reads, as custlake does (their branches are `NOT true`).
    params.update({"whole": "true", "from_id": "'-'", "to_id": "'-'"})
    body = sql_body("analytics/score.sql")
    assert body.startswith("WITH")
    passes = "".join(f"{name} AS ({bind(sql_body(f'analytics/{name}.sql'), params)}),\n"
                     for name in ("pass_xref", "pass_policies"))
    return bind("WITH " + passes + body[len("WITH"):], params)


def list_sql(kind, as_of):
    """A list's lines as `custlake list` computes them, as one statement."""
    a = shipped_analytics()
    d = f"DATE '{as_of}'"
    pairs = ", ".join(f"('{p['has']}', '{p['lacks']}')" for p in a["cross_sell"])
    params = {"as_of": d, "within_days": "30", "product_line": "'*'", "team": "'*'", "region": "'*'",
              "churn_threshold": repr(float(a["churn_threshold"]))}
    assign = sql_body("analytics/assign.sql")
    assert assign.startswith("WITH")
    return (f"WITH scores AS (SELECT * FROM customer_score WHERE as_of = "
            f"(SELECT max(as_of) FROM customer_score WHERE as_of <= {d})),\n"
            f"cross_sell_pairs AS (SELECT * FROM (VALUES {pairs}) t(has, lacks)),\n"
            f"in_force AS ({bind(sql_body('analytics/in_force.sql'), params)}),\n"
            f"reachable AS ({bind(sql_body('analytics/reachable.sql'), params)}),\n"
            f"candidates AS ({bind(sql_body(f'analytics/{kind}.sql'), params)}),\n" + assign[len("WITH"):])


# The tables the lookups and analytics shapes read, as DuckDB views.
QUERY_TABLES = ["source_customer", "customer", "customer_xref", "policy", "payment", "interaction", "claim",
                "consent"]

# Tables a lake may not hold yet, empty in DuckDB as in custlake.
DUCK_EMPTY = {
    "lifecycle_event": "CREATE TABLE lifecycle_event (event_id VARCHAR, customer_id VARCHAR, action VARCHAR, "
                       "effective_date DATE, reason VARCHAR, actor VARCHAR, decided_at TIMESTAMPTZ)",
    "agent": "CREATE TABLE agent (agent_id VARCHAR, name VARCHAR, team VARCHAR, capacity BIGINT, active BOOLEAN, "
             "updated_at TIMESTAMPTZ, batch_id VARCHAR, ingested_at TIMESTAMPTZ)",
}

SCORE_COLS = ("customer_id, as_of, customer_type, lifecycle_stage, stage_since, value_score, value_tier, "
              "churn_risk, segment, product_lines, premium_3y, active_policies")


# ------------------------------------------------------------------ answers

def canon(v):
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, decimal.Decimal):
        # DuckDB sums integers into HUGEINT, which arrives as decimal(38, 0).
        if v.as_tuple().exponent >= 0:
            return str(int(v))
        return format(v.quantize(decimal.Decimal("0.01")), "f")
    if isinstance(v, float):
        return f"{v:.9g}"
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v.isoformat(" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    return str(v)


def answer(table, ordered):
    """(rows, checksum) of a pyarrow table: columns by position, values in a
    canonical text form; rows in order if the query orders them, else sorted."""
    cols = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = ["\x1f".join(canon(c[r]) for c in cols) for r in range(table.num_rows)]
    if not ordered:
        rows.sort()
    h = hashlib.sha256()
    for r in rows:
        h.update(r.encode())
        h.update(b"\n")
    return table.num_rows, h.hexdigest()[:16]


# ------------------------------------------------------------------ processes

DUCK_WORKER = r"""
import json, sys, time
import duckdb
spec = json.load(open(sys.argv[1]))
con = duckdb.connect()
con.execute(f"SET threads = {spec['threads']}")
con.execute("SET TimeZone = 'UTC'")
con.execute("SET enable_progress_bar = false")
for stmt in spec["setup"]:
    con.execute(stmt)
times = []
for _ in range(spec["runs"]):
    t = time.perf_counter()
    if spec.get("statement"):
        con.execute(spec["sql"])
        result = None
    else:
        result = con.sql(spec["sql"]).to_arrow_table()
    times.append((time.perf_counter() - t) * 1e3)
if result is not None and spec.get("output"):
    import pyarrow.parquet as pq
    pq.write_table(result, spec["output"])
print(json.dumps({"ms": times}))
"""


def duck_views(lake, tables):
    """CREATE VIEW statements over exactly the files of each table's current Delta version."""
    stmts = []
    for t in tables:
        path = os.path.join(lake, "hot", t)
        if not os.path.isdir(os.path.join(path, "_delta_log")):
            continue
        dtab = DeltaTable(path)
        files = dtab.file_uris()
        parts = dtab.metadata().partition_columns
        if not files:
            continue
        listing = "[" + ", ".join("'" + f.replace("file://", "").replace("'", "''") + "'" for f in files) + "]"
        opts = ""
        if parts:
            types = ", ".join(f"'{p}': VARCHAR" for p in parts)
            opts = f", hive_partitioning = true, hive_types = {{{types}}}"
        stmts.append(f"CREATE VIEW {t} AS SELECT * FROM read_parquet({listing}{opts})")
    return stmts


def duck(spec, work):
    path = os.path.join(work, "duck-spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    _, rss, out, _ = run_measured([sys.executable, "-c", DUCK_WORKER, path])
    return json.loads(out.decode().strip().splitlines()[-1])["ms"], rss


class Server:
    """`custlake serve` on a free port, for the HTTP runs."""

    def __init__(self, binary, lake, env):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        # An admin token (every route but the health checks needs one).
        made = subprocess.run([binary, "--quiet", "--lake", lake, "token", "create", "--user", "bench",
                               "--role", "admin"], env=env, check=True, capture_output=True)
        self.auth = {"Authorization": "Bearer " + made.stdout.decode().strip().splitlines()[-1]}
        # No scheduled jobs: a tier move caught up at start would share the
        # cores with the runs being timed.
        self.proc = subprocess.Popen([binary, "--quiet", "--lake", lake, "serve", "--bind", f"127.0.0.1:{port}"],
                                     env=dict(env, CUSTLAKE__SCHEDULER__ENABLED="false"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(300):
            try:
                urllib.request.urlopen(self.base + "/readyz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("custlake serve did not become ready")

    def fetch(self, path, body=None):
        """(milliseconds, reply bytes) of one request, timed at the client."""
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self.auth, **({"Content-Type": "application/json"} if data else {}))
        req = urllib.request.Request(self.base + path, data=data, headers=headers)
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=600) as r:
            reply = r.read()
        return (time.perf_counter() - t) * 1e3, reply

    def peak_rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def arrow_answer(reply, ordered):
    return answer(ipc.open_stream(reply).read_all(), ordered)


def parquet_answer(path, ordered):
    return answer(pq.read_table(path), ordered)


# ------------------------------------------------------------------ workloads

class Result:
    def __init__(self, name):
        self.name = name
        self.times = {"custlake": [], "http": [], "duckdb": []}
        self.rss = {"custlake": 0.0, "duckdb": 0.0}
        self.runs = []  # per run: {engine: (rows, checksum)}
        self.rows = None
        self.failed = None

    def add(self, run, engine, ms, rss=None, ans=None):
        self.times[engine].append(ms)
        if rss is not None:
            self.rss[engine] = max(self.rss[engine], rss)
        if ans is not None:
            while len(self.runs) <= run:
                self.runs.append({})
            self.runs[run][engine] = ans

    def check(self):
        """Every engine must have given the same answer, run for run."""
        for i, answers in enumerate(self.runs):
            if len(set(answers.values())) > 1:
                self.failed = f"run {i + 1}: " + ", ".join(f"{e} {a[0]} rows/{a[1]}" for e, a in answers.items())
                return
        self.rows = sum(next(iter(a.values()))[0] for a in self.runs) // max(len(self.runs), 1)

    def median(self, engine):
        v = self.times[engine]
        return statistics.median(v) if v else None


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def bench_ingest(args, sample, work, env):
    r = Result(f"ingest (all {len(EXTRACTS)} extracts)")
    # DuckDB cannot read GBK without downloading an extension: it reads UTF-8 copies.
    duck_files = []
    for rel, kind in EXTRACTS:
        src = os.path.join(sample, rel)
        if kind == "csv-gbk":
            utf8 = src + ".utf8.csv"
            if not os.path.exists(utf8):
                with open(src, encoding="gbk") as f, open(utf8, "w", encoding="utf-8") as g:
                    shutil.copyfileobj(f, g)
            duck_files.append((utf8, "csv"))
        else:
            duck_files.append((src, kind))
    readers = {
        "csv": "read_csv('{}', header = true, all_varchar = true)",
        "jsonl": "read_json('{}', format = 'newline_delimited')",
        "parquet": "read_parquet('{}')",
    }
    out_dir = os.path.join(work, "duck-ingest")
    script = "; ".join(
        f"COPY (SELECT * FROM {readers[k].format(p)}) TO '{out_dir}/{i}.parquet' (FORMAT parquet, COMPRESSION zstd)"
        for i, (p, k) in enumerate(duck_files))
    count_sql = " + ".join(f"(SELECT count(*) FROM {readers[k].format(p)})" for p, k in duck_files)
    duck_rows = duckdb.connect().execute(f"SELECT {count_sql}").fetchall()[0][0]
    base = os.path.join(work, "lake-base")
    for i in range(args.heavy_runs):
        for engine in (["custlake", "duckdb"] if i % 2 == 0 else ["duckdb", "custlake"]):
            if engine == "custlake":
                lake = os.path.join(work, "lake-ingest")
                shutil.rmtree(lake, ignore_errors=True)
                t, rss, _, _ = run_measured([args.bin, "--quiet", "--lake", lake, "ingest", "--from", sample], env)
                _, _, out, _ = run_measured([args.bin, "--quiet", "--lake", lake, "sql",
                                             "SELECT sum(rows_read) AS rows FROM ingest_batch", "--format", "csv"], env)
                rows = int(out.decode().split()[1])
                r.add(i, "custlake", t * 1e3, rss, (rows, "rows read"))
                shutil.rmtree(base, ignore_errors=True)
                os.rename(lake, base)
            else:
                shutil.rmtree(out_dir, ignore_errors=True)
                os.makedirs(out_dir)
                t0 = time.perf_counter()
                ms, rss = duck({"threads": args.threads, "setup": [], "runs": 1, "statement": True,
                                "sql": script}, work)
                r.add(i, "duckdb", (time.perf_counter() - t0) * 1e3, rss, (duck_rows, "rows read"))
    shutil.rmtree(out_dir, ignore_errors=True)
    r.check()
    return r, base


def bench_resolve(args, base, work, env, views):
    r = Result("resolve (all source customers)")
    clusters = os.path.join(work, "duck-clusters.parquet")
    duck_sql = f"""COPY (
SELECT source_system, source_id,
       CASE WHEN customer_type = 'individual' AND is_valid_resident_id(id_number) AND name IS NOT NULL
                THEN 'I|' || id_number || '|' || name
            WHEN customer_type IN ('corporate', 'government') AND is_valid_uscc(uscc) THEN 'O|' || uscc
            ELSE 'R|' || source_system || ':' || source_id END AS cluster
FROM source_customer) TO '{clusters}' (FORMAT parquet)"""
    partition = """
WITH m AS (SELECT source_system || ':' || source_id AS record, {key} AS k FROM {src})
SELECT record, min(record) OVER (PARTITION BY k) AS representative FROM m"""
    lake = os.path.join(work, "lake")
    for i in range(args.heavy_runs):
        for engine in (["custlake", "duckdb"] if i % 2 == 0 else ["duckdb", "custlake"]):
            if engine == "custlake":
                shutil.rmtree(lake, ignore_errors=True)
                shutil.copytree(base, lake)
                t, rss, _, _ = run_measured([args.bin, "--quiet", "--lake", lake, "resolve"], env)
                con = duckdb.connect()
                for v in duck_views(lake, ["customer_xref"]):
                    con.execute(v)
                tab = con.sql(partition.format(key="customer_id", src="customer_xref")).to_arrow_table()
                r.add(i, "custlake", t * 1e3, rss, answer(tab, False))
            else:
                t0 = time.perf_counter()
                _, rss = duck({"threads": args.threads, "setup": [DUCK_MACROS] + views, "runs": 1,
                               "statement": True, "sql": duck_sql}, work)
                ms = (time.perf_counter() - t0) * 1e3
                tab = duckdb.connect().sql(
                    partition.format(key="cluster", src=f"read_parquet('{clusters}')")).to_arrow_table()
                r.add(i, "duckdb", ms, rss, answer(tab, False))
    r.check()
    return r, lake


def bench_query(args, name, sql, ordered, lake, work, env, views, server, http=None):
    """One SQL workload: custlake in-process, custlake over HTTP, DuckDB."""
    r = Result(name)
    sqls = sql if isinstance(sql, list) else [sql] * args.runs
    https = http if isinstance(http, list) else [http] * args.runs

    def over_http(i):
        if https[i]:
            return server.fetch(*https[i])
        return server.fetch("/v1/query?format=arrow", {"sql": sqls[i], "limit": 100_000_000})

    if server is not None:
        over_http(0)  # warm-up
    out = os.path.join(work, "custlake-result.parquet")
    dout = os.path.join(work, "duck-result.parquet")
    for i in range(args.runs):
        for engine in (["custlake", "duckdb"] if i % 2 == 0 else ["duckdb", "custlake"]):
            if engine == "custlake":
                _, rss, _, err = run_measured([args.bin, "--quiet", "--lake", lake, "sql", sqls[i], "--runs", "2",
                                               "--timing", "--format", "parquet", "--output", out], env)
                timing = [t for t in map(json.loads, filter(lambda x: x.startswith("{"), err.splitlines()))
                          if "run" in t]
                r.add(i, "custlake", timing[-1]["ms"], rss, parquet_answer(out, ordered))
                if server is not None:
                    ms, reply = over_http(i)
                    r.add(i, "http", ms, None, arrow_answer(reply, ordered))
            else:
                ms, rss = duck({"threads": args.threads, "setup": [DUCK_MACROS] + views, "runs": 2,
                                "sql": sqls[i], "output": dout}, work)
                r.add(i, "duckdb", ms[-1], rss, parquet_answer(dout, ordered))
    r.check()
    return r


def bench_command(args, name, cmd, custlake_answer, duck_sql, lake, work, env, views):
    """A command that computes and stores (`custlake score`, `custlake list`), timed as a
    whole process, against DuckDB computing the same rows and writing them to Parquet
    (`COPY (...) TO`, timed)."""
    r = Result(name)
    out = os.path.join(work, "command-result.parquet")
    dout = os.path.join(work, "duck-command.parquet")
    for i in range(args.runs):
        for engine in (["custlake", "duckdb"] if i % 2 == 0 else ["duckdb", "custlake"]):
            if engine == "custlake":
                t, rss, _, _ = run_measured([args.bin, "--quiet", "--lake", lake] + cmd(out), env)
                r.add(i, "custlake", t * 1e3, rss, custlake_answer(out))
            else:
                ms, rss = duck({"threads": args.threads, "setup": views, "runs": 1, "statement": True,
                                "sql": f"COPY ({duck_sql}) TO '{dout}' (FORMAT parquet)"}, work)
                r.add(i, "duckdb", ms[-1], rss, parquet_answer(dout, False))
    r.check()
    return r


def analytics_scale(args, lake):
    """The analytics issue's workloads on a lake already ingested and resolved: `custlake
    score`, the named analytics queries and the three lists."""
    as_of = args.as_of
    env = dict(os.environ, CUSTLAKE__QUERY__TARGET_PARTITIONS=str(args.threads))
    work = os.path.join(args.work, "analytics")
    os.makedirs(work, exist_ok=True)
    tables = QUERY_TABLES + ["agent", "lifecycle_event"]
    earlier = (dt.date.fromisoformat(as_of) - dt.timedelta(days=30)).isoformat()
    # The earlier run the lifecycle flows compare with (not timed).
    run_measured([args.bin, "--quiet", "--lake", lake, "score", "--as-of", earlier], env)

    def views():
        v = duck_views(lake, tables + ["customer_score"])
        have = {x.split()[2] for x in v}
        return v + [ddl for t, ddl in DUCK_EMPTY.items() if t not in have]

    def score_answer(out):
        run_measured([args.bin, "--quiet", "--lake", lake, "sql", "--format", "parquet", "--output", out,
                      f"SELECT {SCORE_COLS} FROM customer_score WHERE as_of = DATE '{as_of}'"], env)
        return parquet_answer(out, False)

    results = []
    log("  score")
    results.append(bench_command(args, "custlake score (all customers)",
                                 lambda out: ["score", "--as-of", as_of], score_answer,
                                 score_sql(as_of), lake, work, env, [DUCK_SCORE_MACROS] + views()))
    v = views()
    server = Server(args.bin, lake, env) if not args.no_http else None
    try:
        for name, params, http in [
            ("segment_counts", {"as_of": f"DATE '{as_of}'"}, f"as_of={as_of}"),
            ("value_distribution", {"as_of": f"DATE '{as_of}'"}, f"as_of={as_of}"),
            ("lifecycle_flows", {"from": f"DATE '{earlier}'", "to": f"DATE '{as_of}'"}, f"from={earlier}&to={as_of}"),
        ]:
            log(f"  {name}")
            results.append(bench_query(args, name, bind(sql_body(f"{name}.sql"), params), True, lake, work, env,
                                       v, server, (f"/v1/queries/{name}?format=arrow&{http}",)))
    finally:
        if server:
            server.stop()
    for kind, rule in [("renewals", "renewals"), ("cross-sell", "cross_sell"), ("churn", "churn")]:
        log(f"  {kind} list")
        extra = ["--within-days", "30"] if kind == "renewals" else []
        results.append(bench_command(
            args, f"{kind} list (computed, stored, read back)",
            lambda out, kind=kind, extra=extra: ["list", kind, "--as-of", as_of] + extra
            + ["--format", "parquet", "--output", out],
            lambda out: parquet_answer(out, False), list_sql(rule, as_of), lake, work, env, v))
    return {"customers": count_customers(lake), "results": results, "server_rss": None,
            "records": source_counts(lake)}


def shapes_scale(args, lake):
    """The benchmark's analytics shapes (`analytics()`) on a lake already ingested and
    resolved (a large one: generating and loading it here would take the run's time)."""
    env = dict(os.environ, CUSTLAKE__QUERY__TARGET_PARTITIONS=str(args.threads))
    work = os.path.join(args.work, "shapes")
    os.makedirs(work, exist_ok=True)
    tables = QUERY_TABLES
    views = duck_views(lake, tables)
    results = []
    for name, sql, ordered in analytics(dt.date.fromisoformat(args.as_of)):
        if args.only and not any(o in name for o in args.only):
            continue
        log(f"  {name}")
        results.append(bench_query(args, name, sql, ordered, lake, work, env, views, None))
    return {"customers": count_customers(lake), "results": results, "server_rss": None,
            "records": source_counts(lake)}


def count_customers(lake):
    con = duckdb.connect()
    for v in duck_views(lake, ["customer"]):
        con.execute(v)
    return con.execute("SELECT count(*) FROM customer WHERE status = 'active'").fetchall()[0][0]


def lookup_keys(lake, n):
    con = duckdb.connect()
    for v in duck_views(lake, ["source_customer"]):
        con.execute(v)
    ids = con.execute(f"SELECT source_system, source_id FROM source_customer ORDER BY hash(source_id), source_system "
                      f"LIMIT {n}").fetchall()
    phones = [p for (p,) in con.execute(f"SELECT phone FROM source_customer WHERE phone IS NOT NULL "
                                        f"ORDER BY hash(phone), phone LIMIT {n}").fetchall()]
    return ids, phones


def one_scale(args, customers):
    work = os.path.join(args.work, f"compare-{customers}")
    os.makedirs(work, exist_ok=True)
    sample = os.path.join(work, "sample")
    as_of = dt.date.fromisoformat(args.as_of)
    if not os.path.exists(os.path.join(sample, "truth.csv")):
        t, rss, _, _ = run_measured([args.bin, "generate", "--quiet", "--customers", str(customers), "--seed",
                                     str(args.seed), "--as-of", args.as_of, "--out", sample])
        log(f"[{customers}] generated the sample in {t:.1f}s")
    env = dict(os.environ, CUSTLAKE__QUERY__TARGET_PARTITIONS=str(args.threads))
    results = []
    log(f"[{customers}] ingest, {args.heavy_runs} runs per engine")
    r, base = bench_ingest(args, sample, work, env)
    results.append(r)
    tables = QUERY_TABLES
    log(f"[{customers}] resolve, {args.heavy_runs} runs per engine")
    r, lake = bench_resolve(args, base, work, env, duck_views(base, ["source_customer"]))
    results.append(r)
    views = duck_views(lake, tables)
    server = Server(args.bin, lake, env) if not args.no_http else None
    try:
        ids, phones = lookup_keys(lake, args.runs)
        log(f"[{customers}] lookups and analytics, {args.runs} runs per engine")
        results.append(bench_query(
            args, "customer lookup by id", [lookup_by_id(s, i) for s, i in ids], False, lake, work, env, views,
            server, [(f"/v1/queries/customer_lookup?format=arrow&system={s}&id={urllib.parse.quote(i)}",)
                     for s, i in ids]))
        results.append(bench_query(
            args, "customer lookup by phone", [lookup_by_phone(p) for p in phones], True, lake, work, env, views,
            server, [(f"/v1/queries/customer_by_phone?format=arrow&phone={urllib.parse.quote(p)}",)
                     for p in phones]))
        for name, sql, ordered in analytics(as_of):
            log(f"[{customers}]   {name}")
            results.append(bench_query(args, name, sql, ordered, lake, work, env, views, server))
        server_rss = server.peak_rss() if server else None
    finally:
        if server:
            server.stop()
    return {"customers": customers, "results": results, "server_rss": server_rss,
            "records": source_counts(lake)}


def source_counts(lake):
    con = duckdb.connect()
    out = {}
    for t in ["source_customer", "customer", "policy", "payment", "interaction"]:
        for v in duck_views(lake, [t]):
            con.execute(v)
            out[t] = con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
    return out


# ------------------------------------------------------------------ report

def fmt_ms(ms):
    if ms is None:
        return "–"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def report(args, scales):
    version = subprocess.run([args.bin, "--version"], capture_output=True, text=True).stdout.strip()
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        "# custlake vs DuckDB",
        "",
        f"Written by `benches/compare_duckdb.py` on {dt.date.today()}. Machine: {cpu}, {os.cpu_count()} cores, "
        f"{mem:.0f} GiB, {platform.system()} {platform.release()}. Versions: {version}, DuckDB {duckdb.__version__}, "
        f"Python {platform.python_version()}. Threads: {args.threads} for both engines. "
        f"Median of {args.runs} runs after a warm-up ({args.heavy_runs} runs for ingest and resolve).",
        "",
        "custlake in-process is `custlake sql --runs 2 --timing` (the warm second run: planning and execution with "
        "every batch collected); HTTP is the same query through `POST /v1/query` or the named query, Arrow IPC reply, "
        "timed at the client. DuckDB runs the same SQL over exactly the Parquet files of the current Delta versions "
        "(one view per table) and fetches the result as Arrow. Peak memory is the max RSS of the process that ran "
        "the workload (a fresh one per run; DuckDB's includes the Python interpreter). Ratio = custlake in-process / "
        "DuckDB; below 1 custlake is faster. Every workload's answers (row count and a checksum of the canonical rows) "
        "are compared between the engines run by run; a mismatch is reported as FAILED instead of a time.",
        "",
        "Ingest and resolve are not the same work in the two engines: custlake validates, quarantines and upserts "
        "into Delta, and resolves with blocking, fuzzy scoring, stable ids, golden records and suspect groups; DuckDB "
        "copies the extracts to Parquet and forms the clusters of the automatic rules only. Their answers are "
        "checked as far as they overlap: rows read, and the partition of source records into customers.",
    ]
    for s in scales:
        lines += ["", f"## {s['customers']:,} customers", ""]
        rec = s["records"]
        lines.append("Rows: " + ", ".join(f"{k} {v:,}" for k, v in rec.items())
                     + (f". Server peak RSS over all HTTP runs: {s['server_rss']:.0f} MiB." if s["server_rss"] else "."))
        lines += ["", "| workload | rows | custlake | custlake HTTP | DuckDB | ratio | custlake peak MiB | DuckDB peak MiB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        ratios = []
        for r in s["results"]:
            if r.failed:
                lines.append(f"| {r.name} | FAILED: answers differ ({r.failed}) | | | | | | |")
                continue
            c, h, d = r.median("custlake"), r.median("http"), r.median("duckdb")
            ratio = c / d
            ratios.append(ratio)
            lines.append(f"| {r.name} | {r.rows:,} | {fmt_ms(c)} | {fmt_ms(h)} | {fmt_ms(d)} | {ratio:.2f} | "
                         f"{r.rss['custlake']:.0f} | {r.rss['duckdb']:.0f} |")
        if ratios:
            gm = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
            lines += ["", f"Geometric mean of the ratios: **{gm:.2f}** over {len(ratios)} workloads"
                      + (f" ({sum(1 for r in s['results'] if r.failed)} FAILED)." if any(r.failed for r in s["results"]) else ".")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        log(f"wrote {args.output}")
    return all(not r.failed for s in scales for r in s["results"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, nargs="+", default=[100_000])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--as-of", default="2026-11-01", help="the sample's as-of date; analytics windows end here")
    ap.add_argument("--bin", default="target/release/custlake")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "custlake-bench"),
                    help="work directory; samples are kept there and reused")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per engine for lookups and analytics")
    ap.add_argument("--heavy-runs", type=int, default=3, help="timed runs per engine for ingest and resolve")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP runs")
    ap.add_argument("--output", default=None, help="report file ('' for none; default benches/RESULTS.md, "
                    "or benches/RESULTS-analytics.md with --analytics-lake)")
    ap.add_argument("--analytics-lake", metavar="LAKE",
                    help="only the analytics workloads (score, segment counts, value distribution, lifecycle "
                         "flows, the renewal, cross-sell and churn lists) on this lake, already ingested and resolved")
    ap.add_argument("--shapes-lake", metavar="LAKE",
                    help="only the analytics shapes (counts, premium per customer, inactivity, expiring "
                         "policies, validity counts) on this lake, already ingested and resolved (for 10 million "
                         "customers); --as-of must be the lake's")
    ap.add_argument("--only", nargs="+", metavar="TEXT",
                    help="with --shapes-lake: only the shapes whose name contains one of these")
    args = ap.parse_args()
    if args.output is None:
        args.output = ("" if args.shapes_lake else
                       os.path.join(HERE, "RESULTS-analytics.md" if args.analytics_lake else "RESULTS.md"))
    if not os.path.exists(TIME):
        sys.exit(f"{TIME} is needed to measure peak memory: apt-get install time")
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin}: no such binary; build it with `cargo build --release`")
    if args.shapes_lake:
        scales = [shapes_scale(args, args.shapes_lake)]
    elif args.analytics_lake:
        scales = [analytics_scale(args, args.analytics_lake)]
    else:
        scales = [one_scale(args, n) for n in args.customers]
    ok = report(args, scales)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

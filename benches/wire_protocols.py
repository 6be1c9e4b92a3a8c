"""Results through the wire protocols, side by side in one run.

1. A 1-million-row result (the golden customers' main columns) fetched
   through Arrow Flight SQL (ADBC's Go driver, and pyarrow.flight's C++
   client), the PostgreSQL protocol (psycopg,
   binary format), and HTTP as an Arrow IPC stream, in rows/s, with
   DuckDB's Arrow export of the same query over the same Parquet files
   (the Delta table's current files) as the reference: the relation's
   to_arrow_table (the ratios), and the DB-API cursor's fetch_arrow_table
   (slower in DuckDB 2: an extra copy).
2. The golden-customer lookup at 8 clients over PG (a prepared statement
   per connection) and over HTTP (the named query customer_golden, and
   the same SQL through POST /v1/query), requests/s and p99, each client a
   thread with its own connection, keys drawn at random.

Needs a release build, a lake loaded from `custlake generate --customers
1000000`, and duckdb, deltalake, pyarrow, psycopg, adbc-driver-flightsql.

    python3 benches/wire_protocols.py --lake LAKE --bin target/release/custlake
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

DUCK = "DuckDB sql().to_arrow_table (in-process)"
QUERY = (
    "SELECT customer_id, customer_type, name, gender, birth_date, province, "
    "owning_team, region, status FROM customer"
)
LOOKUP = (
    "SELECT customer_id, customer_type, name, gender, birth_date, id_type, id_number, uscc, "
    "phone, email, address, province, owning_team, region, agent_id, status, merged_into "
    "FROM customer WHERE customer_id = {}"
)


def start(args, work):
    token = subprocess.check_output(
        [args.bin, "--quiet", "--lake", args.lake, "token", "create", "--user", "bench", "--role", "admin"],
        text=True,
    ).strip().splitlines()[-1]
    env = dict(os.environ)
    env.update(
        {
            "CUSTLAKE__ROLES__ADMIN__RATE_PER_SECOND": "1000000",
            "CUSTLAKE__ROLES__ADMIN__BURST": "1000000",
            "CUSTLAKE__SERVER__MAX_CONCURRENT_QUERIES": "128",
            "CUSTLAKE__SERVER__MAX_QUERIES_PER_USER": "128",
            "CUSTLAKE__SERVER__MAX_ROW_LIMIT": "100000000",
            "CUSTLAKE__SERVER__PG_BIND": f"127.0.0.1:{args.pg_port}",
            "CUSTLAKE__SERVER__FLIGHT_BIND": f"127.0.0.1:{args.flight_port}",
            # No scheduled jobs: a tier move caught up at start would share
            # the cores with the fetches being timed.
            "CUSTLAKE__SCHEDULER__ENABLED": "false",
        }
    )
    log = open(os.path.join(work, "server.log"), "w")
    proc = subprocess.Popen(
        [args.bin, "serve", "--lake", args.lake, "--bind", f"127.0.0.1:{args.http_port}"],
        env=env,
        stdout=log,
        stderr=log,
    )
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{args.http_port}/healthz")
            break
        except OSError:
            time.sleep(0.1)
    return proc, token


def http_post(port, token, path, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    return urllib.request.urlopen(req)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def statement_query(sql):
    """A google.protobuf.Any holding arrow.flight.protocol.sql.CommandStatementQuery
    (pyarrow.flight speaks Flight, not Flight SQL: the command is written here)."""

    def field(number, payload):
        return bytes([number << 3 | 2]) + varint(len(payload)) + payload

    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return field(1, type_url) + field(2, field(1, sql.encode()))


def fetch_all(args, token):
    import adbc_driver_flightsql.dbapi as flightsql
    import duckdb
    import psycopg
    import pyarrow.flight as paflight
    import pyarrow.ipc as ipc
    from deltalake import DeltaTable

    out = {}
    files = DeltaTable(os.path.join(args.lake, "hot", "customer")).file_uris()
    con = duckdb.connect()
    con.execute(f"CREATE VIEW customer AS SELECT * FROM read_parquet({files!r})")
    def duck():
        # The relation API's Arrow export: DuckDB's fastest way to Arrow.
        r = con.sql(QUERY)
        fetch = getattr(r, "to_arrow_table", None) or r.arrow
        return fetch().num_rows

    def duck_cursor():
        # The DB-API result's fetch_arrow_table (to_arrow_table in DuckDB
        # 2, which warns that it makes an extra copy of the rows).
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = con.execute(QUERY)
            # fetch_arrow_table before DuckDB 2, to_arrow_table since.
            fetch = getattr(r, "fetch_arrow_table", None) or r.to_arrow_table
            return fetch().num_rows

    paths = {DUCK: duck, "DuckDB execute().fetch_arrow_table (in-process)": duck_cursor}

    conn = flightsql.connect(
        f"grpc://127.0.0.1:{args.flight_port}",
        db_kwargs={"username": "bench", "password": token},
        autocommit=True,
    )

    def flight():
        cur = conn.cursor()
        cur.execute(QUERY)
        return cur.fetch_arrow_table().num_rows

    paths["Flight SQL (ADBC)"] = flight

    # The same statement through pyarrow's Flight client (Arrow C++ over
    # gRPC C++): GetFlightInfo with a CommandStatementQuery, then DoGet.
    client = paflight.FlightClient(f"grpc://127.0.0.1:{args.flight_port}")
    header = client.authenticate_basic_token(b"bench", token.encode())
    options = paflight.FlightCallOptions(headers=[header])

    def flight_cpp():
        info = client.get_flight_info(
            paflight.FlightDescriptor.for_command(statement_query(QUERY)), options
        )
        return client.do_get(info.endpoints[0].ticket, options).read_all().num_rows

    paths["Flight SQL (pyarrow.flight)"] = flight_cpp

    pg = psycopg.connect(
        f"host=127.0.0.1 port={args.pg_port} user=bench password={token} dbname=custlake",
        autocommit=True,
    )

    def pg_binary():
        cur = pg.cursor(binary=True)
        cur.execute(QUERY)
        return len(cur.fetchall())

    paths["PostgreSQL (psycopg, binary)"] = pg_binary

    def http_arrow():
        resp = http_post(
            args.http_port,
            token,
            "/v1/query?format=arrow",
            {"sql": QUERY, "limit": 100_000_000, "timeout_ms": 600000},
        )
        return ipc.open_stream(resp).read_all().num_rows

    paths["HTTP (Arrow IPC stream)"] = http_arrow
    # Round after round, each path once per round: a slow moment of the
    # machine falls on all paths alike, not on one path's runs.
    times = {name: [] for name in paths}
    rows = {}
    for _ in range(args.runs):
        for name, f in paths.items():
            t = time.perf_counter()
            rows[name] = f()
            times[name].append(time.perf_counter() - t)
    for name in paths:
        out[name] = (min(times[name]), rows[name])
    return out


def keys(args):
    from deltalake import DeltaTable

    t = DeltaTable(os.path.join(args.lake, "hot", "customer")).to_pyarrow_table(columns=["customer_id"])
    ids = t.column("customer_id").to_pylist()
    random.seed(42)
    return random.sample(ids, 5000)


def load(name, make_client, ids, clients, seconds):
    lat = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(n):
        call = make_client()
        rnd = random.Random(n)
        mine = []
        while time.perf_counter() < stop:
            k = rnd.choice(ids)
            t = time.perf_counter()
            try:
                if call(k) != 1:
                    errors[0] += 1
            except Exception:  # noqa: BLE001
                errors[0] += 1
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat.sort()
    return {
        "name": name,
        "rps": len(lat) / elapsed,
        "p50": lat[len(lat) // 2] * 1000,
        "p99": lat[int(len(lat) * 0.99)] * 1000,
        "errors": errors[0],
    }


def lookups(args, token, ids):
    import http.client

    import psycopg

    def pg_client():
        c = psycopg.connect(
            f"host=127.0.0.1 port={args.pg_port} user=bench password={token} dbname=custlake",
            autocommit=True,
        )
        sql = LOOKUP.format("%s")

        def call(k):
            return len(c.execute(sql, [k], prepare=True).fetchall())

        return call

    def pg_named_client():
        # A named query's arguments are constants: psycopg writes them in
        # (a client-side binding cursor), as a BI tool does.
        c = psycopg.connect(
            f"host=127.0.0.1 port={args.pg_port} user=bench password={token} dbname=custlake",
            autocommit=True,
        )
        cur = psycopg.ClientCursor(c)

        def call(k):
            return len(cur.execute("SELECT * FROM customer_golden(%s)", [k]).fetchall())

        return call

    def http_client(named):
        def make():
            conn = http.client.HTTPConnection("127.0.0.1", args.http_port)
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}

            def call(k):
                if named:
                    conn.request("GET", f"/v1/queries/customer_golden?id={k}", headers=headers)
                else:
                    body = json.dumps({"sql": LOOKUP.format("$id"), "params": {"id": k}})
                    conn.request("POST", "/v1/query", body=body, headers=headers)
                r = conn.getresponse()
                data = json.loads(r.read())
                return data.get("row_count", len(data.get("rows", [])))

            return call

        return make

    return [
        load("HTTP named query customer_golden", http_client(True), ids, args.clients, args.seconds),
        load("HTTP POST /v1/query (same SQL)", http_client(False), ids, args.clients, args.seconds),
        load("PostgreSQL named query customer_golden (psycopg)", pg_named_client, ids, args.clients, args.seconds),
        load("PostgreSQL prepared statement (psycopg)", pg_client, ids, args.clients, args.seconds),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True)
    p.add_argument("--bin", default="target/release/custlake")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--http-port", type=int, default=18556)
    p.add_argument("--pg-port", type=int, default=15532)
    p.add_argument("--flight-port", type=int, default=15052)
    args = p.parse_args()
    work = tempfile.mkdtemp()
    proc, token = start(args, work)
    try:
        fetched = fetch_all(args, token)
        ids = keys(args)
        looked = lookups(args, token, ids)
    finally:
        proc.terminate()
        proc.wait()
    ref = fetched[DUCK][0]
    cursor = fetched["DuckDB execute().fetch_arrow_table (in-process)"][0]
    print(f"\n1-million-row result: `{QUERY}` (best of {args.runs})\n")
    print("| path | rows | seconds | rows/s | time / DuckDB |")
    print("|---|---:|---:|---:|---:|")
    for name, (secs, rows) in fetched.items():
        print(f"| {name} | {rows:,} | {secs:.2f} | {rows / secs:,.0f} | {secs / ref:.2f}x |")
    print(f"\nGolden-customer lookup, {args.clients} clients, {args.seconds:.0f} s each\n")
    print("| path | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|")
    for r in looked:
        print(f"| {r['name']} | {r['rps']:,.1f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} |")
    http_rps = looked[0]["rps"]
    pg_named, pg = looked[2], looked[3]
    print(
        f"\nFlight SQL / DuckDB: {fetched['Flight SQL (pyarrow.flight)'][0] / ref:.2f}x (pyarrow.flight), "
        f"{fetched['Flight SQL (ADBC)'][0] / ref:.2f}x (ADBC) against to_arrow_table; "
        f"{fetched['Flight SQL (pyarrow.flight)'][0] / cursor:.2f}x and "
        f"{fetched['Flight SQL (ADBC)'][0] / cursor:.2f}x against the cursor's fetch_arrow_table (target <= 1.2x); "
        f"PG lookups: the named query {http_rps / pg_named['rps']:.2f}x, the prepared statement "
        f"{http_rps / pg['rps']:.2f}x the time of HTTP named lookups (target <= 1.5x)"
    )


if __name__ == "__main__":
    sys.exit(main())

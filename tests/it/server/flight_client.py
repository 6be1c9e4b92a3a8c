"""Real Arrow Flight SQL clients for the Flight tests: the ADBC Flight SQL
driver (adbc-driver-flightsql) and pyarrow.flight.

Reads one JSON request on stdin and prints one JSON answer on stdout:

  {"mode": "adbc", "uri": "grpc://host:port", "user": ..., "token": ...,
   "cases": [{"sql": ..., "params": [...] | {...} | null}, ...],
   "objects": bool}
      logs in with the user name and token (the Flight handshake), runs
      each case and answers
      {"results": [{"ok": true, "columns": [...], "rows": [[text, ...]]}
                   | {"ok": false, "message": ...}],
       "tables": [[schema, table, type], ...],   (with "objects")
       "info": {name: text, ...}}                (with "info": GetSqlInfo)
      or {"login_error": {"message": ...}}.

  {"mode": "pyarrow", "uri": ..., "user": ..., "token": ..., "sql": ...}
      the handshake by pyarrow.flight's basic auth, then GetFlightInfo on a
      CommandStatementQuery (its protobuf written here) and DoGet of its
      ticket; answers {"rows": N, "columns": [...], "header": name of the
      header the handshake returned} or {"error": ...}.
"""

import json
import sys

import pyarrow.flight as flight


def text(v):
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v)


def adbc(req):
    import adbc_driver_flightsql.dbapi as dbapi

    try:
        kwargs = {"username": req["user"], "password": req["token"]}
        if req.get("root_certs"):
            # Trust the server's own certificate (grpc+tls:// URIs).
            kwargs["adbc.flight.sql.client_option.tls_root_certs"] = req["root_certs"]
        conn = dbapi.connect(req["uri"], db_kwargs=kwargs, autocommit=True)
        cur = conn.cursor()
        # A call that needs the login but sends no statement (a role
        # without free SQL may send only calls of its named queries).
        conn.adbc_get_table_types()
    except Exception as e:  # noqa: BLE001 - the client's own error types
        return {"login_error": {"message": str(e)}}
    out = []
    for case in req["cases"]:
        try:
            cur = conn.cursor()
            params = case.get("params")
            cur.execute(case["sql"], parameters=params)
            table = cur.fetch_arrow_table()
            cols = table.column_names
            rows = [[text(v) for v in r.values()] for r in table.to_pylist()]
            out.append({"ok": True, "columns": cols, "rows": rows})
        except Exception as e:  # noqa: BLE001
            out.append({"ok": False, "message": str(e)})
    answer = {"results": out}
    if req.get("info"):
        answer["info"] = {str(k): text(v) for k, v in conn.adbc_get_info().items()}
    if req.get("objects"):
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = []
        for catalog in objects:
            for schema in catalog["catalog_db_schemas"] or []:
                for t in schema["db_schema_tables"] or []:
                    tables.append([schema["db_schema_name"], t["table_name"], t["table_type"]])
        answer["tables"] = tables
    conn.close()
    return answer


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


def field(number, payload):
    return bytes([number << 3 | 2]) + varint(len(payload)) + payload


def statement_query(sql):
    """A google.protobuf.Any holding arrow.flight.protocol.sql.CommandStatementQuery."""
    command = field(1, sql.encode())
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return field(1, type_url) + field(2, command)


def raw(req):
    client = flight.FlightClient(req["uri"])
    try:
        header = client.authenticate_basic_token(req["user"].encode(), req["token"].encode())
    except flight.FlightError as e:
        return {"error": str(e)}
    options = flight.FlightCallOptions(headers=[header])
    try:
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(statement_query(req["sql"])), options
        )
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
    except flight.FlightError as e:
        return {"error": str(e)}
    return {
        "rows": table.num_rows,
        "columns": table.column_names,
        "header": header[0].decode(),
        "first": [text(v) for v in table.slice(0, 1).to_pylist()[0].values()] if table.num_rows else [],
    }


def stall(req):
    """Starts a statement, reads its first batch, then reads nothing for
    `hold` seconds (a client that stopped reading)."""
    import time

    client = flight.FlightClient(req["uri"])
    header = client.authenticate_basic_token(req["user"].encode(), req["token"].encode())
    options = flight.FlightCallOptions(headers=[header])
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(statement_query(req["sql"])), options
    )
    reader = client.do_get(info.endpoints[0].ticket, options)
    reader.read_chunk()
    print("reading", flush=True)
    time.sleep(req["hold"])
    return {"held": req["hold"]}


def main():
    req = json.load(sys.stdin)
    answer = {"adbc": adbc, "pyarrow": raw, "stall": stall}[req["mode"]](req)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()

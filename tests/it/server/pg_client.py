"""A real PostgreSQL client (psycopg 3) for the wire-protocol tests.

Reads one JSON request on stdin and prints one JSON answer on stdout:

  {"mode": "run", "dsn": ..., "binary": false, "prepare": false,
   "cases": [{"sql": ..., "params": [...] | null}, ...]}
      runs each case on one connection (autocommit), answering
      {"results": [{"ok": true, "columns": [...], "rows": [[text, ...]]}
                   | {"ok": false, "sqlstate": ..., "message": ...}]}
      or {"login_error": {"sqlstate": ..., "message": ...}}.

  {"mode": "cancel", "dsn": ..., "sql": ..., "after": seconds,
   "setup": [sql, ...], "canceller": dsn | null}
      runs `setup`, starts the statement, cancels it from another thread
      after `after` seconds, answers {"sqlstate": ..., "seconds": elapsed}
      and whether the connection still answers SELECT 1 ("alive"). With a
      canceller, that connection runs `SELECT pg_cancel_backend(pid)` with
      this connection's backend pid instead of a protocol cancel request,
      and the answer adds what it returned ("cancelled": true | false |
      {"sqlstate", "message"}) and whether `pg_backend_pid()` named the
      pid the server sent at login ("pid_matches").
"""

import json
import sys
import threading
import time

import psycopg


def text(v):
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v)


def error(e):
    diag = getattr(e, "diag", None)
    return {
        "ok": False,
        "sqlstate": getattr(e, "sqlstate", None) or (diag.sqlstate if diag else None),
        "message": str(e),
    }


def run(req):
    try:
        conn = psycopg.connect(req["dsn"], autocommit=True, connect_timeout=20)
    except psycopg.Error as e:
        return {"login_error": error(e)}
    out = []
    with conn:
        for case in req["cases"]:
            try:
                cur = conn.cursor(binary=req.get("binary", False))
                params = case.get("params")
                cur.execute(case["sql"], params, prepare=req.get("prepare") or None)
                if cur.description is None:
                    out.append({"ok": True, "columns": [], "rows": []})
                    continue
                cols = [d.name for d in cur.description]
                rows = [[text(v) for v in r] for r in cur.fetchall()]
                out.append({"ok": True, "columns": cols, "rows": rows})
            except psycopg.Error as e:
                out.append(error(e))
    return {"results": out}


def cancel(req):
    conn = psycopg.connect(req["dsn"], autocommit=True, connect_timeout=20)
    for sql in req.get("setup", []):
        conn.execute(sql)
    answer = {}
    pid = conn.info.backend_pid
    answer["pid_matches"] = conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    stop = conn.cancel
    if req.get("canceller"):
        other = psycopg.connect(req["canceller"], autocommit=True, connect_timeout=20)

        def stop():
            try:
                answer["cancelled"] = other.execute("SELECT pg_cancel_backend(%s)", [pid]).fetchone()[0]
            except psycopg.Error as e:
                answer["cancelled"] = error(e)
    timer = threading.Timer(req["after"], stop)
    start = time.monotonic()
    timer.start()
    state = None
    try:
        conn.execute(req["sql"]).fetchall()
    except psycopg.Error as e:
        state = error(e)["sqlstate"]
    seconds = time.monotonic() - start
    timer.cancel()
    # A canceller already running finishes before its answer is read.
    timer.join()
    try:
        alive = conn.execute("SELECT 1").fetchone()[0] == 1
    except psycopg.Error:
        alive = False
    conn.close()
    return dict(answer, sqlstate=state, seconds=seconds, alive=alive)


def main():
    req = json.load(sys.stdin)
    answer = {"run": run, "cancel": cancel}[req["mode"]](req)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()

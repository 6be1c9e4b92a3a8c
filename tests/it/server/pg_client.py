"""A real PostgreSQL client (psycopg 3) for the wire-protocol tests.

Reads one JSON request on stdin and prints one JSON answer on stdout:

  {"mode": "run", "dsn": ..., "binary": false, "prepare": false,
   "cases": [{"sql": ..., "params": [...] | null}, ...]}
      runs each case on one connection (autocommit), answering
      {"results": [{"ok": true, "columns": [...], "rows": [[text, ...]]}
                   | {"ok": false, "sqlstate": ..., "message": ...}]}
      or {"login_error": {"sqlstate": ..., "message": ...}}.

  {"mode": "cancel", "dsn": ..., "sql": ..., "after": seconds}
      starts the statement, cancels it from another thread after `after`
      seconds, answers {"sqlstate": ..., "seconds": elapsed} and whether
      the connection still answers SELECT 1 ("alive").
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
    timer = threading.Timer(req["after"], conn.cancel)
    start = time.monotonic()
    timer.start()
    state = None
    try:
        conn.execute(req["sql"]).fetchall()
    except psycopg.Error as e:
        state = error(e)["sqlstate"]
    seconds = time.monotonic() - start
    timer.cancel()
    try:
        alive = conn.execute("SELECT 1").fetchone()[0] == 1
    except psycopg.Error:
        alive = False
    conn.close()
    return {"sqlstate": state, "seconds": seconds, "alive": alive}


def main():
    req = json.load(sys.stdin)
    answer = {"run": run, "cancel": cancel}[req["mode"]](req)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Peak memory of `custlake serve` while 8 clients send the hostile queries
of the hardening work at once, again and again: a 600 KB `1+1+...+1`, a
20,000-term OR chain, functions that would build gigabytes, `SELECT INTO`,
a cross join streamed as CSV to a client that never reads, a heavy
aggregation, values doubled CTE by CTE (`s || s`, `make_array(s, s)`), a
200-term OR chain (planned in the sandbox first) and a request body that
never completes. Prints the server's peak RSS (VmHWM), its RSS at the end, the
answers by status, and whether `SELECT 1` still answers.

    python3 benches/hostile_memory.py --bin target/release/custlake \
        [--customers 2000] [--seconds 30] [--memory-limit-mb 4096]
"""
import argparse, json, os, socket, subprocess, sys, tempfile, threading, time, urllib.request
from collections import Counter

p = argparse.ArgumentParser()
p.add_argument("--bin", required=True)
p.add_argument("--customers", type=int, default=2000)
p.add_argument("--seconds", type=int, default=30)
p.add_argument("--memory-limit-mb", type=int, default=4096)
p.add_argument("--port", type=int, default=18491)
a = p.parse_args()
bin_ = os.path.abspath(a.bin)
work = tempfile.mkdtemp()
run = lambda *args: subprocess.run([bin_, "--quiet", *args], cwd=work, check=True, capture_output=True)
print(f"loading a sample of {a.customers} customers ...", file=sys.stderr)
run("generate", "--customers", str(a.customers), "--seed", "1", "--as-of", "2026-06-30", "--out", "sample")
run("ingest", "--from", "sample")
run("resolve")
token = run("token", "create", "--user", "bench", "--role", "admin").stdout.decode().strip().splitlines()[-1]
env = dict(os.environ, CUSTLAKE__QUERY__MEMORY_LIMIT_MB=str(a.memory_limit_mb),
           CUSTLAKE__ROLES__ADMIN__RATE_PER_SECOND="1000000", CUSTLAKE__ROLES__ADMIN__BURST="1000000",
           CUSTLAKE__SCHEDULER__ENABLED="false")
srv = subprocess.Popen([bin_, "serve", "--bind", f"127.0.0.1:{a.port}"], cwd=work, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
base = f"http://127.0.0.1:{a.port}"
for _ in range(100):
    try:
        urllib.request.urlopen(base + "/healthz"); break
    except Exception:
        time.sleep(0.1)

def status_mem():
    out = {}
    for line in open(f"/proc/{srv.pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS"):
            out[k] = int(v.split()[0]) // 1024
    return out

def post(sql, **extra):
    body = json.dumps({"sql": sql, **extra}).encode()
    req = urllib.request.Request(base + "/v1/query?format=json", body, {"content-type": "application/json", "authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read(); return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception as e:
        return type(e).__name__

def stalled(sql):
    body = json.dumps({"sql": sql, "limit": 100000000, "timeout_ms": 5000})
    s = socket.create_connection(("127.0.0.1", a.port))
    s.sendall(f"POST /v1/query?format=csv HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}".encode())
    time.sleep(6)  # never reads; past the query's timeout
    s.close()
    return "stalled"

def trickled():
    # A body that never completes (the server gives up at body_read_timeout_ms).
    s = socket.create_connection(("127.0.0.1", a.port))
    s.sendall(f"POST /v1/query HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"sql\":".encode())
    s.settimeout(60)
    try:
        reply = s.recv(200).decode(errors="replace")
    except Exception as e:
        reply = type(e).__name__
    s.close()
    return "trickled:" + (reply.split(" ")[1] if reply.startswith("HTTP/1.1") else reply)

def doubled(step):
    ctes = ["a AS (SELECT repeat(v, 40000000) s FROM (VALUES ('x')) t(v))"]
    for i, name in enumerate("bcdefgh"):
        ctes.append(f"{name} AS (SELECT {step} AS s FROM {'abcdefgh'[i]})")
    return "WITH " + ", ".join(ctes) + " SELECT 1 FROM h WHERE s IS NOT NULL"

plus = "SELECT 1" + "+1" * 300000
ors = "SELECT count(*) FROM policy WHERE " + " OR ".join(["premium = 1"] * 20000)
work_items = [
    lambda: post(plus),
    lambda: post(ors),
    lambda: post("SELECT cardinality(range(0,2000000000))", timeout_ms=5000),
    lambda: post("SELECT array_repeat(0,2147483647)", timeout_ms=5000),
    lambda: post("SELECT repeat('x',2147483647)", timeout_ms=5000),
    lambda: post("SELECT * INTO t FROM generate_series(1,10)"),
    lambda: stalled("SELECT a.policy_no, b.policy_no FROM policy a, policy b"),
    lambda: post("SELECT a.customer_id, count(*) FROM customer_policy a, policy b GROUP BY 1", limit=10, timeout_ms=20000),
    lambda: post(doubled("s || s"), timeout_ms=20000),
    lambda: post(doubled("make_array(s, s)"), timeout_ms=20000),
    lambda: post("SELECT count(*) FROM policy WHERE " + " OR ".join(f"policy_no = 'p{i}'" for i in range(200))),
    trickled,
]
answers = Counter(); peak = {"VmHWM": 0}
stop = time.time() + a.seconds
def client(i):
    n = i
    while time.time() < stop:
        answers[work_items[n % len(work_items)]()] += 1
        n += 1
def sampler():
    while time.time() < stop + 8:
        try:
            m = status_mem()
            peak["VmHWM"] = max(peak.get("VmHWM", 0), m.get("VmHWM", 0))
        except Exception: break
        time.sleep(0.1)
threads = [threading.Thread(target=client, args=(i,)) for i in range(8)] + [threading.Thread(target=sampler)]
for t in threads: t.start()
for t in threads: t.join()
alive = post("SELECT 1")
if srv.poll() is not None:
    tail = srv.stderr.read().decode(errors="replace").strip().splitlines()[-3:]
    print(json.dumps({"server_exited": srv.returncode, "last_words": tail,
                      "peak_rss_mb_before_exit": peak.get("VmHWM"),
                      "answers": {str(k): v for k, v in answers.items()}}, indent=1))
    sys.exit(1)
end = status_mem()
srv.terminate(); srv.wait(timeout=30)
print(json.dumps({"clients": 8, "seconds": a.seconds, "memory_limit_mb": a.memory_limit_mb,
                  "peak_rss_mb": end["VmHWM"], "rss_at_end_mb": end["VmRSS"],
                  "answers": {str(k): v for k, v in answers.items()}, "select_1_after": alive}, indent=1))

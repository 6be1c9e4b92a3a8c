//! Requests meant to crash or starve the server: deep and huge
//! statements, writes in disguise, functions that build gigabytes, clients
//! that stop reading or send slowly, too many connections. Each gets a
//! clear answer and the server serves the next request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Api, problem, query, request, server_with};

fn chain(op: &str, n: usize) -> String {
    let mut s = String::with_capacity(n * (op.len() + 1) + 8);
    s.push_str("SELECT 1");
    for _ in 1..n {
        s.push_str(op);
        s.push('1');
    }
    s
}

fn alive(addr: SocketAddr) {
    let r = query(addr, "json", serde_json::json!({"sql": "SELECT 1 AS one"}));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn deep_and_huge_statements_get_400_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server_with(dir.path(), |c| c.server.body_limit_bytes = 2 << 20);
    // 300,000 terms, 600 KB: over the statement size.
    let huge = query(
        addr,
        "json",
        serde_json::json!({"sql": chain("+", 300_000)}),
    );
    let p = problem(&huge, 400, 1103);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("max_statement_bytes")
    );
    alive(addr);
    // 100,000 terms in 200 KB: within the size, far over the depth.
    let deep = query(
        addr,
        "json",
        serde_json::json!({"sql": chain("+", 100_000)}),
    );
    let p = problem(&deep, 400, 1103);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("max_expression_depth")
    );
    let ors = format!(
        "SELECT count(*) FROM policy WHERE {}",
        vec!["premium = 1"; 20_000].join(" OR ")
    );
    problem(
        &query(addr, "json", serde_json::json!({"sql": ors})),
        400,
        1103,
    );
    let unions = vec!["SELECT 1"; 10_000].join(" UNION ALL ");
    problem(
        &query(addr, "json", serde_json::json!({"sql": unions})),
        400,
        1103,
    );
    alive(addr);
    // Within the limits, a long chain still runs.
    let ok = query(addr, "json", serde_json::json!({"sql": chain("+", 200)}));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["rows"][0].as_object().unwrap().len(), 1);
}

#[test]
fn writes_in_disguise_are_refused_by_text_and_by_plan() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    for sql in [
        "SELECT * INTO t FROM generate_series(1,10)",
        "SELECT policy_no INTO copy_of_policy FROM policy",
        "SET datafusion.execution.batch_size = 1",
        "PREPARE p AS SELECT 1",
    ] {
        let r = api.query("json", serde_json::json!({"sql": sql}));
        problem(&r, 400, 1102);
    }
    // The table was not created.
    let r = api.query("json", serde_json::json!({"sql": "SELECT * FROM t"}));
    problem(&r, 400, 1101);
}

#[test]
fn functions_that_build_gigabytes_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    for sql in [
        "SELECT cardinality(range(0,2000000000))",
        "SELECT array_repeat(0,2147483647)",
        "SELECT repeat('x',2147483647)",
        "SELECT lpad(policy_no, 2147483647) FROM policy",
        "SELECT length(repeat(policy_no, 100000000)) FROM policy",
    ] {
        let started = Instant::now();
        let r = api.query("json", serde_json::json!({"sql": sql, "timeout_ms": 5000}));
        let p = problem(&r, 400, 1103);
        assert!(
            p["detail"].as_str().unwrap().contains("max_value_mb"),
            "{p}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{sql}");
    }
    let r = api.query(
        "json",
        serde_json::json!({"sql": "SELECT repeat('ab', 3) AS r, cardinality(range(0, 1000)) AS n"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rows"][0]["r"], "ababab");
}

/// Send a query and never read the reply.
fn stalled(addr: SocketAddr, sql: &str, timeout_ms: u64) -> TcpStream {
    let body =
        serde_json::json!({"sql": sql, "limit": 100_000_000, "timeout_ms": timeout_ms}).to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/query?format=csv HTTP/1.1\r\nhost: x\r\n{}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        super::auth_line(addr),
        body.len()
    )
    .unwrap();
    s
}

#[test]
fn a_client_that_stops_reading_loses_its_slot_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server_with(dir.path(), |c| c.server.max_concurrent_queries = 2);
    let sql = "SELECT value, value * 2 AS twice FROM generate_series(1, 1000000000)";
    let held: Vec<TcpStream> = (0..4).map(|_| stalled(addr, sql, 2000)).collect();
    std::thread::sleep(Duration::from_millis(500));
    // Both slots are taken meanwhile.
    problem(
        &query(addr, "json", serde_json::json!({"sql": "SELECT 1"})),
        429,
        1301,
    );
    // Past the timeout the slots are free, though the clients still hold
    // their connections and have read nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = query(addr, "json", serde_json::json!({"sql": "SELECT 1"}));
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled queries kept their slots: {}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
}

/// A deep statement is planned in a child process first: when planning it
/// overflows the child's stack (made tiny here, so that a statement the
/// guard accepts does), the child dies, the statement gets 400/1103 and
/// the server serves on. With the default stack the same statement runs.
#[test]
fn a_statement_that_overflows_the_planners_stack_kills_a_child_not_the_server() {
    let or_chain = |n: usize| {
        let mut s = String::from("SELECT count(*) AS n FROM policy WHERE policy_no = 'x'");
        for i in 0..n {
            s.push_str(&format!(" OR policy_no = 'p{i}'"));
        }
        s
    };
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server_with(dir.path(), |c| {
        c.query.sandbox_stack_kb = 96;
        c.server.body_limit_bytes = 1 << 20;
    });
    let deep = query(addr, "json", serde_json::json!({"sql": or_chain(200)}));
    let p = problem(&deep, 400, 1103);
    assert!(p["detail"].as_str().unwrap().contains("sandbox"), "{p}");
    // Shallow statements are not sent to the child at all.
    let shallow = query(addr, "json", serde_json::json!({"sql": or_chain(8)}));
    assert_eq!(shallow.status, 200, "{}", shallow.text());
    alive(addr);
    let dir2 = tempfile::tempdir().unwrap();
    let (_rt2, addr) = server_with(dir2.path(), |c| c.server.body_limit_bytes = 1 << 20);
    let deep = query(addr, "json", serde_json::json!({"sql": or_chain(200)}));
    assert_eq!(deep.status, 200, "{}", deep.text());
}

#[test]
fn trickled_bodies_and_unread_replies_lose_their_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server_with(dir.path(), |c| {
        c.server.body_read_timeout_ms = 1000;
        c.server.write_timeout_ms = 5000;
        c.server.max_connections = 2;
    });
    // A body that never completes: 504/1401 once its time is up.
    let mut slow = TcpStream::connect(addr).unwrap();
    write!(
        slow,
        "POST /v1/query HTTP/1.1\r\nhost: x\r\n{}content-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"sql\":",
        super::auth_line(addr)
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    let _ = slow.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(started.elapsed() < Duration::from_secs(10), "{reply}");
    assert!(reply.starts_with("HTTP/1.1 504"), "{reply}");
    assert!(reply.contains("\"code\":1401"), "{reply}");
    drop(slow);
    // Two clients that never read their (endless) replies fill the
    // connection cap; once nothing could be written for the write timeout
    // (5 s, so that a loaded machine that pauses this thread for a few
    // seconds still finds the cap full), their connections are closed.
    let sql = "SELECT value FROM generate_series(1, 1000000000)";
    let held: Vec<TcpStream> = (0..2).map(|_| stalled(addr, sql, 1500)).collect();
    std::thread::sleep(Duration::from_millis(300));
    problem(&request(addr, "GET", "/healthz", &[], b""), 429, 1301);
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(addr, "GET", "/healthz", &[], b"").status != 200 {
        assert!(
            Instant::now() < deadline,
            "clients that read nothing kept their connections"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
}

#[test]
fn a_result_cut_at_the_limit_says_so_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    let cut = serde_json::json!({"sql": "SELECT policy_no FROM policy ORDER BY 1", "limit": 3});
    let r = api.query("json", cut.clone());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("custlake-truncated"), Some("true"));
    assert_eq!(r.header("custlake-row-limit"), Some("3"));
    let j = r.json();
    assert_eq!(j["row_count"], 3);
    assert_eq!(j["truncated"], true);
    for format in ["csv", "ndjson", "arrow", "parquet"] {
        let r = api.query(format, cut.clone());
        assert_eq!(r.status, 200);
        assert_eq!(r.header("custlake-truncated"), Some("true"), "{format}");
    }
    let csv = api.query("csv", cut);
    assert_eq!(csv.text().lines().count(), 4, "{}", csv.text());
    // Exactly as many rows as the limit: whole, not cut.
    let whole = api.query(
        "json",
        serde_json::json!({"sql": "SELECT * FROM (VALUES (1), (2), (3)) t(v)", "limit": 3}),
    );
    assert_eq!(whole.header("custlake-truncated"), Some("false"));
    assert_eq!(whole.json()["truncated"], false);
    assert_eq!(whole.json()["row_count"], 3);
}

/// A result larger than the read-ahead streams before its end is known:
/// the flag follows as an HTTP trailer, to a client that asks for
/// trailers (curl here, compressed or not).
#[test]
fn a_large_result_says_whether_it_was_cut_in_a_trailer() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server_with(dir.path(), |_| {});
    let curl = |limit: u64, extra: &[&str]| {
        let head = dir.path().join("head.txt");
        let body = serde_json::json!({
            "sql": "SELECT value FROM generate_series(1, 1500000)",
            "limit": limit,
        });
        let out = Command::new("curl")
            .args(["-s", "--fail", "-o", "/dev/null", "-D"])
            .arg(&head)
            .args(["-H", "TE: trailers", "-H", "content-type: application/json"])
            .args(["-H", &super::auth_line(addr).trim().replacen(": ", ":", 1)])
            .args(extra)
            .args(["--data", &body.to_string()])
            .arg(format!("http://{addr}/v1/query?format=csv"))
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "{out:?}");
        std::fs::read_to_string(head).unwrap().to_lowercase()
    };
    let cut = curl(1_000_000, &[]);
    // Over 4 MiB of CSV: no header could say it, the trailer does.
    assert!(cut.contains("trailer: custlake-truncated"), "{cut}");
    let (headers, trailers) = cut.split_once("\r\n\r\n").unwrap();
    assert!(!headers.contains("custlake-truncated: "), "{headers}");
    assert!(trailers.contains("custlake-truncated: true"), "{cut}");
    let whole = curl(1_500_000, &["--compressed"]);
    assert!(whole.contains("content-encoding:"), "{whole}");
    assert!(whole.contains("custlake-truncated: false"), "{whole}");
}

#[test]
fn a_result_that_times_out_midway_is_not_a_complete_reply() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server_with(dir.path(), |_| {});
    let mut s = stalled(
        addr,
        "SELECT value FROM generate_series(1, 1000000000)",
        1500,
    );
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw[..raw.len().min(200)]).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(raw.len() > 4 << 20, "streamed past the read-ahead");
    // Chunked transfer without its last (empty) chunk: cut short.
    assert!(
        !raw.ends_with(b"\r\n0\r\n\r\n"),
        "the reply looked complete"
    );
    alive(addr);
}

/// Joins that multiply rows emit batch after batch without reading their
/// input, and the join above collects them in one go: without yielding,
/// the timeout never fired (a 16-way join ran 42 s past a 2 s timeout, a
/// 64-way one grew until the kernel killed the server).
#[test]
fn a_join_that_multiplies_rows_stops_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server_with(dir.path(), |_| {});
    let values: Vec<String> = (1..=60).map(|i| format!("({i})")).collect();
    let n = 16;
    let from: Vec<String> = (0..n).map(|i| format!("t a{i}")).collect();
    let filter: Vec<String> = (1..n).map(|i| format!("a{}.v <> a{i}.v", i - 1)).collect();
    let sql = format!(
        "WITH t(v) AS (VALUES {}) SELECT max(a0.v + a{}.v) FROM {} WHERE {}",
        values.join(", "),
        n - 1,
        from.join(", "),
        filter.join(" AND ")
    );
    for sql in [sql, format!("SELECT count(*) FROM ({}) x", cross(n))] {
        let started = Instant::now();
        let r = query(
            addr,
            "json",
            serde_json::json!({"sql": sql, "timeout_ms": 1500}),
        );
        problem(&r, 504, 1401);
        // The reply comes at the deadline either way; the query's work
        // must stop too, giving its memory back (it ran on for 40 s).
        let deadline = Instant::now() + Duration::from_secs(15);
        while reserved(addr) > 0.0 {
            assert!(
                Instant::now() < deadline,
                "the query still holds {} bytes {:?} after it started",
                reserved(addr),
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    alive(addr);
}

/// The bytes running queries hold of the server's memory pool.
fn reserved(addr: SocketAddr) -> f64 {
    let r = request(addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    let text = r.text();
    text.lines()
        .find_map(|l| l.strip_prefix("custlake_query_memory_reserved_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no memory gauge in {text}"))
}

/// A plain cross join of `n` copies of a 60-row list.
fn cross(n: usize) -> String {
    let tables: Vec<String> = (0..n)
        .map(|i| format!("(SELECT value AS v{i} FROM generate_series(1, 60)) a{i}"))
        .collect();
    format!("SELECT * FROM {}", tables.join(" CROSS JOIN "))
}

#[test]
fn metrics_keep_a_fixed_set_of_method_labels() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    for m in ["FOOBAR", "XMETHOD1", "XMETHOD2"] {
        let r = api.request(m, "/v1/tables", &[], b"");
        assert!(r.status >= 400);
    }
    let metrics = api.request("GET", "/metrics", &[], b"").text();
    assert!(!metrics.contains("FOOBAR") && !metrics.contains("XMETHOD"));
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

#[test]
fn slow_headers_and_surplus_connections_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server_with(dir.path(), |c| {
        c.server.header_read_timeout_ms = 500;
        c.server.max_connections = 2;
    });
    // A head that never completes: the server closes the connection.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(slow);
    // Two idle connections fill the cap; a third is answered 429 at once.
    let a = TcpStream::connect(addr).unwrap();
    let b = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let r = request(addr, "GET", "/healthz", &[], b"");
    problem(&r, 429, 1301);
    drop((a, b));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(request(addr, "GET", "/healthz", &[], b"").status, 200);
}

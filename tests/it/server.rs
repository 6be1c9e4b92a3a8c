//! The HTTP service: a real server on port 0 and a plain HTTP/1.1 client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use crate::common::{ok, sample};

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        b = &b[end + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
    out
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        })
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn query(addr: SocketAddr, format: &str, body: serde_json::Value) -> Reply {
    request(
        addr,
        "POST",
        &format!("/v1/query?format={format}"),
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// The first column of every batch, as text.
fn first_column(
    batches: impl Iterator<Item = datafusion::arrow::record_batch::RecordBatch>,
) -> Vec<String> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;
    let mut out = Vec::new();
    for b in batches {
        let c = cast(b.column(0), &DataType::Utf8).unwrap();
        let c = c.as_string::<i32>();
        out.extend((0..c.len()).map(|i| c.value(i).to_string()));
    }
    out
}

/// A lake with a small sample insurer, and a server over it.
fn server(dir: &Path) -> (tokio::runtime::Runtime, SocketAddr) {
    server_with(dir, |_| {})
}

fn server_with(
    dir: &Path,
    tune: impl FnOnce(&mut custlake::config::Config),
) -> (tokio::runtime::Runtime, SocketAddr) {
    let s = sample(dir, 300, 9);
    ok(dir, &["ingest", "--from", s.to_str().unwrap()]);
    let mut config = custlake::config::Config::embedded();
    config.lake = dir.join("data/lake").to_string_lossy().to_string();
    config.server.body_limit_bytes = 4096;
    tune(&mut config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt
        .block_on(custlake::server::Application::build(
            custlake::lake::Warehouse::quiet(config).unwrap(),
            "127.0.0.1:0",
        ))
        .unwrap();
    let addr = app.local_addr();
    rt.spawn(app.run_until_stopped());
    (rt, addr)
}

fn problem(r: &Reply, status: u16, code: u64) -> serde_json::Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let p = r.json();
    assert_eq!(p["code"], code, "{p}");
    assert_eq!(p["status"], status);
    let detail = p["detail"].as_str().unwrap();
    assert!(
        !detail.contains("/tmp") && !detail.contains("file://"),
        "{detail}"
    );
    p
}

#[test]
fn every_format_returns_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server(dir.path());
    assert_eq!(request(addr, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(request(addr, "GET", "/readyz", &[], b"").status, 200);

    let sql = serde_json::json!({
        "sql": "SELECT policy_no, premium, effective_date FROM policy WHERE product_line = $line ORDER BY policy_no",
        "params": {"line": "motor"},
        "limit": 50
    });
    let json = query(addr, "json", sql.clone());
    assert_eq!(json.status, 200, "{}", json.text());
    let j = json.json();
    let rows = j["rows"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= 50);
    assert_eq!(j["row_count"], rows.len());
    assert_eq!(j["columns"][1]["type"], "decimal(18,2)");
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r["policy_no"].as_str().unwrap().to_string())
        .collect();

    let csv = query(addr, "csv", sql.clone());
    assert!(
        csv.header("content-disposition")
            .unwrap()
            .contains("attachment")
    );
    let text = csv.text();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("policy_no,premium,effective_date"));
    let csv_ids: Vec<String> = lines
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    assert_eq!(csv_ids, ids);

    let nd = query(addr, "ndjson", sql.clone());
    let nd_ids: Vec<String> = nd
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["policy_no"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(nd_ids, ids);

    // Arrow IPC and Parquet parse back to the same rows.
    let arrow = query(addr, "arrow", sql.clone());
    assert_eq!(
        arrow.header("content-type"),
        Some("application/vnd.apache.arrow.stream")
    );
    let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(
        std::io::Cursor::new(arrow.body),
        None,
    )
    .unwrap();
    let arrow_ids = first_column(reader.map(|b| b.unwrap()));
    assert_eq!(arrow_ids, ids);
    let pq = query(addr, "parquet", sql);
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(pq.body),
        )
        .unwrap()
        .build()
        .unwrap();
    let pq_ids = first_column(reader.map(|b| b.unwrap()));
    assert_eq!(pq_ids, ids);

    // Accept works too; an unknown one is refused.
    let r = request(
        addr,
        "POST",
        "/v1/query",
        &[("accept", "text/csv")],
        br#"{"sql": "SELECT 1 AS x"}"#,
    );
    assert_eq!(r.text(), "x\n1\n");
    let r = request(
        addr,
        "POST",
        "/v1/query",
        &[("accept", "image/png")],
        br#"{"sql": "SELECT 1"}"#,
    );
    problem(&r, 406, 1003);

    let tables = request(addr, "GET", "/v1/tables", &[], b"").json();
    let policy = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "policy")
        .unwrap()
        .clone();
    assert_eq!(policy["exists"], true);
    assert!(policy["rows"].as_i64().unwrap() > 0);
    let t = request(addr, "GET", "/v1/tables/source_customer", &[], b"").json();
    assert!(
        t["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "id_number" && f["level"] == "L4")
    );
    problem(
        &request(addr, "GET", "/v1/tables/nope", &[], b""),
        404,
        1201,
    );
}

#[test]
fn bad_requests_get_problem_json_with_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server_with(dir.path(), |c| c.server.min_query_timeout_ms = 1);
    let post = |body: &[u8]| {
        request(
            addr,
            "POST",
            "/v1/query",
            &[("content-type", "application/json")],
            body,
        )
    };
    problem(&post(b"{not json"), 400, 1001);
    problem(&post(br#"{"sql": "SELECT 1", "bogus": 1}"#), 400, 1001);
    problem(&post(&vec![b' '; 10_000]), 413, 1002);
    problem(&post(br#"{"sql": "SELEC 1"}"#), 400, 1101);
    let p = problem(
        &post(br#"{"sql": "SELECT * FROM no_such_table"}"#),
        400,
        1101,
    );
    assert!(p["detail"].as_str().unwrap().contains("no_such_table"));
    for write in [
        "DROP TABLE policy",
        "INSERT INTO policy SELECT * FROM policy",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY policy TO '/tmp/x.csv'",
    ] {
        problem(
            &post(serde_json::json!({"sql": write}).to_string().as_bytes()),
            400,
            1102,
        );
    }
    // Parameters are values, never SQL.
    let r = query(
        addr,
        "json",
        serde_json::json!({
            "sql": "SELECT count(*) AS n FROM policy WHERE policy_no = $no",
            "params": {"no": "x' OR '1'='1"}
        }),
    );
    assert_eq!(r.json()["rows"][0]["n"], 0);
    // A missing parameter, one that is not a value, and a limit too large.
    for body in [
        serde_json::json!({"sql": "SELECT * FROM policy WHERE policy_no = $no"}),
        serde_json::json!({"sql": "SELECT $a", "params": {"a": [1, 2]}}),
        serde_json::json!({"sql": "SELECT 1", "limit": 1_000_000_000_000u64}),
    ] {
        problem(&query(addr, "json", body), 400, 1104);
    }
    problem(
        &query(addr, "xml", serde_json::json!({"sql": "SELECT 1"})),
        400,
        1003,
    );
    // A query that cannot finish in time.
    let r = query(
        addr,
        "json",
        serde_json::json!({
            "sql": "SELECT count(DISTINCT a.policy_no || b.policy_no || c.policy_no) FROM policy a, policy b, policy c",
            "timeout_ms": 50
        }),
    );
    problem(&r, 504, 1401);
    problem(&request(addr, "GET", "/nowhere", &[], b""), 404, 1201);
}

#[test]
fn named_queries_run_with_typed_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server(dir.path());
    let list = request(addr, "GET", "/v1/queries", &[], b"").json();
    let names: Vec<&str> = list["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"customer_lookup") && names.contains(&"policies_expiring"),
        "{names:?}"
    );

    // A known customer, looked up by id and by a differently written phone.
    let any = query(addr, "json", serde_json::json!({
        "sql": "SELECT source_id, phone FROM source_customer WHERE source_system = 'core' AND phone LIKE '+861%' ORDER BY source_id LIMIT 1"
    }))
    .json();
    let id = any["rows"][0]["source_id"].as_str().unwrap().to_string();
    let phone = any["rows"][0]["phone"].as_str().unwrap().to_string();
    let r = request(
        addr,
        "GET",
        &format!("/v1/queries/customer_lookup?id={id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rows"][0]["source_id"], id.as_str());
    let spaced = format!("{}%20{}%20{}", &phone[3..6], &phone[6..10], &phone[10..]);
    let r = request(
        addr,
        "GET",
        &format!("/v1/queries/customer_by_phone?phone={spaced}&format=csv"),
        &[],
        b"",
    );
    assert!(
        r.text().lines().skip(1).any(|l| l.contains(&id)),
        "{}",
        r.text()
    );

    // The renewal list: expiring soonest first, within the window.
    let r = request(
        addr,
        "POST",
        "/v1/queries/policies_expiring",
        &[("content-type", "application/json")],
        br#"{"params": {"as_of": "2026-06-30", "days": 60}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rows = r.json()["rows"].as_array().unwrap().clone();
    assert!(!rows.is_empty());
    let dates: Vec<&str> = rows
        .iter()
        .map(|r| r["expiry_date"].as_str().unwrap())
        .collect();
    assert!(dates.windows(2).all(|w| w[0] <= w[1]));
    assert!(
        dates
            .iter()
            .all(|d| *d >= "2026-06-30" && *d < "2026-08-29"),
        "{dates:?}"
    );

    // Missing, mistyped and unknown parameters name the parameter.
    for (path, name) in [
        ("/v1/queries/customer_lookup", "id"),
        ("/v1/queries/policies_expiring?days=soon", "days"),
        ("/v1/queries/customer_lookup?id=1&color=red", "color"),
    ] {
        let p = problem(&request(addr, "GET", path, &[], b""), 400, 1104);
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("\"{name}\"")),
            "{p}"
        );
    }
    problem(
        &request(addr, "GET", "/v1/queries/nope", &[], b""),
        404,
        1201,
    );

    // What happened shows in the metrics.
    let m = request(addr, "GET", "/metrics", &[], b"").text();
    assert!(m.contains("custlake_http_requests_total"), "{m}");
    assert!(m.contains("route=\"/v1/queries/{name}\""), "{m}");
    assert!(m.contains("custlake_errors_total{code=\"1104\"}"), "{m}");
    assert!(m.contains("custlake_named_query_seconds_bucket"), "{m}");
    assert!(m.contains("custlake_query_rows_returned_total"), "{m}");
}

#[test]
fn a_client_that_hangs_up_cancels_its_query() {
    let dir = tempfile::tempdir().unwrap();
    // One query at a time: a query that kept running would refuse the next.
    let (_rt, addr) = server_with(dir.path(), |c| c.server.max_concurrent_queries = 1);
    let big = serde_json::json!({
        "sql": "SELECT a.policy_no, b.policy_no FROM policy a, policy b",
        "limit": 100_000_000,
        "timeout_ms": 600_000
    })
    .to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/query?format=csv HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{big}",
        big.len()
    )
    .unwrap();
    let mut first = [0u8; 4096];
    let n = s.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // While it streams, a second query is refused with 429 and Retry-After.
    let busy = query(addr, "json", serde_json::json!({"sql": "SELECT 1"}));
    problem(&busy, 429, 1301);
    assert!(busy.header("retry-after").is_some());
    drop(s);
    // Once the client is gone the query is cancelled and its slot freed.
    let mut freed = false;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if query(addr, "json", serde_json::json!({"sql": "SELECT 1"})).status == 200 {
            freed = true;
            break;
        }
    }
    assert!(freed, "the abandoned query kept its slot");
}

#[test]
fn a_query_that_outgrows_the_memory_pool_gets_503_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server_with(dir.path(), |c| c.query.memory_limit_mb = 1);
    // The build side of a hash join cannot spill: two million keys do not
    // fit in one MiB.
    let sql = "SELECT count(*) FROM generate_series(1, 2000000) a(v) \
               JOIN generate_series(1, 2000000) b(v) ON a.v = b.v";
    for format in ["json", "csv", "arrow"] {
        let r = query(addr, format, serde_json::json!({ "sql": sql }));
        problem(&r, 503, 1302);
        assert!(r.header("retry-after").is_some());
    }
    // Nothing crashed, and the memory went back to the pool.
    let ok = query(
        addr,
        "json",
        serde_json::json!({"sql": "SELECT count(*) AS n FROM policy"}),
    );
    assert_eq!(ok.status, 200);
    assert!(ok.json()["rows"][0]["n"].as_i64().unwrap() > 0);
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(crate::common::bin())
        .current_dir(dir.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("serving on http://")
                .nth(1)
                .and_then(|r| r.split_whitespace().next().map(str::to_string))
        })
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(request(addr, "GET", "/healthz", &[], b"").status, 200);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting connections"
    );
}

#[test]
fn new_data_is_visible_to_the_next_query_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server(dir.path());
    let count = || {
        query(
            addr,
            "json",
            serde_json::json!({"sql": "SELECT count(*) AS n FROM consent"}),
        )
        .json()["rows"][0]["n"]
            .as_i64()
            .unwrap()
    };
    let before = count();
    let extra = dir.path().join("more-consents.csv");
    std::fs::write(
        &extra,
        "consent_id,lead_id,purpose,action,channel,recorded,policy_version,withdraw_via\n\
         NEW1,L00000001,SMS,OPT_OUT,APP,2026/06/01 10:00:00,v2.1,app\n\
         NEW2,L00000002,CALL,OPT_IN,TEL,2026/06/02 11:00:00,v2.1,hotline\n",
    )
    .unwrap();
    ok(
        dir.path(),
        &[
            "ingest",
            "--source",
            "telesales",
            "--entity",
            "consent",
            extra.to_str().unwrap(),
        ],
    );
    assert_eq!(count(), before + 2);
}

#[test]
fn customer_lineage_suspects_and_decisions_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, addr) = server(dir.path());
    // Before any resolve: a clear 404.
    let r = request(addr, "GET", "/v1/customers/CU0000000001/lineage", &[], b"");
    problem(&r, 404, 1201);
    ok(dir.path(), &["resolve"]);

    let r = request(addr, "GET", "/v1/customers/CU0000000001/lineage", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["customer_id"], "CU0000000001");
    let records = v["records"].as_array().unwrap();
    assert!(!records.is_empty());
    assert!(
        records
            .iter()
            .all(|x| x["rule"].is_string() && x["linked_by"] == "auto")
    );
    problem(
        &request(addr, "GET", "/v1/customers/NOPE/lineage", &[], b""),
        404,
        1201,
    );

    let r = request(addr, "GET", "/v1/suspects?status=open&limit=5", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.json()["groups"].is_array());
    problem(
        &request(addr, "GET", "/v1/suspects?status=maybe", &[], b""),
        400,
        1104,
    );

    // A merge through the API, then its undo.
    let body =
        serde_json::json!({"customers": ["CU0000000001", "CU0000000002"], "reason": "same person"});
    let r = request(
        addr,
        "POST",
        "/v1/customers/merge",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let event = r.json()["event_id"].as_str().unwrap().to_string();
    let v = request(addr, "GET", "/v1/customers/CU0000000002/lineage", &[], b"").json();
    assert_eq!(
        v["customer_id"], "CU0000000001",
        "a retired id leads to its survivor"
    );
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "dev")
    );
    let bad = serde_json::json!({"customers": ["CU0000000001"], "reason": "x"});
    problem(
        &request(
            addr,
            "POST",
            "/v1/customers/merge",
            &[("content-type", "application/json")],
            bad.to_string().as_bytes(),
        ),
        400,
        1104,
    );
    problem(
        &request(
            addr,
            "POST",
            "/v1/customers/merge",
            &[("content-type", "application/json")],
            b"{\"customers\":",
        ),
        400,
        1001,
    );
    let r = request(
        addr,
        "POST",
        &format!("/v1/merge-events/{event}/undo"),
        &[("content-type", "application/json")],
        b"{\"reason\": \"mistake\"}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = request(addr, "GET", "/v1/customers/CU0000000002/lineage", &[], b"").json();
    assert_eq!(v["customer_id"], "CU0000000002");
}

//! Queries as streams over real connections: a client that hangs up, the
//! memory pool, new data, SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::{problem, query, request, server_with};
use crate::common::ingest_file;

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
        "POST /v1/query?format=csv HTTP/1.1\r\nhost: x\r\n{}content-type: application/json\r\ncontent-length: {}\r\n\r\n{big}",
        super::auth_line(addr),
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
    let api = super::Api::with(dir.path(), |c| c.query.memory_limit_mb = 1);
    // The build side of a hash join cannot spill: two million keys do not
    // fit in one MiB.
    let sql = "SELECT count(*) FROM generate_series(1, 2000000) a(v) \
               JOIN generate_series(1, 2000000) b(v) ON a.v = b.v";
    for format in ["json", "csv", "arrow"] {
        let r = api.query(format, serde_json::json!({ "sql": sql }));
        problem(&r, 503, 1302);
        assert!(r.header("retry-after").is_some());
    }
    // Nothing crashed, and the memory went back to the pool.
    let ok = api.query(
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
    let api = super::Api::new(dir.path());
    let count = || {
        api.query(
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
    ingest_file(dir.path(), "telesales", "consent", &extra);
    assert_eq!(count(), before + 2);
}

#[test]
fn a_lookup_finds_a_record_loaded_after_the_server_started_through_its_bloom_filters() {
    let dir = tempfile::tempdir().unwrap();
    let api = super::Api::new(dir.path());
    let found = |path: &str| {
        let r = api.request("GET", path, &[], b"");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["rows"].as_array().unwrap().len()
    };
    let by_id = "/v1/queries/customer_lookup?system=telesales&id=LNEW1&format=json";
    let by_number = "/v1/queries/customer_by_id_number?id_number=11010519491231002x&format=json";
    assert_eq!(found(by_id), 0);
    assert_eq!(found(by_number), 0);
    let leads = dir.path().join("new-lead.csv");
    std::fs::write(
        &leads,
        "lead_id,cust_kind,cust_name,gender,birthday,cert_type,cert_no,org_code,tax_no,contact_person,tel,email,address,industry,source_channel,team,region,agent_code,created,modified\n\
         LNEW1,IND,王新,男,1949/12/31,ID,11010519491231002X,,,,13800138000,wang@example.com,北京市海淀区中关村大街1号,,TEL,电销中心,north,A00001,2026/06/01,2026/06/01 10:00:00\n",
    )
    .unwrap();
    ingest_file(dir.path(), "telesales", "customer", &leads);
    // The next lookups see the new record: by its source id, and by its
    // document number in lower case.
    assert_eq!(found(by_id), 1);
    assert_eq!(found(by_number), 1);
    // The lookup table's footers went into the metadata cache with their
    // page indexes (none could be read: the counter would not exist).
    let metrics = api.request("GET", "/metrics", &[], b"").text();
    let cached = metrics
        .lines()
        .find(|l| l.starts_with("custlake_page_indexes_cached_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(cached.is_some_and(|n| n >= 1.0), "{metrics}");
    // Every file of the table carries a bloom filter on each lookup column.
    let files: Vec<_> = crate::common::tree(dir.path())
        .into_iter()
        .map(|(p, _)| dir.path().join(p))
        .filter(|p| {
            p.to_string_lossy().contains("/source_customer/")
                && p.extension().is_some_and(|e| e == "parquet")
        })
        .collect();
    assert!(!files.is_empty());
    for f in files {
        let with = bloom_columns(&f);
        for c in ["source_id", "phone", "id_number"] {
            assert!(with.iter().any(|w| w == c), "{f:?}: {with:?}");
        }
        assert!(!with.iter().any(|w| w == "name"), "{f:?}: {with:?}");
    }
}

/// The columns of a Parquet file with a bloom filter in every row group.
fn bloom_columns(file: &std::path::Path) -> Vec<String> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    (0..schema.num_columns())
        .filter(|&i| {
            meta.row_groups()
                .iter()
                .all(|rg| rg.column(i).bloom_filter_offset().is_some())
        })
        .map(|i| schema.column(i).name().to_string())
        .collect()
}

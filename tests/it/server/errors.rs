//! Bad requests get problem+json with stable codes.

use super::{Api, problem};

#[test]
fn bad_requests_get_problem_json_with_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::with(dir.path(), |c| c.server.min_query_timeout_ms = 1);
    let post = |body: &[u8]| {
        api.request(
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
    let r = api.query(
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
        problem(&api.query("json", body), 400, 1104);
    }
    problem(
        &api.query("xml", serde_json::json!({"sql": "SELECT 1"})),
        400,
        1003,
    );
    // A query that cannot finish in time.
    let r = api.query(
        "json",
        serde_json::json!({
            "sql": "SELECT count(DISTINCT a.policy_no || b.policy_no || c.policy_no) FROM policy a, policy b, policy c",
            "timeout_ms": 50
        }),
    );
    problem(&r, 504, 1401);
    problem(&api.request("GET", "/nowhere", &[], b""), 404, 1201);
}

#[test]
fn every_rejection_is_problem_json() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    let json = [("content-type", "application/json")];
    // The query string, the path and the body, each malformed.
    for (method, path, body, status, code) in [
        (
            "POST",
            "/v1/query?format=a&format=b",
            &br#"{"sql": "SELECT 1"}"#[..],
            400,
            1104,
        ),
        ("GET", "/v1/suspects?limit=many", b"", 400, 1104),
        ("GET", "/v1/suspects?limit=-1", b"", 400, 1104),
        (
            "POST",
            "/v1/suspects/G1/approve",
            br#"{"reason": "x"}"#,
            404,
            1201,
        ),
        ("POST", "/v1/query", b"[]", 400, 1001),
        (
            "POST",
            "/v1/query",
            br#"{"sql": "SELECT 1", "limit": -1}"#,
            400,
            1001,
        ),
        ("POST", "/v1/queries/customer_lookup", b"[]", 400, 1001),
        (
            "POST",
            "/v1/customers/merge",
            br#"{"customers": ["CU1", "CU1"], "reason": "x"}"#,
            400,
            1104,
        ),
        ("GET", "/v1/nowhere", b"", 404, 1201),
    ] {
        let r = api.request(method, path, &json, body);
        let p = problem(&r, status, code);
        assert!(
            !p["detail"].as_str().unwrap().is_empty(),
            "{method} {path}: {p}"
        );
    }
    // A method a route does not have: 405 with the methods it has.
    let r = api.request("DELETE", "/v1/query", &[], b"");
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap().contains("POST"));
}

#[test]
fn a_damaged_lake_is_a_server_error_never_the_users_sql() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    let sql = serde_json::json!({"sql": "SELECT count(*) AS n, sum(premium) AS p FROM policy"});
    assert_eq!(api.query("json", sql.clone()).status, 200);
    // A data file of `policy` disappears under the running server.
    let table = dir.path().join("data/lake/hot/policy");
    let mut files = Vec::new();
    let mut stack = vec![table];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.ends_with("_delta_log") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    std::fs::remove_file(&files[0]).unwrap();
    let r = api.query("json", sql);
    let p = problem(&r, 500, 1403);
    assert!(
        !p["detail"].as_str().unwrap().contains("parquet"),
        "no file names in the reply: {p}"
    );
    // The user's own mistakes are still theirs.
    problem(
        &api.query(
            "json",
            serde_json::json!({"sql": "SELECT nope FROM policy"}),
        ),
        400,
        1101,
    );
    problem(
        &api.query("json", serde_json::json!({"sql": "SELECT 1 / 0"})),
        400,
        1101,
    );
}

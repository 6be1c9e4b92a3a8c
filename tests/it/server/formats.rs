//! Every result format returns the same rows; `Accept` negotiates.

use super::{Api, first_column, problem};

#[test]
fn every_format_returns_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    assert_eq!(api.request("GET", "/healthz", &[], b"").status, 200);
    assert_eq!(api.request("GET", "/readyz", &[], b"").status, 200);

    let sql = serde_json::json!({
        "sql": "SELECT policy_no, premium, effective_date FROM policy WHERE product_line = $line ORDER BY policy_no",
        "params": {"line": "motor"},
        "limit": 50
    });
    let json = api.query("json", sql.clone());
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

    let csv = api.query("csv", sql.clone());
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

    let nd = api.query("ndjson", sql.clone());
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
    let arrow = api.query("arrow", sql.clone());
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
    let pq = api.query("parquet", sql);
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
    let r = api.request(
        "POST",
        "/v1/query",
        &[("accept", "text/csv")],
        br#"{"sql": "SELECT 1 AS x"}"#,
    );
    assert_eq!(r.text(), "x\n1\n");
    let r = api.request(
        "POST",
        "/v1/query",
        &[("accept", "image/png")],
        br#"{"sql": "SELECT 1"}"#,
    );
    problem(&r, 406, 1003);

    let tables = api.request("GET", "/v1/tables", &[], b"").json();
    let policy = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "policy")
        .unwrap()
        .clone();
    assert_eq!(policy["exists"], true);
    assert!(policy["rows"].as_i64().unwrap() > 0);
    let t = api
        .request("GET", "/v1/tables/source_customer", &[], b"")
        .json();
    assert!(
        t["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "id_number" && f["level"] == "L4")
    );
    problem(&api.request("GET", "/v1/tables/nope", &[], b""), 404, 1201);
}

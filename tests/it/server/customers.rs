//! Golden customers over HTTP: lineage, suspects, decisions.

use super::{Api, problem};
use crate::common::ok;

#[test]
fn customer_lineage_suspects_and_decisions_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    // Before any resolve: a clear 404.
    let r = api.request("GET", "/v1/customers/CU0000000001/lineage", &[], b"");
    problem(&r, 404, 1201);
    ok(dir.path(), &["resolve"]);

    let r = api.request("GET", "/v1/customers/CU0000000001/lineage", &[], b"");
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
        &api.request("GET", "/v1/customers/NOPE/lineage", &[], b""),
        404,
        1201,
    );
    // Asked again with nothing changed: computed once more (the first
    // answer saw the tables change under it, so it was not kept), then
    // kept, and the same.
    for _ in 0..2 {
        let again = api.request("GET", "/v1/customers/CU0000000001/lineage", &[], b"");
        assert_eq!(again.json(), v);
    }
    let metrics = api.request("GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains("custlake_answer_cache_hits_total"),
        "{metrics}"
    );
    assert!(v["retired_ids"].as_array().unwrap().is_empty(), "{v}");

    let r = api.request("GET", "/v1/suspects?status=open&limit=5", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.json()["groups"].is_array());
    problem(
        &api.request("GET", "/v1/suspects?status=maybe", &[], b""),
        400,
        1104,
    );

    // A merge through the API, then its undo.
    let body =
        serde_json::json!({"customers": ["CU0000000001", "CU0000000002"], "reason": "same person"});
    let r = api.request(
        "POST",
        "/v1/customers/merge",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let event = r.json()["event_id"].as_str().unwrap().to_string();
    let v = api
        .request("GET", "/v1/customers/CU0000000002/lineage", &[], b"")
        .json();
    assert_eq!(
        v["customer_id"], "CU0000000001",
        "a retired id leads to its survivor"
    );
    // The survivor's lineage was kept before the merge: not any more.
    let survivor = api
        .request("GET", "/v1/customers/CU0000000001/lineage", &[], b"")
        .json();
    assert_eq!(survivor["retired_ids"], serde_json::json!(["CU0000000002"]));
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "test-admin")
    );
    let bad = serde_json::json!({"customers": ["CU0000000001"], "reason": "x"});
    problem(
        &api.request(
            "POST",
            "/v1/customers/merge",
            &[("content-type", "application/json")],
            bad.to_string().as_bytes(),
        ),
        400,
        1104,
    );
    problem(
        &api.request(
            "POST",
            "/v1/customers/merge",
            &[("content-type", "application/json")],
            b"{\"customers\":",
        ),
        400,
        1001,
    );
    let r = api.request(
        "POST",
        &format!("/v1/merge-events/{event}/undo"),
        &[("content-type", "application/json")],
        b"{\"reason\": \"mistake\"}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = api
        .request("GET", "/v1/customers/CU0000000002/lineage", &[], b"")
        .json();
    assert_eq!(v["customer_id"], "CU0000000002");
}

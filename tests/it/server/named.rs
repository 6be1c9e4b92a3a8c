//! Named queries run with typed parameters.

use super::{Api, problem};

#[test]
fn named_queries_run_with_typed_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    let list = api.request("GET", "/v1/queries", &[], b"").json();
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
    let any = api.query("json", serde_json::json!({
        "sql": "SELECT source_id, phone FROM source_customer WHERE source_system = 'core' AND phone LIKE '+861%' ORDER BY source_id LIMIT 1"
    }))
    .json();
    let id = any["rows"][0]["source_id"].as_str().unwrap().to_string();
    let phone = any["rows"][0]["phone"].as_str().unwrap().to_string();
    let r = api.request(
        "GET",
        &format!("/v1/queries/customer_lookup?id={id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rows"][0]["source_id"], id.as_str());
    let spaced = format!("{}%20{}%20{}", &phone[3..6], &phone[6..10], &phone[10..]);
    let r = api.request(
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
    let r = api.request(
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
        let p = problem(&api.request("GET", path, &[], b""), 400, 1104);
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("\"{name}\"")),
            "{p}"
        );
    }
    problem(&api.request("GET", "/v1/queries/nope", &[], b""), 404, 1201);

    // What happened shows in the metrics.
    let m = api.request("GET", "/metrics", &[], b"").text();
    assert!(m.contains("custlake_http_requests_total"), "{m}");
    assert!(m.contains("route=\"/v1/queries/{name}\""), "{m}");
    assert!(m.contains("custlake_errors_total{code=\"1104\"}"), "{m}");
    assert!(m.contains("custlake_named_query_seconds_bucket"), "{m}");
    assert!(m.contains("custlake_query_rows_returned_total"), "{m}");
}

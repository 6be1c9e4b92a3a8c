//! The OpenAPI document is generated from the handlers: every route is in
//! it, with the server's own bounds, and each named query has its typed
//! parameters. (`.ci/run` checks it against the live server with
//! schemathesis, every check.)

use super::Api;

#[test]
fn the_document_describes_every_route_and_named_query() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::with(dir.path(), |c| c.server.max_row_limit = 12345);
    let r = api.request("GET", "/openapi.json", &[], b"");
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/query", "post"),
        ("/v1/queries", "get"),
        ("/v1/tables", "get"),
        ("/v1/tables/{name}", "get"),
        ("/v1/customers/{id}/lineage", "get"),
        ("/v1/customers/merge", "post"),
        ("/v1/customers/{id}/split", "post"),
        ("/v1/merge-events/{id}/undo", "post"),
        ("/v1/suspects", "get"),
        ("/v1/suspects/{group}/{action}", "post"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        // Every error a route gives is problem+json with a stable code.
        for (status, resp) in op["responses"].as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    resp["content"]["application/problem+json"].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
    }
    // One path per named query, with its parameters typed and required
    // where they have no default.
    let list = api.request("GET", "/v1/queries", &[], b"").json();
    for q in list["queries"].as_array().unwrap() {
        let name = q["name"].as_str().unwrap();
        let get = &paths[&format!("/v1/queries/{name}")]["get"];
        let params = get["parameters"].as_array().unwrap();
        for p in q["params"].as_array().unwrap() {
            let doc_p = params
                .iter()
                .find(|x| x["name"] == p["name"])
                .unwrap_or_else(|| panic!("{name}: {p} is not documented"));
            assert_eq!(doc_p["required"], p["required"], "{name}: {p}");
        }
        let limit = params.iter().find(|x| x["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["maximum"], 12345, "the configured bound");
    }
    let days = paths["/v1/queries/policies_expiring"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "days")
        .unwrap()
        .clone();
    assert_eq!(days["schema"]["type"], "integer");
    assert_eq!(days["schema"]["maximum"], 36600.0);
    // The problem body is one schema with the stable code.
    assert!(doc["components"]["schemas"]["Problem"]["properties"]["code"].is_object());
}

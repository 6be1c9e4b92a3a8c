//! Access control as an attacker tries it. The attack matrix is data: each
//! case is a role, a request and what must hold of the answer; adding a
//! case is one line. Whatever the answer (a result, a 400, a 403), its
//! body must hold no value the role may not see: no identity number,
//! phone or bank account in clear for a role that sees them masked, and
//! no customer id outside the role's rows.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::{Api, problem, token};
use crate::common::{fails, ok};

/// What a case's answer must show besides holding no secret.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Any status; only the secrets check applies.
    Hidden,
    /// Refused with this status.
    Refused(u16),
    /// A 200 (and no secret in it).
    Fine,
    /// A 200 whose first row's first value is 0 (a count that must find
    /// nothing: a predicate on a masked value, a filtered row).
    Zero,
    /// A 200 with exactly the rows the role may see, by this admin query.
    Like(&'static str),
}

/// A request of the matrix.
#[derive(Debug, Clone, Copy)]
enum Req {
    /// `POST /v1/query` with this SQL (`{ID}`, `{PHONE}`, `{CUSTOMER}`,
    /// `{AGENT}`, `{TEAM}` stand for real values an attacker guessed: an
    /// identity number and phone of a customer out of the role's sight).
    Sql(&'static str),
    /// `POST /v1/query` with this SQL and these parameters (JSON).
    SqlWith(&'static str, &'static str),
    /// `GET /v1/queries/{name}?{query}`.
    Named(&'static str, &'static str),
    /// `GET` a path.
    Get(&'static str),
}

use Expect::*;
use Req::*;

#[rustfmt::skip]
const MATRIX: &[(&str, Req, Expect)] = &[
    // Masked columns, read straight and through functions and casts.
    ("analyst", Sql("SELECT id_number, phone, name FROM customer"), Hidden),
    ("analyst", Sql("SELECT substr(id_number, 4, 11) AS s FROM customer"), Hidden),
    ("analyst", Sql("SELECT regexp_replace(id_number, '[*]', '', 'g') AS r FROM customer"), Hidden),
    ("analyst", Sql("SELECT CAST(id_number AS BIGINT) AS n FROM customer"), Hidden),
    ("analyst", Sql("SELECT CAST(phone AS INT) AS n FROM customer"), Hidden),
    ("analyst", Sql("SELECT arrow_cast(id_number, 'Int64') FROM customer"), Hidden),
    ("analyst", Sql("SELECT concat(id_number, '|', phone) AS c FROM source_customer"), Hidden),
    ("analyst", Sql("SELECT bank_account FROM payment"), Hidden),
    ("analyst", Sql("SELECT max(id_number), min(phone), string_agg(id_number, ',') FROM customer"), Hidden),
    ("analyst", Sql("SELECT first_value(id_number) OVER (ORDER BY customer_id) AS f FROM customer"), Hidden),
    ("analyst", Sql("SELECT id_number FROM customer UNION ALL SELECT id_number FROM source_customer"), Hidden),
    ("analyst", Sql("SELECT c.id_number FROM customer c JOIN customer_xref x USING (customer_id)"), Hidden),
    ("analyst", Sql("SELECT * FROM customer_policy JOIN customer USING (customer_id)"), Hidden),
    ("analyst", Sql("SELECT (SELECT max(id_number) FROM source_customer) AS m"), Hidden),
    ("analyst", Sql("SELECT value, detail, raw FROM quarantine"), Fine),
    ("analyst", Sql("SELECT match_keys FROM customer_xref"), Fine),
    // The registry holds organisations' names and addresses as the customer
    // table does; joined on the USCC, clear values there would unmask them.
    ("analyst", Sql("SELECT count(*) FROM business_registry WHERE registered_name NOT LIKE '%*%' OR address NOT LIKE '%*%'"), Zero),
    ("analyst", Sql("SELECT count(*) FROM business_registry r JOIN customer c USING (uscc) WHERE r.registered_name = c.name AND c.name NOT LIKE '%*%'"), Zero),
    // Predicates on masked values find nothing an admin would.
    ("analyst", Sql("SELECT count(*) FROM customer WHERE id_number = '{ID}'"), Zero),
    ("analyst", Sql("SELECT count(*) FROM customer WHERE phone = '{PHONE}'"), Zero),
    ("analyst", Sql("SELECT count(*) FROM customer WHERE substr(id_number, 4, 8) = substr('{ID}', 4, 8)"), Zero),
    ("analyst", Sql("SELECT count(*) FROM source_customer WHERE id_number LIKE '%{IDMID}%'"), Zero),
    ("analyst", SqlWith("SELECT count(*) FROM customer WHERE id_number = $v", r#"{"v": "{ID}"}"#), Zero),
    ("steward", SqlWith("SELECT count(*) FROM customer WHERE customer_id = $c", r#"{"c": "{CUSTOMER}"}"#), Zero),
    // Plans and catalogs show structure, never values or the salt.
    ("analyst", Sql("EXPLAIN SELECT * FROM customer WHERE id_number = '1'"), Fine),
    ("analyst", Sql("EXPLAIN VERBOSE SELECT id_number FROM customer"), Fine),
    ("analyst", Sql("EXPLAIN ANALYZE SELECT id_number FROM customer"), Fine),
    ("analyst", Sql("SELECT * FROM information_schema.columns"), Fine),
    ("analyst", Sql("SHOW TABLES"), Fine),
    ("analyst", Sql("SHOW COLUMNS FROM customer"), Fine),
    ("analyst", Sql("SELECT count(*) FROM customer_policy p JOIN customer_claim c USING (customer_id)"), Fine),
    // Tables outside the role, and ways around the catalog.
    ("analyst", Sql("SELECT * FROM audit_log"), Refused(400)),
    ("analyst", Sql("SELECT * FROM 'file:///etc/passwd'"), Refused(400)),
    ("analyst", Sql("SELECT * FROM read_parquet('data/lake/hot/customer')"), Refused(400)),
    ("analyst", Sql("SELECT * FROM datafusion.public.audit_log"), Refused(400)),
    ("analyst", Sql("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION 'data/lake/hot/customer'"), Refused(400)),
    // Telesales: no free SQL; named queries see only the agent's customers.
    ("telesales", Sql("SELECT 1"), Refused(403)),
    ("telesales", Named("customer_count", ""), Like("SELECT customer_type, count(*) AS customers FROM customer WHERE agent_id = '{AGENT}' GROUP BY 1 ORDER BY 1")),
    ("telesales", Named("customer_lookup", "system=core&id={SOURCE}"), Like("SELECT 1 WHERE false")),
    ("telesales", Named("customer_lookup", "system=core&id=x'%20OR%20'1'='1"), Like("SELECT 1 WHERE false")),
    ("telesales", Named("customer_by_phone", "phone={PHONE}"), Like("SELECT 1 WHERE false")),
    ("telesales", Named("quarantine_summary", ""), Refused(403)),
    // A filter on a column masked to NULL finds nothing, as SQL says
    // (Delta's scan took the folded `NULL` filter and returned every row).
    ("analyst", Sql("SELECT count(*) FROM customer WHERE gender = 'M'"), Zero),
    ("analyst", Sql("SELECT count(*) FROM (SELECT customer_id FROM customer WHERE gender <> 'M' LIMIT 5) x"), Zero),
    // Its named queries as table functions, and nothing around them.
    ("telesales", Sql("SELECT * FROM customer_count() WHERE customers > 0"), Like("SELECT customer_type, count(*) AS customers FROM customer WHERE agent_id = '{AGENT}' GROUP BY 1 ORDER BY 1")),
    ("telesales", Sql("SELECT * FROM customer_count() c, customer x"), Refused(403)),
    ("telesales", Sql("WITH customer AS (SELECT 1) SELECT * FROM customer_count(), customer"), Refused(403)),
    ("telesales", Sql("SELECT * FROM customer_count() WHERE customer_type IN (SELECT customer_type FROM source_customer)"), Refused(403)),
    ("telesales", Sql("SELECT * FROM quarantine_summary()"), Refused(403)),
    ("telesales", Sql("SELECT * FROM customer_lookup('core', '{SOURCE}')"), Like("SELECT 1 WHERE false")),
    ("telesales", Named("audit_volume", ""), Refused(403)),
    ("telesales", Named("customer_count", "limit=100000"), Refused(403)),
    ("telesales", Get("/v1/customers/{CUSTOMER}/lineage"), Refused(404)),
    ("telesales", Get("/v1/tables/audit_log"), Refused(404)),
    ("telesales", Get("/v1/suspects"), Fine),
    ("telesales", Get("/metrics"), Refused(403)),
    // Stewards: their teams' customers, identity numbers masked.
    ("steward", Sql("SELECT count(*) AS n FROM customer"), Like("SELECT count(*) AS n FROM customer WHERE owning_team = '{TEAM}'")),
    ("steward", Sql("SELECT customer_id, id_number, phone FROM customer"), Fine),
    ("steward", Sql("SELECT * FROM customer_xref"), Fine),
    ("steward", Sql("SELECT CAST(name AS INT) FROM customer"), Hidden),
    ("steward", Sql("SELECT count(*) FROM customer WHERE customer_id = '{CUSTOMER}'"), Zero),
    // An error only a hidden row raises would tell that it exists: the
    // statement's predicates run above the row filter, never below it.
    ("steward", Sql("SELECT count(*) FROM customer_xref WHERE 1/(CASE WHEN customer_id = '{CUSTOMER}' THEN 0 ELSE 1 END) = 1"), Fine),
    ("steward", Sql("SELECT count(*) FROM suspect_group WHERE 1/(CASE WHEN customer_id = '{CUSTOMER}' THEN 0 ELSE 1 END) = 1"), Hidden),
    ("steward", Sql("SELECT count(*) FROM customer WHERE 1/(CASE WHEN customer_id = '{CUSTOMER}' THEN 0 ELSE 1 END) = 1"), Fine),
    ("steward", Sql("SELECT match_keys FROM customer_xref"), Fine),
    ("steward", Sql("SELECT value, detail FROM quarantine"), Fine),
    ("steward", Sql("SELECT * FROM policy"), Refused(400)),
    ("steward", Get("/v1/customers/{CUSTOMER}/lineage"), Refused(404)),
    // The auditor: the audit trail and nothing else.
    ("auditor", Sql("SELECT * FROM customer"), Refused(400)),
    ("auditor", Sql("SELECT * FROM customer_policy"), Refused(400)),
    ("auditor", Named("customer_lookup", "id=x"), Refused(403)),
    ("auditor", Get("/v1/customers/{CUSTOMER}/lineage"), Refused(404)),
    // The role's row cap.
    ("analyst", Sql("LIMIT:100000000"), Refused(403)),
    // The role's longest query time: up to it, fine; past it, refused.
    ("analyst", Sql("TIMEOUT:300000"), Fine),
    ("analyst", Sql("TIMEOUT:300001"), Refused(403)),
    ("telesales", Named("customer_count", "timeout_ms=30000"), Fine),
    ("telesales", Named("customer_count", "timeout_ms=60000"), Refused(403)),
    // Separation of duties: an admin does not read the audit trail.
    ("admin", Sql("SELECT * FROM audit_log"), Refused(400)),
    ("admin", Named("audit_volume", ""), Refused(403)),
];

/// Rows of a JSON result.
fn rows(body: &serde_json::Value) -> Vec<serde_json::Value> {
    body["rows"].as_array().cloned().unwrap_or_default()
}

fn texts(api: &Api, sql: &str) -> Vec<Vec<String>> {
    let r = api.query(
        "json",
        serde_json::json!({ "sql": sql, "limit": 1_000_000 }),
    );
    assert_eq!(r.status, 200, "{sql}: {}", r.text());
    let cols: Vec<String> = r.json()["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    rows(&r.json())
        .iter()
        .map(|row| {
            cols.iter()
                .map(|c| match &row[c] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    v => v.to_string(),
                })
                .collect()
        })
        .collect()
}

struct Lake {
    api: Api,
    tokens: HashMap<&'static str, String>,
    vars: Vec<(&'static str, String)>,
    /// Per role, the values its answers must never hold.
    secrets: HashMap<&'static str, Vec<String>>,
}

fn lake(dir: &Path) -> Lake {
    let api = Api::new(dir);
    ok(dir, &["resolve"]);
    let agent = texts(
        &api,
        "SELECT agent_id FROM customer WHERE agent_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )[0][0]
        .clone();
    let team = texts(
        &api,
        "SELECT owning_team FROM customer WHERE owning_team IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )[0][0]
        .clone();
    let all = texts(
        &api,
        "SELECT customer_id, id_number, phone, agent_id, owning_team FROM customer",
    );
    let sources = texts(&api, "SELECT id_number, phone FROM source_customer");
    let banks = texts(&api, "SELECT bank_account FROM payment");
    let long = |s: &String| s.len() >= 8;
    let mut ids: BTreeSet<String> = all.iter().map(|r| r[1].clone()).filter(long).collect();
    ids.extend(sources.iter().map(|r| r[0].clone()).filter(long));
    // An organisation's identity number is its credit code, which is L2
    // (public) in its own column: not a secret.
    for r in texts(
        &api,
        "SELECT uscc FROM customer UNION SELECT uscc FROM source_customer",
    ) {
        ids.remove(&r[0]);
    }
    let mut phones: BTreeSet<String> = all.iter().map(|r| r[2].clone()).filter(long).collect();
    phones.extend(sources.iter().map(|r| r[1].clone()).filter(long));
    let mut banks: BTreeSet<String> = banks.iter().map(|r| r[0].clone()).filter(long).collect();
    // The rejected values a quarantine holds (as secret as stored ones), and
    // the hashes of identity numbers and phones the resolver keeps.
    for r in texts(
        &api,
        "SELECT value FROM quarantine WHERE field IN ('id_number', 'phone', 'bank_account')",
    ) {
        if long(&r[0]) {
            banks.insert(r[0].clone());
        }
    }
    for r in texts(
        &api,
        "SELECT match_keys FROM customer_xref WHERE match_keys IS NOT NULL",
    ) {
        if long(&r[0]) {
            banks.insert(r[0].clone());
        }
    }
    let own_phones: BTreeSet<String> = all
        .iter()
        .filter(|r| r[3] == agent)
        .map(|r| r[2].clone())
        .collect();
    let quoted = |rows: Vec<&Vec<String>>| -> Vec<String> {
        rows.iter().map(|r| format!("\"{}\"", r[0])).collect()
    };
    let not_agent = quoted(all.iter().filter(|r| r[3] != agent).collect());
    let not_team = quoted(all.iter().filter(|r| r[4] != team).collect());
    let every_customer = quoted(all.iter().collect());
    let masked: Vec<String> = ids.iter().chain(&phones).chain(&banks).cloned().collect();
    let mut secrets = HashMap::new();
    secrets.insert("analyst", masked.clone());
    let mut tele: Vec<String> = ids.iter().chain(&banks).cloned().collect();
    tele.extend(phones.difference(&own_phones).cloned());
    tele.extend(not_agent);
    secrets.insert("telesales", tele);
    let mut stew = masked.clone();
    stew.extend(not_team);
    secrets.insert("steward", stew);
    let mut aud = masked;
    aud.extend(every_customer);
    secrets.insert("auditor", aud);
    // A customer and source record of somebody else's, with their numbers.
    let other = all
        .iter()
        .find(|r| {
            r[3] != agent
                && r[4] != team
                && r[1].len() == 18
                && ids.contains(&r[1])
                && long(&r[2])
                && !own_phones.contains(&r[2])
        })
        .expect("a customer of another agent and team")
        .clone();
    let source = texts(
        &api,
        &format!(
            "SELECT source_id FROM customer_xref WHERE customer_id = '{}' AND source_system = 'core'",
            other[0]
        ),
    )
    .first()
    .map(|r| r[0].clone())
    .unwrap_or_else(|| "C0".into());
    let vars = vec![
        ("{CUSTOMER}", other[0].clone()),
        ("{ID}", other[1].clone()),
        ("{IDMID}", other[1][6..14].to_string()),
        ("{PHONE}", other[2].clone()),
        ("{AGENT}", agent.clone()),
        ("{TEAM}", team.clone()),
        ("{SOURCE}", source),
    ];
    // Where the server keeps the lake is its own: no answer (an EXPLAIN's
    // plan, an error) names the directory, as a path or as a store key.
    let root = dir.to_string_lossy().trim_start_matches('/').to_string();
    for s in secrets.values_mut() {
        s.push(root.clone());
    }
    secrets.insert("admin", Vec::new());
    let mut tokens = HashMap::new();
    tokens.insert("admin", api.admin.clone());
    tokens.insert("analyst", token(dir, "ann", "analyst", &[]));
    tokens.insert(
        "telesales",
        token(dir, "tim", "telesales", &["--agent-id", &agent]),
    );
    tokens.insert("steward", token(dir, "sue", "steward", &["--team", &team]));
    tokens.insert("auditor", token(dir, "al", "auditor", &[]));
    Lake {
        api,
        tokens,
        vars,
        secrets,
    }
}

impl Lake {
    fn fill(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (k, v) in &self.vars {
            s = s.replace(k, v);
        }
        s
    }

    /// `req` as `role` to the service `api` (the lake's, or another over
    /// the same lake).
    fn send_to(&self, api: &Api, role: &str, req: Req) -> super::Reply {
        let auth = format!("Bearer {}", self.tokens[role]);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        match req {
            Sql(sql) => {
                let body = if let Some(n) = sql.strip_prefix("LIMIT:") {
                    serde_json::json!({"sql": "SELECT 1", "limit": n.parse::<u64>().unwrap()})
                } else if let Some(ms) = sql.strip_prefix("TIMEOUT:") {
                    serde_json::json!({"sql": "SELECT 1", "timeout_ms": ms.parse::<u64>().unwrap()})
                } else {
                    // Past any default limit, within the role's cap
                    // (telesales: 10,000 rows).
                    let limit = if role == "telesales" {
                        10_000
                    } else {
                        1_000_000
                    };
                    serde_json::json!({"sql": self.fill(sql), "limit": limit})
                };
                api.request(
                    "POST",
                    "/v1/query?format=json",
                    &headers,
                    body.to_string().as_bytes(),
                )
            }
            SqlWith(sql, params) => {
                let params: serde_json::Value = serde_json::from_str(&self.fill(params)).unwrap();
                let body = serde_json::json!({"sql": self.fill(sql), "params": params});
                api.request(
                    "POST",
                    "/v1/query?format=json",
                    &headers,
                    body.to_string().as_bytes(),
                )
            }
            Named(name, query) => api.request(
                "GET",
                &format!("/v1/queries/{name}?{}", self.fill(query)),
                &headers,
                b"",
            ),
            Get(path) => api.request("GET", &self.fill(path), &headers, b""),
        }
    }
}

#[test]
fn no_case_of_the_attack_matrix_reveals_a_masked_value_or_a_filtered_row() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let failures = matrix_failures(&lake, &lake.api);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The matrix again with every statement run on an Apache Ballista
/// cluster (a scheduler and two executors over the same lake): the masks
/// and row filters travel inside the plans the executors run, and each
/// `Like` case is compared with the local engine's answer.
#[test]
fn the_attack_matrix_holds_on_a_ballista_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut lake = lake(d);
    let cluster = crate::cluster::start(d, &d.join("data/lake"));
    // The cluster's ports answer anyone: no answer names the scheduler.
    for (role, s) in lake.secrets.iter_mut() {
        if *role != "admin" {
            s.push(cluster.scheduler.clone());
        }
    }
    let on_cluster = Api::over(
        d,
        super::config_for(d, |c| {
            c.server.engine = custlake::config::Engine::Ballista;
            c.server.scheduler_url = cluster.scheduler.clone();
        }),
    );
    // It is the cluster that answers.
    let plan = lake.send_to(
        &on_cluster,
        "analyst",
        Sql("EXPLAIN SELECT count(DISTINCT province) FROM customer"),
    );
    assert!(plan.text().contains("TierScanExec"), "{}", plan.text());
    let failures = matrix_failures(&lake, &on_cluster);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The cases of the matrix that fail when sent to `api` (`Like` answers
/// compared with the lake's own service).
fn matrix_failures(lake: &Lake, api: &Api) -> Vec<String> {
    let mut failures = Vec::new();
    for (role, req, expect) in MATRIX {
        let r = lake.send_to(api, role, *req);
        let body = r.text();
        if let Some(leak) = lake.secrets[role]
            .iter()
            .find(|s| body.contains(s.as_str()))
        {
            failures.push(format!("{role} {req:?}: revealed {leak}"));
            continue;
        }
        let fail = match expect {
            Hidden => None,
            Fine => (r.status != 200).then(|| format!("status {}: {body}", r.status)),
            Refused(status) => (r.status != *status)
                .then(|| format!("status {} (wanted {status}): {body}", r.status)),
            Zero => {
                let first = rows(&r.json())
                    .first()
                    .and_then(|row| row.as_object().and_then(|o| o.values().next().cloned()));
                (r.status != 200 || first != Some(serde_json::json!(0)))
                    .then(|| format!("status {}, {body}", r.status))
            }
            Like(sql) => {
                let want = lake
                    .api
                    .query("json", serde_json::json!({ "sql": lake.fill(sql) }));
                (r.status != 200 || rows(&r.json()) != rows(&want.json()))
                    .then(|| format!("got {body}; an admin's {sql} gives {}", want.text()))
            }
        };
        if let Some(f) = fail {
            failures.push(format!("{role} {req:?}: {f}"));
        }
    }
    failures
}

#[test]
fn masks_are_the_declared_ones_and_an_admin_sees_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let sql = "SELECT customer_id, phone, id_number, birth_date FROM customer WHERE id_number IS NOT NULL AND birth_date IS NOT NULL ORDER BY customer_id LIMIT 1";
    let admin = lake.api.query("json", serde_json::json!({ "sql": sql }));
    let a = &rows(&admin.json())[0];
    let auth = format!("Bearer {}", lake.tokens["analyst"]);
    let r = lake.api.request(
        "POST",
        "/v1/query",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        serde_json::json!({ "sql": sql }).to_string().as_bytes(),
    );
    let m = &rows(&r.json())[0];
    assert_eq!(m["customer_id"], a["customer_id"]);
    let keep = |s: &str| custlake::schema::mask_keep(s, 3, 4);
    assert_eq!(m["id_number"], keep(a["id_number"].as_str().unwrap()));
    assert_eq!(m["phone"], keep(a["phone"].as_str().unwrap()));
    let year = &a["birth_date"].as_str().unwrap()[..4];
    assert_eq!(m["birth_date"], format!("{year}-01-01"));
    // The tables list and the table's fields say what the role sees.
    let t = lake.api.request(
        "GET",
        "/v1/tables/customer",
        &[("authorization", auth.as_str())],
        b"",
    );
    let fields = t.json()["fields"].as_array().unwrap().clone();
    let id = fields.iter().find(|f| f["name"] == "id_number").unwrap();
    assert_eq!(id["access"], "masked");
    let list = lake.api.request(
        "GET",
        "/v1/tables",
        &[("authorization", auth.as_str())],
        b"",
    );
    assert!(!list.text().contains("\"audit_log\""), "{}", list.text());
}

#[test]
fn a_request_needs_a_valid_credential_and_a_revoked_one_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    let d = dir.path();
    for auth in [
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer cl_nope_nope",
        "Bearer a.b.c",
    ] {
        let r = api.request("GET", "/v1/tables", &[("authorization", auth)], b"");
        problem(&r, 401, 1601);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"custlake\"")
        );
    }
    // Health needs nothing; the API document and metrics do.
    assert_eq!(
        api.request("GET", "/healthz", &[("authorization", "")], b"")
            .status,
        200
    );
    assert_eq!(
        api.request("GET", "/readyz", &[("authorization", "")], b"")
            .status,
        200
    );
    problem(
        &api.request("GET", "/openapi.json", &[("authorization", "")], b""),
        401,
        1601,
    );
    problem(
        &api.request("GET", "/metrics", &[("authorization", "")], b""),
        401,
        1601,
    );
    problem(
        &api.request("GET", "/no/such/route", &[("authorization", "")], b""),
        401,
        1601,
    );
    let t = token(d, "ann", "analyst", &[]);
    let auth = format!("Bearer {t}");
    let h = [("authorization", auth.as_str())];
    assert_eq!(api.request("GET", "/v1/tables", &h, b"").status, 200);
    assert_eq!(api.request("GET", "/openapi.json", &h, b"").status, 200);
    problem(&api.request("GET", "/metrics", &h, b""), 403, 1602);
    // Revoked by another process: the next request fails, no restart.
    let id = t.split('_').nth(1).unwrap().to_string();
    let out = ok(d, &["token", "revoke", &id]);
    assert!(out.contains(&id), "{out}");
    let r = api.request("GET", "/v1/tables", &h, b"");
    let p = problem(&r, 401, 1601);
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");
    // A secret changed by one character is unknown, not revoked.
    let mut wrong = t.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let other = token(d, "bob", "analyst", &[]);
    let mut forged = other.clone();
    let c = forged.pop().unwrap();
    forged.push(if c == '0' { '1' } else { '0' });
    let p = problem(
        &api.request(
            "GET",
            "/v1/tables",
            &[("authorization", &format!("Bearer {forged}"))],
            b"",
        ),
        401,
        1601,
    );
    assert!(p["detail"].as_str().unwrap().contains("not known"), "{p}");
    // Listing never shows a secret; an unknown role or too long a life is refused.
    let list = ok(d, &["token", "list", "--json"]);
    assert!(!list.contains(other.split('_').nth(2).unwrap()), "{list}");
    assert!(list.contains("\"state\":\"revoked\""), "{list}");
    fails(d, &["token", "create", "--user", "x", "--role", "root"]);
    fails(
        d,
        &[
            "token",
            "create",
            "--user",
            "x",
            "--role",
            "analyst",
            "--expires",
            "9999d",
        ],
    );
    fails(
        d,
        &[
            "token",
            "create",
            "--user",
            "x",
            "--role",
            "analyst",
            "--grant",
            "admin",
            "--grant-expires",
            "30d",
        ],
    );
}

#[test]
fn a_token_expires_on_its_own_and_a_temporary_grant_ends() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::new(dir.path());
    let t = token(
        dir.path(),
        "eve",
        "analyst",
        &[
            "--expires",
            "1m",
            "--grant",
            "steward",
            "--grant-expires",
            "1m",
        ],
    );
    let auth = format!("Bearer {t}");
    let h = [("authorization", auth.as_str())];
    // While the grant lasts the token acts as a steward (no payments).
    let r = api.request(
        "POST",
        "/v1/query",
        &[h[0], ("content-type", "application/json")],
        br#"{"sql":"SELECT count(*) FROM payment"}"#,
    );
    problem(&r, 400, 1101);
    // The token's record, made to have expired: rewritten as an expiry
    // would find it (a minute cannot be waited for in a test).
    let lake = custlake::lake::Lake::new(&{
        let mut c = custlake::config::Config::embedded();
        c.lake = dir.path().join("data/lake").to_string_lossy().to_string();
        c
    })
    .unwrap();
    let rt = custlake::runtime(Some(1)).unwrap();
    rt.block_on(async {
        let v = custlake::security::tokens::read(&lake).await.unwrap();
        let mut set = v.value.clone();
        for r in &mut set.tokens {
            if r.user == "eve" {
                r.expires_at = "2020-01-01T00:00:00Z".into();
            }
        }
        custlake::lake::catalog::write(&lake, "security/tokens", v.version, &set)
            .await
            .unwrap();
    });
    let p = problem(&api.request("GET", "/v1/tables", &h, b""), 401, 1601);
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
}

#[test]
fn a_jwt_signed_with_the_configured_key_is_a_principal() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-shared-secret-of-at-least-32-bytes!";
    let api = Api::with(dir.path(), |c| {
        c.security.jwt.algorithm = "HS256".into();
        c.security.jwt.secret = serde_json::from_value(serde_json::json!(secret)).unwrap();
        c.security.jwt.issuer = "https://idp.example".into();
    });
    let now = chrono::Utc::now().timestamp();
    let sign =
        |claims: serde_json::Value| custlake::security::jwt::sign_hs256(secret.as_bytes(), &claims);
    let good = sign(
        serde_json::json!({"sub": "li", "role": "analyst", "iss": "https://idp.example", "exp": now + 600}),
    );
    let r = api.request(
        "POST",
        "/v1/query",
        &[
            ("authorization", &format!("Bearer {good}")),
            ("content-type", "application/json"),
        ],
        br#"{"sql":"SELECT id_number FROM source_customer LIMIT 1"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for bad in [
        sign(
            serde_json::json!({"sub": "li", "role": "analyst", "iss": "https://idp.example", "exp": now - 1}),
        ),
        sign(
            serde_json::json!({"sub": "li", "role": "analyst", "iss": "https://evil.example", "exp": now + 600}),
        ),
        sign(
            serde_json::json!({"sub": "li", "role": "root", "iss": "https://idp.example", "exp": now + 600}),
        ),
        custlake::security::jwt::sign_hs256(
            b"another-secret-another-secret-another",
            &serde_json::json!({"sub": "li", "role": "admin", "iss": "https://idp.example", "exp": now + 600}),
        ),
    ] {
        problem(
            &api.request(
                "GET",
                "/v1/tables",
                &[("authorization", &format!("Bearer {bad}"))],
                b"",
            ),
            401,
            1601,
        );
    }
}

#[test]
fn a_principal_over_its_rate_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::with(dir.path(), |c| {
        let a = c.roles.get_mut("analyst").unwrap();
        a.rate_per_second = Some(1);
        a.burst = Some(3);
    });
    let t = token(dir.path(), "ann", "analyst", &[]);
    let other = token(dir.path(), "ben", "analyst", &[]);
    let h = |t: &str| format!("Bearer {t}");
    let statuses: Vec<u16> = (0..6)
        .map(|_| {
            api.request("GET", "/v1/queries", &[("authorization", &h(&t))], b"")
                .status
        })
        .collect();
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    let r = api.request("GET", "/v1/queries", &[("authorization", &h(&t))], b"");
    problem(&r, 429, 1301);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // Another principal of the same role has a bucket of its own.
    assert_eq!(
        api.request("GET", "/v1/queries", &[("authorization", &h(&other))], b"")
            .status,
        200
    );
}

#[test]
fn the_cli_runs_sql_as_a_tokens_principal_also_in_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let d = dir.path();
    let id = lake
        .vars
        .iter()
        .find(|(k, _)| *k == "{ID}")
        .unwrap()
        .1
        .clone();
    let sql = format!(
        "SELECT id_number FROM customer WHERE customer_id = '{}'",
        lake.vars[0].1
    );
    let clear = ok(d, &["sql", "--format", "csv", &sql]);
    assert!(clear.contains(&id), "{clear}");
    let now = chrono::Utc::now().to_rfc3339();
    for as_of in [None, Some(now.as_str())] {
        let mut args = vec![
            "sql",
            "--format",
            "csv",
            "--token",
            lake.tokens["analyst"].as_str(),
        ];
        if let Some(v) = as_of {
            args.extend(["--as-of", v]);
        }
        args.push(&sql);
        let masked = ok(d, &args);
        assert!(!masked.contains(&id) && masked.contains("***"), "{masked}");
    }
    // `explain` through the same views: masked for the analyst, not found
    // for a telesales agent whose customer it is not.
    let customer = lake.vars[0].1.clone();
    let explained = ok(
        d,
        &[
            "explain",
            "--customer",
            &customer,
            "--json",
            "--token",
            lake.tokens["analyst"].as_str(),
        ],
    );
    assert!(
        !explained.contains(&id) && explained.contains(&customer),
        "{explained}"
    );
    let err = fails(
        d,
        &[
            "explain",
            "--customer",
            &customer,
            "--token",
            lake.tokens["telesales"].as_str(),
        ],
    );
    assert!(err.contains("no customer"), "{err}");
    let err = fails(
        d,
        &[
            "sql",
            "--token",
            lake.tokens["telesales"].as_str(),
            "SELECT 1",
        ],
    );
    assert!(err.contains("may not send its own SQL"), "{err}");
    let err = fails(d, &["sql", "--token", "cl_bad_bad", "SELECT 1"]);
    assert!(err.contains("not known"), "{err}");
}

/// An RS256 JWT signed by openssl with an identity provider's private key,
/// checked against its public key file.
#[test]
fn an_rs256_jwt_verifies_with_the_providers_public_key() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "idp.key",
        ],
        vec!["pkey", "-in", "idp.key", "-pubout", "-out", "idp.pub"],
    ] {
        let o = Command::new("openssl")
            .current_dir(d)
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let public = d.join("idp.pub").to_string_lossy().to_string();
    let api = Api::with(d, |c| {
        c.security.jwt.algorithm = "RS256".into();
        c.security.jwt.key_file = public.clone();
    });
    let sign = |alg: &str, claims: serde_json::Value| {
        let h = URL_SAFE_NO_PAD.encode(format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}"));
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{h}.{p}");
        std::fs::write(d.join("signed"), &signed).unwrap();
        let o = Command::new("openssl")
            .current_dir(d)
            .args(["dgst", "-sha256", "-sign", "idp.key", "signed"])
            .output()
            .unwrap();
        assert!(o.status.success());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(o.stdout))
    };
    let exp = chrono::Utc::now().timestamp() + 600;
    let good = sign(
        "RS256",
        serde_json::json!({"sub": "li", "role": "analyst", "exp": exp}),
    );
    let h = format!("Bearer {good}");
    assert_eq!(
        api.request("GET", "/v1/tables", &[("authorization", h.as_str())], b"")
            .status,
        200
    );
    // The header may not choose another algorithm (HS256 keyed with the
    // public key is the classic confusion).
    let pem = std::fs::read(d.join("idp.pub")).unwrap();
    let confused = custlake::security::jwt::sign_hs256(
        &pem,
        &serde_json::json!({"sub": "li", "role": "admin", "exp": exp}),
    );
    problem(
        &api.request(
            "GET",
            "/v1/tables",
            &[("authorization", &format!("Bearer {confused}"))],
            b"",
        ),
        401,
        1601,
    );
    // A tampered payload breaks the signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD
        .encode(serde_json::json!({"sub": "li", "role": "admin", "exp": exp}).to_string());
    problem(
        &api.request(
            "GET",
            "/v1/tables",
            &[("authorization", &format!("Bearer {}", parts.join(".")))],
            b"",
        ),
        401,
        1601,
    );
}

/// A statement and its parameters, as psycopg sends them.
type WireCase = (String, Option<serde_json::Value>);

/// A matrix case as a wire protocol sends it: `$name` parameters become
/// the protocol's positional placeholders, in order. HTTP-only cases
/// (named queries, routes, the request's own limit and timeout) have no
/// wire form.
fn over_wire(
    lake: &Lake,
    req: Req,
    escape: impl Fn(&str) -> String,
    placeholder: &str,
) -> Option<WireCase> {
    match req {
        Sql(sql) if sql.starts_with("LIMIT:") || sql.starts_with("TIMEOUT:") => None,
        Sql(sql) => Some((lake.fill(sql), None)),
        SqlWith(sql, params) => {
            let params: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&lake.fill(params)).unwrap();
            let mut sql = escape(&lake.fill(sql));
            let mut values = Vec::new();
            for (name, v) in params {
                sql = sql.replace(&format!("${name}"), placeholder);
                values.push(v);
            }
            Some((sql, Some(serde_json::Value::Array(values))))
        }
        // A named query as the table function of the same name, its
        // parameters in their declared order (a trailing default left out,
        // one in the middle as NULL); limits and timeouts are HTTP's.
        Named(name, query) => {
            let given: HashMap<String, String> =
                url::form_urlencoded::parse(lake.fill(query).as_bytes())
                    .into_owned()
                    .collect();
            if given.contains_key("limit") || given.contains_key("timeout_ms") {
                return None;
            }
            let declared = custlake::query::named::embedded()
                .unwrap()
                .into_iter()
                .find(|q| q.name == name)
                .map(|q| q.params)
                .unwrap_or_default();
            let mut args: Vec<String> = declared
                .iter()
                .map(|p| match given.get(&p.name) {
                    Some(v) => format!("'{}'", v.replace('\'', "''")),
                    None => "NULL".into(),
                })
                .collect();
            while args.last().is_some_and(|a| a == "NULL") {
                args.pop();
            }
            Some((format!("SELECT * FROM {name}({})", args.join(", ")), None))
        }
        Get(..) => None,
    }
}

#[test]
fn the_attack_matrix_holds_over_the_postgres_protocol() {
    if !super::pg::clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let (_rt, pg) = super::pg::serve_existing(dir.path());
    matrix_over(
        &lake,
        "PG",
        |user, token, cases| {
            let sent: Vec<(&str, Option<serde_json::Value>)> = cases
                .iter()
                .map(|(sql, p)| (sql.as_str(), p.clone()))
                .collect();
            super::pg::run_cases(pg, user, token, &sent, false, false)
        },
        |sql| sql.replace('%', "%%"),
        "%s",
        &[],
    );
}

#[test]
fn the_attack_matrix_holds_over_flight_sql() {
    if !super::flight::clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let (_rt, flight) = super::flight::serve_existing(dir.path());
    matrix_over(
        &lake,
        "Flight SQL",
        |user, token, cases| {
            let sent: Vec<(&str, Option<serde_json::Value>)> = cases
                .iter()
                .map(|(sql, p)| (sql.as_str(), p.clone()))
                .collect();
            super::flight::adbc(flight, user, token, &sent, false)
        },
        |sql| sql.to_string(),
        "$1",
        // CSV and JSON only: no Arrow, so no Flight SQL.
        &["telesales"],
    );
}

/// Run every SQL case of the matrix through a wire protocol (`run` sends
/// one role's cases on one connection); `escape` readies a statement that
/// takes parameters and `placeholder` is the protocol's first one. The
/// roles in `barred` may not use the protocol at all.
fn matrix_over(
    lake: &Lake,
    protocol: &str,
    run: impl Fn(&str, &str, &[WireCase]) -> serde_json::Value,
    escape: impl Fn(&str) -> String,
    placeholder: &str,
    barred: &[&str],
) {
    let users = [
        ("admin", "test-admin"),
        ("analyst", "ann"),
        ("telesales", "tim"),
        ("steward", "sue"),
        ("auditor", "al"),
    ];
    let mut failures = Vec::new();
    let mut ran = 0;
    for (role, user) in users {
        let cases: Vec<(&Req, &Expect, WireCase)> = MATRIX
            .iter()
            .filter(|(r, _, _)| *r == role)
            .filter_map(|(_, req, expect)| {
                over_wire(lake, *req, &escape, placeholder).map(|c| (req, expect, c))
            })
            .collect();
        if cases.is_empty() {
            continue;
        }
        let sent: Vec<WireCase> = cases.iter().map(|(_, _, c)| c.clone()).collect();
        let answer = run(user, &lake.tokens[role], &sent);
        let text = answer.to_string();
        if let Some(leak) = lake.secrets[role]
            .iter()
            .find(|s| text.contains(s.as_str()))
        {
            failures.push(format!("{role} over {protocol}: revealed {leak}"));
            continue;
        }
        match (answer.get("login_error"), barred.contains(&role)) {
            (Some(_), true) => {
                ran += cases.len();
                continue;
            }
            (None, true) => {
                failures.push(format!("{role} logged in over {protocol}: {answer}"));
                continue;
            }
            (Some(login), false) => {
                failures.push(format!("{role} could not log in over {protocol}: {login}"));
                continue;
            }
            (None, false) => {}
        }
        let results = answer["results"].as_array().cloned().unwrap_or_default();
        for ((req, expect, _), r) in cases.iter().zip(&results) {
            ran += 1;
            let fine = r["ok"] == true;
            let fail = match expect {
                Hidden => None,
                Fine => (!fine).then(|| format!("failed: {r}")),
                Refused(_) => fine.then(|| format!("answered: {r}")),
                Zero => (r["rows"][0][0] != "0").then(|| format!("{r}")),
                Like(sql) => {
                    let want = lake
                        .api
                        .query("json", serde_json::json!({ "sql": lake.fill(sql) }));
                    let want: Vec<Vec<String>> = rows(&want.json())
                        .iter()
                        .map(|row| {
                            row.as_object()
                                .unwrap()
                                .values()
                                .map(|v| match v {
                                    serde_json::Value::String(s) => s.clone(),
                                    v => v.to_string(),
                                })
                                .collect()
                        })
                        .collect();
                    let got: Vec<Vec<String>> =
                        serde_json::from_value(r["rows"].clone()).unwrap_or_default();
                    (r["ok"] != true || got != want)
                        .then(|| format!("got {r}; an admin's {sql} gives {want:?}"))
                }
            };
            if let Some(f) = fail {
                failures.push(format!("{role} {req:?} over {protocol}: {f}"));
            }
        }
    }
    assert!(ran > 40, "only {ran} cases ran over {protocol}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

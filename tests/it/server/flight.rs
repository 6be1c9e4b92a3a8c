//! Arrow Flight SQL with real clients: the ADBC Flight SQL driver
//! (adbc-driver-flightsql) and pyarrow.flight, through
//! `tests/it/server/flight_client.py`. Without them the tests say so and
//! skip, unless `CUSTLAKE_REQUIRE_FLIGHT_CLIENTS=1` (as `.ci/run` sets).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{config_for, lake_config, token, wire_server};
use crate::common::ok;

/// Whether ADBC's Flight SQL driver and pyarrow are here (a panic when
/// they must be).
pub(crate) fn clients() -> bool {
    let here = Command::new("python3")
        .args(["-c", "import pyarrow.flight, adbc_driver_flightsql.dbapi"])
        .output()
        .is_ok_and(|o| o.status.success());
    if here {
        return true;
    }
    assert!(
        std::env::var("CUSTLAKE_REQUIRE_FLIGHT_CLIENTS").as_deref() != Ok("1"),
        "pyarrow and adbc-driver-flightsql are required"
    );
    eprintln!("skipped: pyarrow or adbc-driver-flightsql is not installed");
    false
}

/// Run one request of `flight_client.py` and return its answer.
pub(crate) fn client(req: serde_json::Value) -> serde_json::Value {
    super::python_client("flight_client.py", &req)
}

/// The statements' results through ADBC, logged in as `user`.
pub(crate) fn adbc(
    flight: SocketAddr,
    user: &str,
    token: &str,
    cases: &[(&str, Option<serde_json::Value>)],
    objects: bool,
) -> serde_json::Value {
    let cases: Vec<serde_json::Value> = cases
        .iter()
        .map(|(sql, params)| serde_json::json!({"sql": sql, "params": params}))
        .collect();
    client(serde_json::json!({
        "mode": "adbc",
        "uri": format!("grpc://{flight}"),
        "user": user,
        "token": token,
        "cases": cases,
        "objects": objects,
    }))
}

fn first(result: &serde_json::Value) -> String {
    assert_eq!(result["ok"], true, "{result}");
    result["rows"][0][0]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A lake with customers resolved, served with Flight on.
fn served(
    dir: &Path,
    tune: impl FnOnce(&mut custlake::config::Config),
) -> (tokio::runtime::Runtime, SocketAddr, String, String) {
    let config = lake_config(dir, tune);
    ok(dir, &["resolve"]);
    let analyst = token(dir, "ann", "analyst", &[]);
    let admin = token(dir, "ada", "admin", &[]);
    let (rt, _, _, flight) = wire_server(config);
    (rt, flight, analyst, admin)
}

#[test]
fn adbc_and_pyarrow_flight_read_arrow_through_the_roles_session() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_rt, flight, analyst, admin) = served(d, |_| {});
    let auditor = token(d, "al", "auditor", &[]);
    let sources = crate::common::count(d, "SELECT count(*) FROM source_customer");
    let capacity = crate::common::count(d, "SELECT count(*) FROM agent WHERE capacity > 20");
    let phones = "SELECT phone FROM customer WHERE phone IS NOT NULL ORDER BY customer_id LIMIT 5";

    let r = adbc(
        flight,
        "ann",
        &analyst,
        &[
            ("SELECT count(*) FROM source_customer", None),
            (
                "SELECT count(*) FROM agent WHERE capacity > $1",
                Some(serde_json::json!([20])),
            ),
            (phones, None),
            // A partition column: a dictionary, sent as its values.
            (
                "SELECT effective_month, count(*) AS n FROM policy GROUP BY 1 ORDER BY 1 LIMIT 2",
                None,
            ),
            ("SELECT * FROM audit_log", None),
            ("DROP TABLE customer", None),
            (
                "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp'",
                None,
            ),
        ],
        true,
    );
    let results = r["results"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(first(&results[0]), sources.to_string());
    assert_eq!(first(&results[1]), capacity.to_string());
    let masked: Vec<String> = results[2]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(masked.len(), 5);
    assert!(masked.iter().all(|p| p.contains('*')), "{masked:?}");
    assert_eq!(results[3]["ok"], true, "{}", results[3]);
    let month = first(&results[3]);
    assert!(month.len() == 7 && month.as_bytes()[4] == b'-', "{month}");
    for refused in &results[4..] {
        assert_eq!(refused["ok"], false, "{refused}");
        let m = refused["message"].as_str().unwrap();
        assert!(m.contains("custlake error"), "{m}");
        assert!(!m.contains(&d.display().to_string()), "{m}");
    }
    // The catalog: the analyst's tables and views, not the auditor's.
    let tables = r["tables"].as_array().unwrap();
    let has = |name: &str, kind: &str| tables.iter().any(|t| t[1] == name && t[2] == kind);
    assert!(has("customer", "TABLE"), "{tables:?}");
    assert!(has("customer_policy", "VIEW"), "{tables:?}");
    assert!(!tables.iter().any(|t| t[1] == "audit_log"), "{tables:?}");
    // GetSqlInfo: what the server says of itself, through ADBC's get_info.
    let r = client(serde_json::json!({
        "mode": "adbc",
        "uri": format!("grpc://{flight}"),
        "user": "ann",
        "token": analyst,
        "cases": [],
        "info": true,
    }));
    assert_eq!(r["info"]["vendor_name"], "custlake", "{r}");
    assert_eq!(
        r["info"]["vendor_version"],
        env!("CARGO_PKG_VERSION"),
        "{r}"
    );
    assert_eq!(r["info"]["vendor_arrow_version"], "59", "{r}");
    let r = adbc(flight, "al", &auditor, &[], true);
    let tables = r["tables"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert!(tables.iter().any(|t| t[1] == "audit_log"), "{tables:?}");
    assert!(!tables.iter().any(|t| t[1] == "customer"), "{tables:?}");

    // pyarrow.flight: the handshake, GetFlightInfo and DoGet by hand.
    let raw = |user: &str, token: &str, sql: &str| {
        client(serde_json::json!({
            "mode": "pyarrow",
            "uri": format!("grpc://{flight}"),
            "user": user,
            "token": token,
            "sql": sql,
        }))
    };
    let r = raw("ann", &analyst, "SELECT * FROM source_customer");
    assert_eq!(r["rows"], sources, "{r}");
    assert_eq!(r["header"], "authorization", "{r}");
    let masked = raw("ann", &analyst, phones);
    let clear = raw("ada", &admin, phones);
    assert_ne!(masked["first"], clear["first"]);
    assert!(
        masked["first"][0].as_str().unwrap().contains('*'),
        "{masked}"
    );
}

#[test]
fn flight_logins_are_checked_refused_and_audited_and_limits_hold() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Auditors here may neither send SQL nor call a named query.
    let (_rt, flight, analyst, _) = served(d, |c| {
        if let Some(a) = c.roles.get_mut("analyst") {
            a.max_rows = Some(50);
        }
        if let Some(a) = c.roles.get_mut("auditor") {
            a.free_sql = Some(false);
            a.named_queries = Some(vec![]);
        }
    });
    let telesales = token(d, "tim", "telesales", &["--agent-id", "A0001"]);
    let auditor = token(d, "al", "auditor", &[]);
    let login_error = |user: &str, token: &str| {
        let r = adbc(flight, user, token, &[], false);
        r["login_error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{user} logged in: {r}"))
            .to_string()
    };
    let e = login_error("ann", "cl_not_a_token");
    assert!(
        e.contains("UNAUTHENTICATED") && e.contains("custlake error 1601"),
        "{e}"
    );
    let e = login_error("bob", &analyst);
    assert!(e.contains("is not \"bob\"'s"), "{e}");
    let e = login_error("al", &auditor);
    assert!(
        e.contains("may not send its own SQL and may call no named query"),
        "{e}"
    );
    // Telesales may export only CSV and JSON: no Arrow, so no Flight SQL
    // (it calls its named queries over HTTP and PG).
    let e = login_error("tim", &telesales);
    assert!(e.contains("may not export results as arrow"), "{e}");

    let r = adbc(
        flight,
        "ann",
        &analyst,
        &[
            ("SELECT * FROM source_customer", None),
            ("SELECT * FROM source_customer LIMIT 50", None),
            ("SELECT 42 AS answer", None),
        ],
        false,
    );
    let results = r["results"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(results[0]["ok"], false, "{r}");
    assert!(
        results[0]["message"]
            .as_str()
            .unwrap()
            .contains("more than 50 rows"),
        "{r}"
    );
    assert_eq!(results[1]["rows"].as_array().unwrap().len(), 50, "{r}");
    assert_eq!(first(&results[2]), "42");

    let records = super::audit::records(d);
    let logins: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["action"] == "flight.login" || r["action"] == "flight.call")
        .map(|r| {
            (
                r["principal"].as_str().unwrap_or_default().to_string(),
                r["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        logins.contains(&("anonymous".into(), "denied".into())),
        "{logins:?}"
    );
    assert!(
        logins.contains(&("al".into(), "denied".into())),
        "{logins:?}"
    );
    assert!(
        logins.contains(&("tim".into(), "denied".into())),
        "{logins:?}"
    );
    assert!(logins.contains(&("ann".into(), "ok".into())), "{logins:?}");
    let answer: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["detail"] == "SELECT 42 AS answer")
        .collect();
    let outcomes: Vec<&str> = answer
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or_default())
        .collect();
    assert!(outcomes.contains(&"started"), "{answer:?}");
    assert!(
        answer
            .iter()
            .any(|r| r["outcome"] == "ok" && r["rows"] == 1),
        "{answer:?}"
    );
}

/// A pyarrow.flight client (as `ann`) that has its long statement's first
/// batch and then reads nothing for `hold` seconds.
fn stalled_reader(flight: SocketAddr, token: &str, hold: u64) -> std::process::Child {
    use std::io::{BufRead, Write};
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/server/flight_client.py"
    );
    let mut client = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let req = serde_json::json!({
        "mode": "stall",
        "uri": format!("grpc://{flight}"),
        "user": "ann",
        "token": token,
        "sql": "SELECT value, value * 2 AS twice FROM generate_series(1, 200000000)",
        "hold": hold,
    });
    client
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(client.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "reading");
    client
}

/// A server with one query slot and statements stopped after `timeout_ms`,
/// its slot held by a client that stops reading (`stalled_reader`): the
/// runtime, the address, the analyst's token and that client.
fn slot_held(
    dir: &Path,
    timeout_ms: u64,
    hold: u64,
) -> (
    tokio::runtime::Runtime,
    SocketAddr,
    String,
    std::process::Child,
) {
    let (rt, flight, analyst, _) = served(dir, |c| {
        c.server.max_concurrent_queries = 1;
        c.server.query_timeout_ms = timeout_ms;
    });
    let client = stalled_reader(flight, &analyst, hold);
    let busy = adbc(flight, "ann", &analyst, &[("SELECT 1", None)], false);
    assert!(busy.to_string().contains("max_queries_per_user"), "{busy}");
    (rt, flight, analyst, client)
}

/// Waits until a statement runs again: at most 30 s after `since`.
fn slot_comes_back(flight: SocketAddr, token: &str, since: std::time::Instant) {
    loop {
        let r = adbc(flight, "ann", token, &[("SELECT 1", None)], false);
        if r["results"][0]["ok"] == true {
            return;
        }
        assert!(
            since.elapsed() < std::time::Duration::from_secs(30),
            "the slot never came back: {r}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

#[test]
fn a_client_that_stops_reading_gives_its_query_slot_back_at_the_deadline() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Once it has its first batch, it holds the only slot until its
    // deadline, while it still reads nothing.
    let (_rt, flight, analyst, mut staller) = slot_held(dir.path(), 3000, 60);
    slot_comes_back(flight, &analyst, std::time::Instant::now());
    assert!(
        staller.try_wait().unwrap().is_none(),
        "the staller is still there"
    );
    let _ = staller.kill();
    let _ = staller.wait();
}

#[test]
fn a_killed_client_gives_its_query_slot_back_at_once() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A deadline far beyond the wait: the slot comes back because the
    // client went away, not because its statement timed out.
    let (_rt, flight, analyst, mut holder) = slot_held(dir.path(), 120_000, 600);
    // Killed mid-stream (SIGKILL: no goodbye on the wire).
    let killed = std::time::Instant::now();
    holder.kill().unwrap();
    holder.wait().unwrap();
    slot_comes_back(flight, &analyst, killed);
}

#[test]
fn a_role_without_free_sql_calls_its_named_queries_over_flight() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Telesales as shipped may not export Arrow; here it may, and still
    // sends no SQL of its own.
    let (_rt, flight, _, _) = served(d, |c| {
        if let Some(t) = c.roles.get_mut("telesales") {
            t.formats = Some(vec!["json".into(), "csv".into(), "arrow".into()]);
        }
    });
    let agent = crate::common::query(
        d,
        "SELECT agent_id FROM agent WHERE active ORDER BY agent_id LIMIT 1",
    )[0]
    .clone();
    let tim = token(d, "tim", "telesales", &["--agent-id", &agent]);
    let some = crate::common::query(
        d,
        "SELECT customer_id FROM customer ORDER BY customer_id LIMIT 1",
    )[0]
    .clone();
    let r = adbc(
        flight,
        "tim",
        &tim,
        &[
            (
                &format!("SELECT customer_id FROM customer_golden('{some}')"),
                None,
            ),
            ("SELECT count(*) FROM customer", None),
            (
                "SELECT * FROM customer_golden((SELECT max(customer_id) FROM customer))",
                None,
            ),
        ],
        false,
    );
    let results = r["results"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(results[0]["ok"], true, "{r}");
    for refused in &results[1..] {
        assert_eq!(refused["ok"], false, "{refused}");
        let m = refused["message"].as_str().unwrap();
        assert!(m.contains("custlake error"), "{m}");
    }
}

/// A server over an existing lake (no new sample), for the attack matrix.
pub(crate) fn serve_existing(dir: &Path) -> (tokio::runtime::Runtime, SocketAddr) {
    let (rt, _, _, flight) = wire_server(config_for(dir, |_| {}));
    (rt, flight)
}

/// With `[server.tls]`, PG and Flight SQL speak TLS with the server's
/// certificate: psql with `sslmode=verify-full` and ADBC over `grpc+tls`
/// trusting it get answers; the same clients without TLS get nowhere.
#[test]
fn the_wire_protocols_speak_tls_with_the_servers_certificate() {
    if !clients() || !super::pg::clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = super::self_signed(d);
    let config = lake_config(d, |c| {
        c.server.tls.cert_file = cert.to_string_lossy().to_string();
        c.server.tls.key_file = key.to_string_lossy().to_string();
    });
    ok(d, &["resolve"]);
    let analyst = token(d, "ann", "analyst", &[]);
    let (_rt, _, pg, flight) = wire_server(config);

    let pem = std::fs::read_to_string(&cert).unwrap();
    let over_tls = client(serde_json::json!({
        "mode": "adbc",
        "uri": format!("grpc+tls://127.0.0.1:{}", flight.port()),
        "root_certs": pem,
        "user": "ann",
        "token": analyst,
        "cases": [{"sql": "SELECT 42 AS answer", "params": null}],
        "objects": false,
    }));
    assert_eq!(first(&over_tls["results"][0]), "42");
    let plain = adbc(flight, "ann", &analyst, &[("SELECT 1", None)], false);
    assert!(plain.get("login_error").is_some(), "{plain}");

    let psql = |sslmode: &str| {
        Command::new("psql")
            .arg(format!(
                "host=localhost hostaddr=127.0.0.1 port={} user=ann dbname=custlake \
                 sslmode={sslmode} sslrootcert={}",
                pg.port(),
                cert.display()
            ))
            .args(["-X", "-A", "-t", "-c", "SELECT 42"])
            .env("PGPASSWORD", &analyst)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql runs")
    };
    let good = psql("verify-full");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&good.stdout).trim(), "42");
    let bare = psql("disable");
    assert!(!bare.status.success(), "a login without TLS was accepted");
}

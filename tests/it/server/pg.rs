//! The PostgreSQL wire protocol with real clients: `psql` (Debian's
//! postgresql-client) and psycopg 3 (PyPI), through
//! `tests/it/server/pg_client.py`. Without them the tests say so and
//! skip, unless `CUSTLAKE_REQUIRE_PG_CLIENTS=1` (as `.ci/run` sets).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{config_for, lake_config, pg_server, token};
use crate::common::ok;

/// Whether psql and psycopg are here (a panic when they must be).
pub(crate) fn clients() -> bool {
    let psql = Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let psycopg = Command::new("python3")
        .args(["-c", "import psycopg"])
        .output()
        .is_ok_and(|o| o.status.success());
    if psql && psycopg {
        return true;
    }
    assert!(
        std::env::var("CUSTLAKE_REQUIRE_PG_CLIENTS").as_deref() != Ok("1"),
        "psql ({psql}) and psycopg ({psycopg}) are required"
    );
    eprintln!("skipped: psql or psycopg is not installed");
    false
}

/// A libpq connection string for `user` with `token` as password.
pub(crate) fn dsn(pg: SocketAddr, user: &str, token: &str) -> String {
    format!(
        "host={} port={} user={user} password={token} dbname=custlake sslmode=disable",
        pg.ip(),
        pg.port()
    )
}

/// Run one request of `pg_client.py` (psycopg) and return its answer.
pub(crate) fn psycopg(req: serde_json::Value) -> serde_json::Value {
    super::python_client("pg_client.py", &req)
}

/// The statements' results over one psycopg connection.
pub(crate) fn run_cases(
    pg: SocketAddr,
    user: &str,
    token: &str,
    cases: &[(&str, Option<serde_json::Value>)],
    binary: bool,
    prepare: bool,
) -> serde_json::Value {
    let cases: Vec<serde_json::Value> = cases
        .iter()
        .map(|(sql, params)| serde_json::json!({"sql": sql, "params": params}))
        .collect();
    psycopg(serde_json::json!({
        "mode": "run",
        "dsn": dsn(pg, user, token),
        "binary": binary,
        "prepare": prepare,
        "cases": cases,
    }))
}

/// `psql` as `user`, stopping at the first error.
fn psql(pg: SocketAddr, user: &str, token: &str, args: &[&str]) -> Output {
    Command::new("psql")
        .env("PGPASSWORD", token)
        .env("PGCONNECT_TIMEOUT", "20")
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            &format!(
                "host={} port={} user={user} dbname=custlake sslmode=disable",
                pg.ip(),
                pg.port()
            ),
        ])
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "psql failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A lake with customers resolved, served with PG on: the runtime, the PG
/// address and the analyst's and admin's tokens.
fn served(
    dir: &Path,
    tune: impl FnOnce(&mut custlake::config::Config),
) -> (tokio::runtime::Runtime, SocketAddr, String, String) {
    let config = lake_config(dir, tune);
    ok(dir, &["resolve"]);
    let analyst = token(dir, "ann", "analyst", &[]);
    let admin = token(dir, "ada", "admin", &[]);
    let (rt, _, pg) = pg_server(config);
    (rt, pg, analyst, admin)
}

/// The first value of the first row of a psycopg case's result.
fn first(result: &serde_json::Value) -> String {
    assert_eq!(result["ok"], true, "{result}");
    result["rows"][0][0]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn psql_queries_and_describes_only_what_the_role_reads() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_rt, pg, analyst, admin) = served(d, |_| {});
    let auditor = token(d, "al", "auditor", &[]);

    // A query answers what the lake holds.
    let want = crate::common::count(d, "SELECT count(*) FROM source_customer");
    let got = stdout(&psql(
        pg,
        "ann",
        &analyst,
        &["-A", "-t", "-c", "SELECT count(*) FROM source_customer"],
    ));
    assert_eq!(got.trim(), want.to_string());
    // A correlated scalar subquery in the select list, as the CLI answers it.
    let want = crate::common::query(d, CORRELATED)[0].clone();
    let got = stdout(&psql(pg, "ann", &analyst, &["-A", "-t", "-c", CORRELATED]));
    assert_eq!(got.trim(), want);

    // psql's catalog commands: the analyst's tables, not the auditor's.
    let dt = stdout(&psql(pg, "ann", &analyst, &["-c", "\\dt"]));
    assert!(dt.contains("| customer "), "{dt}");
    assert!(dt.contains("source_customer"), "{dt}");
    assert!(!dt.contains("audit_log"), "{dt}");
    assert!(!dt.contains("customer_policy"), "{dt}");
    // The golden views are views.
    let dv = stdout(&psql(pg, "ann", &analyst, &["-c", "\\dv"]));
    assert!(dv.contains("customer_policy"), "{dv}");
    // `\d` alone: every relation the analyst reads, tables and views.
    let d_all = stdout(&psql(pg, "ann", &analyst, &["-c", "\\d"]));
    for relation in ["| customer ", "source_customer", "customer_policy"] {
        assert!(d_all.contains(relation), "{relation}: {d_all}");
    }
    assert!(!d_all.contains("audit_log"), "{d_all}");
    let d_customer = stdout(&psql(pg, "ann", &analyst, &["-c", "\\d customer"]));
    for column in ["customer_id", "id_number", "phone", "owning_team"] {
        assert!(d_customer.contains(column), "{column}: {d_customer}");
    }
    let dt = stdout(&psql(pg, "al", &auditor, &["-c", "\\dt"]));
    assert!(dt.contains("audit_log"), "{dt}");
    assert!(!dt.contains("source_customer"), "{dt}");

    // Masked for the analyst, in clear for the admin.
    let sql = "SELECT phone FROM customer WHERE phone IS NOT NULL ORDER BY customer_id LIMIT 5";
    let masked = stdout(&psql(pg, "ann", &analyst, &["-A", "-t", "-c", sql]));
    let clear = stdout(&psql(pg, "ada", &admin, &["-A", "-t", "-c", sql]));
    assert_eq!(masked.lines().count(), 5, "{masked}");
    for (m, c) in masked.lines().zip(clear.lines()) {
        assert_ne!(m, c);
        assert!(m.contains('*'), "{m}");
    }

    // Nothing but reads.
    for write in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO customer (customer_id) VALUES ('x')",
        "DROP TABLE customer",
        "COPY customer TO '/tmp/out.csv'",
        "SET datafusion.execution.batch_size = 1",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp'",
        // A cursor would run outside the statement's limits.
        "DECLARE c CURSOR FOR SELECT * FROM customer",
        // Nested calls past query.max_call_depth, refused before parsing.
        "SELECT coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(coalesce(phone,'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x'),'x') FROM customer",
    ] {
        let o = psql(pg, "ada", &admin, &["-c", write]);
        assert!(!o.status.success(), "{write} ran");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ERROR"), "{write}: {err}");
        assert!(!err.contains(&d.display().to_string()), "{err}");
    }
    // A raw path or another role's table is not there.
    let o = psql(pg, "ann", &analyst, &["-c", "SELECT * FROM audit_log"]);
    assert!(!o.status.success());
    let o = psql(
        pg,
        "ann",
        &analyst,
        &["-c", "SELECT * FROM 'file:///etc/passwd'"],
    );
    assert!(!o.status.success());
}

#[test]
fn psycopg_binds_parameters_in_text_and_binary_and_prepared_statements() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_rt, pg, analyst, _) = served(d, |_| {});
    let source = crate::common::query(
        d,
        "SELECT source_id FROM customer_xref WHERE source_system = 'core' ORDER BY 1 LIMIT 1",
    )[0]
    .clone();
    let want = crate::common::query(
        d,
        &format!("SELECT customer_id FROM customer_xref WHERE source_id = '{source}'"),
    )[0]
    .clone();
    let premium = crate::common::count(d, "SELECT count(*) FROM policy WHERE premium > 1000");
    let capacity = crate::common::count(d, "SELECT count(*) FROM agent WHERE capacity > 20");
    let teams = crate::common::query(d, CORRELATED)[0].clone();
    assert!(teams.contains(':'), "{teams}");
    for (binary, prepare) in [(false, false), (true, false), (false, true), (true, true)] {
        let r = run_cases(
            pg,
            "ann",
            &analyst,
            &[
                (
                    "SELECT customer_id FROM customer_xref WHERE source_id = %s",
                    Some(serde_json::json!([source])),
                ),
                (
                    "SELECT count(*) FROM agent WHERE capacity > %s",
                    Some(serde_json::json!([20])),
                ),
                // The same statement again: a prepared one is reused.
                (
                    "SELECT count(*) FROM agent WHERE capacity > %s",
                    Some(serde_json::json!([20])),
                ),
                // A decimal column takes its value as text.
                (
                    "SELECT count(*) FROM policy WHERE premium > %s",
                    Some(serde_json::json!(["1000.00"])),
                ),
                // A function refusing its arguments is the statement's
                // error (42601), in the function's words.
                ("SELECT make_date(2026, 13, 40)", None),
                // Scalar subqueries in the select list answer as over
                // HTTP: a correlated one, and one with a parameter.
                (CORRELATED, None),
                (
                    "SELECT (SELECT count(*) FROM agent WHERE capacity > %s) AS n",
                    Some(serde_json::json!([20])),
                ),
            ],
            binary,
            prepare,
        );
        let results = r["results"].as_array().unwrap_or_else(|| panic!("{r}"));
        assert_eq!(first(&results[0]), want, "binary {binary}: {r}");
        assert_eq!(first(&results[1]), capacity.to_string(), "{r}");
        assert_eq!(first(&results[2]), capacity.to_string(), "{r}");
        assert_eq!(first(&results[3]), premium.to_string(), "{r}");
        let refused = &results[4];
        assert_eq!(refused["sqlstate"], "42601", "{r}");
        let message = refused["message"].as_str().unwrap_or_default();
        assert!(message.contains("out of range"), "{r}");
        assert!(!message.contains("External error"), "{r}");
        assert_eq!(first(&results[5]), teams, "{r}");
        assert_eq!(first(&results[6]), capacity.to_string(), "{r}");
    }
}

/// The first twenty agents, each with how many agents its team has.
const CORRELATED: &str = "SELECT string_agg(concat(agent_id, ':', n), ';' ORDER BY agent_id) \
    FROM (SELECT a.agent_id, (SELECT count(*) FROM agent b WHERE b.team = a.team) AS n \
    FROM agent a WHERE a.agent_id <= 'A00020') AS s";

#[test]
fn logins_are_checked_refused_and_audited() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Auditors here may neither send SQL nor call a named query.
    let (_rt, pg, analyst, _) = served(d, |c| {
        if let Some(a) = c.roles.get_mut("auditor") {
            a.free_sql = Some(false);
            a.named_queries = Some(vec![]);
        }
    });
    let telesales = token(d, "tim", "telesales", &["--agent-id", "A0001"]);
    let auditor = token(d, "al", "auditor", &[]);
    let login_error = |user: &str, token: &str| {
        let r = run_cases(pg, user, token, &[("SELECT 1", None)], false, false);
        r["login_error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{user} logged in: {r}"))
            .to_string()
    };
    let e = login_error("ann", "cl_not_a_token");
    assert!(
        e.contains("password authentication failed for user \"ann\""),
        "{e}"
    );
    assert!(e.contains("custlake error 1601"), "{e}");
    let e = login_error("bob", &analyst);
    assert!(e.contains("the token is not \"bob\"'s"), "{e}");
    let e = login_error("al", &auditor);
    assert!(
        e.contains("role auditor may not send its own SQL and may call no named query"),
        "{e}"
    );
    assert!(e.contains("custlake error 1602"), "{e}");
    let r = run_cases(pg, "ann", &analyst, &[("SELECT 1", None)], false, false);
    assert_eq!(first(&r["results"][0]), "1");
    // Telesales has no free SQL: it logs in to call its named queries as
    // table functions, over its own customers only, and nothing else.
    let r = run_cases(
        pg,
        "tim",
        &telesales,
        &[
            ("SELECT sum(customers) FROM customer_count()", None),
            ("SELECT 1", None),
            ("SELECT count(*) FROM customer", None),
            ("SELECT * FROM quarantine_summary()", None),
            ("SELECT * FROM policies_expiring('2026-06-30', 99999)", None),
        ],
        false,
        false,
    );
    let results = r["results"].as_array().unwrap_or_else(|| panic!("{r}"));
    let mine = results[0]["rows"][0][0].as_str().unwrap_or_default();
    assert!(mine.is_empty() || mine.parse::<u64>().is_ok(), "{r}");
    for refused in &results[1..4] {
        let m = refused["message"].as_str().unwrap_or_default();
        assert!(m.contains("may not send its own SQL"), "{r}");
        assert!(m.contains("customer_count"), "names what it may call: {r}");
    }
    let m = results[4]["message"].as_str().unwrap_or_default();
    assert!(m.contains("outside 0..36600") && m.contains("1104"), "{r}");

    let records = super::audit::records(d);
    let logins: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["action"] == "pg.login")
        .map(|r| {
            (
                r["principal"].as_str().unwrap_or_default().to_string(),
                r["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        logins,
        [
            ("anonymous".to_string(), "denied".to_string()),
            ("anonymous".to_string(), "denied".to_string()),
            ("al".to_string(), "denied".to_string()),
            ("ann".to_string(), "ok".to_string()),
            ("tim".to_string(), "ok".to_string()),
        ]
    );
    // The query: a record as it started and one with its rows as it ended.
    let query: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| {
            r["action"].as_str().is_some_and(|a| a.starts_with("pg.")) && r["principal"] == "ann"
        })
        .filter(|r| r["detail"] == "SELECT 1")
        .collect();
    assert_eq!(query.len(), 2, "{query:?}");
    assert_eq!(query[0]["outcome"], "started");
    assert_eq!(query[1]["outcome"], "ok");
    assert_eq!(query[1]["rows"], 1);
}

/// A statement that runs for minutes, in small steps (an operator that
/// computes for a minute without returning, such as a nested-loop join
/// over a cross join, is stopped only when it returns).
const SLOW: &str = "SELECT count(*) FROM generate_series(1, 100000000000)";

#[test]
fn a_cancel_or_a_timeout_stops_a_statement_and_the_role_limits_hold() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_rt, pg, analyst, _) = served(d, |c| {
        if let Some(a) = c.roles.get_mut("analyst") {
            a.max_rows = Some(50);
        }
    });
    let r = psycopg(serde_json::json!({
        "mode": "cancel",
        "dsn": dsn(pg, "ann", &analyst),
        "sql": SLOW,
        "after": 1.0,
    }));
    assert_eq!(r["sqlstate"], "57014", "{r}");
    assert!(r["seconds"].as_f64().unwrap() < 10.0, "{r}");
    assert_eq!(r["alive"], true, "{r}");

    let start = Instant::now();
    let r = run_cases(
        pg,
        "ann",
        &analyst,
        &[
            ("SET statement_timeout = 1500", None),
            (SLOW, None),
            ("SELECT * FROM source_customer", None),
            ("SELECT * FROM source_customer LIMIT 50", None),
        ],
        false,
        false,
    );
    let results = r["results"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(results[0]["ok"], true, "{r}");
    assert_eq!(results[1]["sqlstate"], "57014", "{r}");
    assert!(start.elapsed() < Duration::from_secs(20));
    // Past the role's row limit: an error, not a silently cut result.
    assert_eq!(results[2]["sqlstate"], "42501", "{r}");
    assert!(
        results[2]["message"]
            .as_str()
            .unwrap()
            .contains("more than 50 rows"),
        "{r}"
    );
    assert_eq!(results[3]["rows"].as_array().unwrap().len(), 50, "{r}");
}

#[test]
fn pg_cancel_backend_and_psqls_ctrl_c_stop_a_statement() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_rt, pg, analyst, admin) = served(d, |_| {});
    let other = token(d, "bo", "analyst", &[]);
    let cancel = |victim: (&str, &str), canceller: (&str, &str), setup: &[&str]| {
        psycopg(serde_json::json!({
            "mode": "cancel",
            "dsn": dsn(pg, victim.0, victim.1),
            "canceller": dsn(pg, canceller.0, canceller.1),
            "sql": SLOW,
            "after": 1.0,
            "setup": setup,
        }))
    };
    // One's own other connection, found by the pid the login gave it.
    let r = cancel(("ann", &analyst), ("ann", &analyst), &[]);
    assert_eq!(r["pid_matches"], true, "{r}");
    assert_eq!(r["cancelled"], true, "{r}");
    assert_eq!(r["sqlstate"], "57014", "{r}");
    assert!(r["seconds"].as_f64().unwrap() < 10.0, "{r}");
    assert_eq!(r["alive"], true, "{r}");
    // Another principal's: refused, and the statement runs on to its
    // timeout.
    let r = cancel(
        ("ann", &analyst),
        ("bo", &other),
        &["SET statement_timeout = 4000"],
    );
    let refused = r["cancelled"]["message"].as_str().unwrap_or_default();
    assert!(refused.contains("permission denied"), "{r}");
    assert_eq!(r["cancelled"]["sqlstate"], "42501", "{r}");
    assert!(r["seconds"].as_f64().unwrap() >= 3.5, "{r}");
    assert_eq!(r["sqlstate"], "57014", "{r}");
    // An operator (a role with the `jobs` action) cancels anyone's.
    let r = cancel(("bo", &other), ("ada", &admin), &[]);
    assert_eq!(r["cancelled"], true, "{r}");
    assert_eq!(r["sqlstate"], "57014", "{r}");
    assert!(r["seconds"].as_f64().unwrap() < 10.0, "{r}");
    // No such backend: false, as in PostgreSQL; NULL for NULL.
    let r = run_cases(
        pg,
        "ann",
        &analyst,
        &[
            ("SELECT pg_cancel_backend(-7)", None),
            ("SELECT pg_cancel_backend(1099511627776)", None),
            ("SELECT pg_cancel_backend(NULL)", None),
        ],
        false,
        false,
    );
    assert_eq!(r["results"][0]["rows"][0][0], "False", "{r}");
    assert_eq!(r["results"][1]["rows"][0][0], "False", "{r}");
    assert_eq!(
        r["results"][2]["rows"][0][0],
        serde_json::Value::Null,
        "{r}"
    );

    // psql's Ctrl-C sends the protocol's cancel request.
    let started = Instant::now();
    let mut running = Command::new("psql")
        .env("PGPASSWORD", &analyst)
        .args(["-X", &dsn(pg, "ann", &analyst), "-c", SLOW])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ctrl-C until psql ends (one that comes before psql sent its query
    // cancels nothing), never to a process that has ended.
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(500));
        if running.try_wait().unwrap().is_some() {
            break;
        }
        let sent = Command::new("kill")
            .args(["-INT", &running.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
    let o = running.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("Cancel request sent"), "{err}");
    assert!(err.contains("ERROR"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "{err}");
}

#[test]
fn a_killed_client_frees_its_connection_slot() {
    if !clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The holder's statement ends at its timeout, when the server finds
    // the client gone (a statement busy computing reads nothing from its
    // socket until it has something to send).
    let (_rt, pg, analyst, _) = served(d, |c| {
        c.server.pg_max_connections = 1;
        c.server.query_timeout_ms = 3000;
    });
    // Sockets that never log in take no slot: a login still gets in.
    let idle: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(pg).unwrap())
        .collect();
    let r = run_cases(pg, "ann", &analyst, &[("SELECT 1", None)], false, false);
    assert_eq!(r["results"][0]["ok"], true, "{r}");
    drop(idle);
    // One client holds the only slot, running a long statement.
    let mut holder = Command::new("psql")
        .env("PGPASSWORD", &analyst)
        .args([
            "-X",
            &format!(
                "host={} port={} user=ann dbname=custlake sslmode=disable",
                pg.ip(),
                pg.port()
            ),
            "-c",
            SLOW,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it holds the slot: another login is then refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run_cases(pg, "ann", &analyst, &[("SELECT 1", None)], false, false);
        if r["login_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too many clients"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second login was never refused: {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Killed, not closed: the slot comes back.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run_cases(pg, "ann", &analyst, &[("SELECT 1", None)], false, false);
        if r["results"][0]["ok"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back: {r}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A server over an existing lake (no new sample), for the attack matrix.
pub(crate) fn serve_existing(dir: &Path) -> (tokio::runtime::Runtime, SocketAddr) {
    let (rt, _, pg) = pg_server(config_for(dir, |_| {}));
    (rt, pg)
}

/// The PostgreSQL JDBC driver, as DBeaver and other JDBC tools use it
/// (`JdbcClient.java`, run as a single source file): None without java or
/// the driver (Debian's `libpostgresql-jdbc-java`), unless they are
/// required.
fn jdbc(pg: SocketAddr, user: &str, token: &str, args: &[&str]) -> Option<Vec<(String, String)>> {
    let jar = "/usr/share/java/postgresql.jar";
    let java = Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !java || !Path::new(jar).exists() {
        assert!(
            std::env::var("CUSTLAKE_REQUIRE_PG_CLIENTS").as_deref() != Ok("1"),
            "java ({java}) and {jar} are required"
        );
        eprintln!("skipped: java or the PostgreSQL JDBC driver is not installed");
        return None;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/server/JdbcClient.java");
    let url = format!("jdbc:postgresql://{}:{}/custlake", pg.ip(), pg.port());
    let out = Command::new("java")
        .args(["-cp", jar])
        .arg(source)
        .args([url.as_str(), user, token])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        text.lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn jdbc_reads_the_catalog_and_binds_parameters_as_dbeaver_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_rt, pg, analyst, admin) = served(d, |_| {});
    let sql = "SELECT customer_id, id_number, phone FROM customer WHERE id_number IS NOT NULL ORDER BY 1 LIMIT 3";
    let prepared = "SELECT count(*) FROM customer WHERE customer_type = ?";
    let args = [sql, prepared, "individual"];
    let Some(seen) = jdbc(pg, "ann", &analyst, &args) else {
        return;
    };
    let get = |seen: &[(String, String)], k: &str| {
        seen.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k}: {seen:?}"))
    };
    assert!(get(&seen, "product").starts_with("PostgreSQL"), "{seen:?}");
    // The catalog as DatabaseMetaData reads it: the analyst's tables and
    // views, not the audit trail; the customer's columns.
    let tables: Vec<String> = get(&seen, "tables").split(',').map(String::from).collect();
    for t in ["customer", "source_customer", "policy"] {
        assert!(tables.iter().any(|x| x == t), "{t}: {tables:?}");
    }
    assert!(!tables.iter().any(|x| x == "audit_log"), "{tables:?}");
    assert!(get(&seen, "views").contains("customer_policy"), "{seen:?}");
    assert!(get(&seen, "columns").contains("id_number"), "{seen:?}");
    // Identity numbers and phones masked for the analyst, clear for the
    // admin, the same customers.
    let masked = get(&seen, "rows");
    let clear = get(&jdbc(pg, "ada", &admin, &args).unwrap(), "rows");
    let (masked, clear): (Vec<&str>, Vec<&str>) =
        (masked.split(',').collect(), clear.split(',').collect());
    assert_eq!(masked.len(), 3, "{masked:?}");
    for (m, c) in masked.iter().zip(&clear) {
        let (m, c): (Vec<&str>, Vec<&str>) = (m.split('|').collect(), c.split('|').collect());
        assert_eq!(m[0], c[0]);
        assert!(m[1].contains('*') && !c[1].contains('*'), "{m:?} {c:?}");
        assert_ne!(m[1], c[1]);
    }
    // The bound parameter, past the driver's switch to a named server-side
    // statement on its fifth run, answers as the lake does every time.
    let want = crate::common::count(
        d,
        "SELECT count(*) FROM customer WHERE customer_type = 'individual'",
    );
    let answers = get(&seen, "prepared");
    assert_eq!(answers, vec![want.to_string(); 6].join(","), "{seen:?}");
    // A wrong password is refused with PostgreSQL's SQLSTATE for it.
    let refused = jdbc(pg, "ann", "cl_not_a_token", &args).unwrap();
    assert!(get(&refused, "login").starts_with("28P01"), "{refused:?}");
}

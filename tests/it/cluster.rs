//! The same SQL on an Apache Ballista cluster: one scheduler and two
//! executors as `custlake scheduler` / `custlake executor` processes on
//! localhost, over a lake whose warm and cold tiers are on a real S3
//! server (when one is installed). Answers are compared with the local
//! engine's, row for row.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::{bin, ok, run_in, sample};

/// A scheduler and two executors, killed when dropped.
pub(crate) struct Cluster {
    pub(crate) scheduler: String,
    children: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(port: u16, what: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port}");
}

/// One custlake process of the cluster, run in `dir` (its configuration)
/// over the lake `lake`, logging to `dir/<name>.log`.
fn member(dir: &Path, lake: &Path, name: &str, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(bin());
    // The scheduler says what it does (job submissions, cancellations).
    if name == "scheduler" {
        cmd.env(
            "CUSTLAKE_LOG",
            "warn,ballista_scheduler::scheduler_server::grpc=info",
        );
    }
    cmd.current_dir(dir)
        .arg("--quiet")
        .arg("--lake")
        .arg(lake)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log);
    for (k, _) in std::env::vars() {
        if k.starts_with("CUSTLAKE") && k != "CUSTLAKE_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.spawn().unwrap()
}

/// Start a scheduler and two executors for the lake `lake`, configured
/// as in `dir`.
pub(crate) fn start(dir: &Path, lake: &Path) -> Cluster {
    let port = free_port();
    let scheduler = format!("127.0.0.1:{port}");
    let mut cluster = Cluster {
        scheduler: scheduler.clone(),
        children: Vec::new(),
    };
    cluster.children.push(member(
        dir,
        lake,
        "scheduler",
        &["scheduler", "--bind", &scheduler],
    ));
    wait_for(port, "the scheduler");
    for i in 1..=2 {
        let flight = free_port();
        let grpc = free_port();
        let work = dir.join(format!("executor{i}"));
        std::fs::create_dir_all(&work).unwrap();
        cluster.children.push(member(
            dir,
            lake,
            &format!("executor{i}"),
            &[
                "executor",
                "--scheduler",
                &scheduler,
                "--bind",
                &format!("127.0.0.1:{flight}"),
                "--grpc-port",
                &grpc.to_string(),
                "--work-dir",
                work.to_str().unwrap(),
                "--concurrent-tasks",
                "2",
            ],
        ));
        wait_for(flight, "an executor");
    }
    cluster
}

impl Cluster {
    /// Stop executor `i` (1 or 2) at once, as a crash would.
    pub(crate) fn kill_executor(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }
}

/// A statement's CSV answer, here or on the cluster.
fn csv(dir: &Path, sql: &str, cluster: Option<&Cluster>) -> String {
    let mut args = vec!["sql", "--format", "csv"];
    if let Some(c) = cluster {
        args.extend(["--engine", "ballista", "--scheduler", c.scheduler.as_str()]);
    }
    args.push(sql);
    ok(dir, &args)
}

/// Rows in a stable order (a statement without ORDER BY may answer in
/// any), the header first.
fn sorted(csv: &str) -> Vec<String> {
    let mut lines: Vec<String> = csv.lines().map(str::to_string).collect();
    if lines.len() > 1 {
        lines[1..].sort();
    }
    lines
}

fn golden(fact: &str, a: &str) -> String {
    format!(
        "{fact} {a} JOIN customer_xref x{a} ON x{a}.source_system = {a}.source_system \
         AND x{a}.source_id = {a}.source_customer_id"
    )
}

/// The analytics benchmark's shapes (benches/compare_duckdb.py) as of
/// 2026-06-30, and statements that read every tier.
fn shapes() -> Vec<String> {
    vec![
        format!(
            "SELECT c.customer_type, c.province, p.product_line, count(DISTINCT c.customer_id) AS customers, \
             count(*) AS policies, sum(p.premium) AS premium FROM {} JOIN customer c ON c.customer_id = xp.customer_id \
             WHERE c.status = 'active' GROUP BY c.customer_type, c.province, p.product_line",
            golden("policy", "p")
        ),
        format!(
            "SELECT xp.customer_id, sum(CASE WHEN p.payment_type = 'premium' THEN p.amount ELSE -p.amount END) AS net_premium, \
             count(*) AS payments FROM {} WHERE p.paid_month >= '2023-06' GROUP BY xp.customer_id \
             ORDER BY net_premium DESC, xp.customer_id LIMIT 100",
            golden("payment", "p")
        ),
        "WITH recent AS (SELECT source_system, source_customer_id FROM policy WHERE effective_month >= '2024-06' \
         UNION ALL SELECT source_system, source_customer_id FROM payment WHERE paid_month >= '2024-06' \
         UNION ALL SELECT source_system, source_customer_id FROM interaction WHERE event_month >= '2024-06'), \
         active AS (SELECT DISTINCT x.customer_id FROM recent r JOIN customer_xref x ON x.source_system = r.source_system \
         AND x.source_id = r.source_customer_id) SELECT c.customer_id, c.customer_type, c.name, c.phone, c.email \
         FROM customer c LEFT JOIN active a ON a.customer_id = c.customer_id WHERE a.customer_id IS NULL AND c.status = 'active'"
            .to_string(),
        format!(
            "SELECT p.policy_no, p.product_line, p.expiry_date, p.premium, c.customer_id, c.name, c.phone \
             FROM {} JOIN customer c ON c.customer_id = xp.customer_id WHERE p.status = 'active' \
             AND p.expiry_date >= DATE '2026-06-30' AND p.expiry_date < DATE '2026-07-30' \
             ORDER BY p.expiry_date, p.policy_no LIMIT 1000",
            golden("policy", "p")
        ),
        "SELECT source_system, count(*) AS records, count(*) - count(phone) AS phone_null, \
         sum(CASE WHEN id_type = 'resident_id' AND NOT is_valid_resident_id(id_number) THEN 1 ELSE 0 END) AS id_invalid \
         FROM source_customer GROUP BY source_system"
            .to_string(),
        // Every tier: each row once, whole (a count with no column read
        // splits the files into byte ranges, each task reading its own).
        "SELECT * FROM policy ORDER BY policy_no".to_string(),
        "SELECT count(*), sum(premium) FROM policy".to_string(),
        "SELECT count(*) FROM payment".to_string(),
        "SELECT paid_month, count(*), sum(amount) FROM payment GROUP BY paid_month ORDER BY paid_month"
            .to_string(),
        "SELECT count(*), count(DISTINCT policy_no) FROM policy WHERE effective_month < '2024-06'"
            .to_string(),
        // The scores and their segments (the named query's body).
        "SELECT customer_type, value_tier, lifecycle_stage, count(*) AS customers, sum(premium_3y) AS premium_3y, \
         round(avg(churn_risk), 2) AS avg_churn_risk FROM customer_score WHERE as_of = \
         (SELECT max(as_of) FROM customer_score WHERE as_of <= DATE '2026-06-30') \
         GROUP BY customer_type, value_tier, lifecycle_stage ORDER BY customer_type, value_tier, lifecycle_stage"
            .to_string(),
    ]
}

#[test]
fn the_cluster_answers_as_the_local_engine_over_three_tiers_and_survives_a_lost_executor() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let s3 = crate::tiers::s3_server("the cluster test's warm and cold tiers");
    crate::tiers::write_config(d, s3.as_ref(), &crate::tiers::prefix_of(d));
    // Four partitions a stage, more than one executor's two task slots:
    // every stage is cut into several tasks, each of which must read only
    // its own partitions.
    let toml = std::fs::read_to_string(d.join("custlake.toml")).unwrap();
    std::fs::write(
        d.join("custlake.toml"),
        format!("{toml}[query]\ntarget_partitions = 4\n"),
    )
    .unwrap();
    let s = sample(d, 300, 11);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    ok(d, &["score", "--as-of", "2026-06-30"]);
    ok(d, &["tier", "apply", "--as-of", "2026-06-30"]);
    // Rows in all three tiers.
    let status: serde_json::Value =
        serde_json::from_str(&ok(d, &["tier", "status", "--json"])).unwrap();
    for tier in ["hot", "warm", "cold"] {
        let rows: u64 = status
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["table"] == "policy" && s["tier"] == tier)
            .map(|s| s["rows"].as_u64().unwrap_or(0))
            .sum();
        assert!(rows > 0, "no policy rows in the {tier} tier: {status}");
    }
    let lake = d.join("data/lake");
    let mut cluster = start(d, &lake);

    for sql in shapes() {
        let local = csv(d, &sql, None);
        let remote = csv(d, &sql, Some(&cluster));
        assert!(local.lines().count() > 1, "no rows locally: {sql}");
        assert_eq!(
            sorted(&remote),
            sorted(&local),
            "the cluster answered differently: {sql}"
        );
    }
    // The statement really ran on the cluster: its plan names the tier
    // scans the executors planned again. (A bare `count(*)` reads no rows:
    // the tables' statistics answer it, on the cluster's planner as
    // locally.)
    let plan = csv(
        d,
        "EXPLAIN SELECT count(DISTINCT product_line) FROM policy",
        Some(&cluster),
    );
    assert!(plan.contains("TierScanExec"), "{plan}");
    // Its partitions are the tables' files (so Ballista cuts the scan into
    // tasks), not one partition read whole.
    assert!(plan.contains("partitions of"), "{plan}");
    assert!(!plan.contains("read whole"), "{plan}");

    // A statement past its timeout answers 504 at once, and its job is
    // cancelled on the cluster (the scheduler logs the request).
    let mut config = crate::tiers::config_of(d);
    config.server.engine = custlake::config::Engine::Ballista;
    config.server.scheduler_url = cluster.scheduler.clone();
    let api = crate::server::Api::over(d, config);
    let slow = api.query(
        "json",
        serde_json::json!({
            "sql": "SELECT count(*) FROM payment a, payment b, policy c WHERE a.amount + b.amount > c.premium",
            "timeout_ms": 1000
        }),
    );
    assert_eq!(slow.status, 504, "{}", slow.text());
    // The analytics named queries, as an admin over HTTP, answer as the
    // local engine's.
    let local_api = crate::server::Api::over(d, crate::tiers::config_of(d));
    for (name, params) in [
        ("segment_counts", "as_of=2026-06-30&"),
        ("value_distribution", "as_of=2026-06-30&"),
        ("lifecycle_flows", "from=2025-06-30&to=2026-06-30&"),
        ("policies_expiring", "as_of=2026-06-30&days=60&"),
        ("customer_count", ""),
        ("quarantine_summary", ""),
    ] {
        let path = format!("/v1/queries/{name}?{params}format=csv");
        let there = api.request("GET", &path, &[], b"");
        let here = local_api.request("GET", &path, &[], b"");
        assert_eq!(there.status, 200, "{path}: {}", there.text());
        assert!(here.text().lines().count() > 1, "{path}: no rows locally");
        assert_eq!(sorted(&there.text()), sorted(&here.text()), "{path}");
    }
    drop(local_api);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let log = std::fs::read_to_string(d.join("scheduler.log")).unwrap_or_default();
        if log.contains("Received cancellation request for job") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the timed-out statement's job was not cancelled:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(api);

    // An executor lost in the middle of a job: the statement fails with
    // an error, or answers in full; never part of the rows as the whole.
    let sql = format!(
        "SELECT xa.customer_id, count(*) AS pairs FROM {} JOIN policy b ON b.product_line = a.product_line \
         GROUP BY xa.customer_id ORDER BY xa.customer_id",
        golden("policy", "a")
    );
    let local = csv(d, &sql, None);
    let mut args = vec![
        "--quiet".to_string(),
        "sql".into(),
        "--format".into(),
        "csv".into(),
        "--engine".into(),
        "ballista".into(),
        "--scheduler".into(),
        cluster.scheduler.clone(),
        sql.clone(),
    ];
    args.insert(0, "--lake".into());
    args.insert(1, lake.to_string_lossy().to_string());
    let submitted = || {
        std::fs::read_to_string(d.join("scheduler.log"))
            .unwrap_or_default()
            .matches("Job submitted")
            .count()
    };
    let before = submitted();
    let child = Command::new(bin())
        .current_dir(d)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The executor goes once the job is submitted (a fixed wait after the
    // start could kill it before the job under load: the job then waited
    // for an executor the scheduler had not yet taken for lost).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while submitted() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cluster.kill_executor(1);
    // The scheduler takes the executor for lost after its timeout (the
    // default 20 s) and runs its tasks again, or fails the job.
    let mut child = child;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the statement neither finished nor failed 120 s after an executor was lost");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "after a lost executor the statement {}",
        if out.status.success() {
            "answered in full"
        } else {
            "failed"
        }
    );
    if out.status.success() {
        assert_eq!(
            sorted(&stdout),
            sorted(&local),
            "an answer after a lost executor must be whole"
        );
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cluster"), "{err}");
        assert!(stdout.is_empty(), "rows before the failure: {stdout}");
    }
    // The other executor still serves.
    let again = run_in(
        d,
        &[
            "sql",
            "--format",
            "csv",
            "--engine",
            "ballista",
            "--scheduler",
            &cluster.scheduler,
            "SELECT count(*) FROM policy",
        ],
    );
    let want = csv(d, "SELECT count(*) FROM policy", None);
    if again.status.success() {
        assert_eq!(String::from_utf8_lossy(&again.stdout), want);
    }
}

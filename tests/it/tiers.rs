//! Hot, warm and cold tiers: moves by age, one logical table, pruning by
//! tier, purging with legal holds, crash safety and time travel.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use custlake::lake::{Lake, Tier, tiers};
use custlake::schema::Catalog;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result as OsResult,
};
use futures::stream::BoxStream;

use crate::common::{ok, query, sample};

/// Counts requests, records the kind of each write, and fails the
/// `fail_at`-th write (1-based) if set.
#[derive(Debug)]
struct Probe {
    inner: Arc<dyn ObjectStore>,
    reads: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
    kinds: Arc<std::sync::Mutex<Vec<&'static str>>>,
    fail_at: Option<usize>,
}

/// What a write is, from its path: a Delta commit, a checkpoint, a data
/// file, a catalog record (watermarks, leases, holds), or something else.
fn write_kind(path: &ObjectPath) -> &'static str {
    let p = path.as_ref();
    if p.contains("checkpoint") {
        "checkpoint"
    } else if p.contains("_delta_log/") {
        "commit"
    } else if p.ends_with(".parquet") {
        "data"
    } else if p.contains("_catalog/tiers") {
        "watermarks"
    } else if p.contains("_catalog/locks") {
        "lease"
    } else if p.contains("_catalog/") {
        "catalog"
    } else {
        "other"
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Probe({})", self.inner)
    }
}

impl Probe {
    fn write(&self, path: &ObjectPath) -> OsResult<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        self.kinds.lock().unwrap().push(write_kind(path));
        if self.fail_at == Some(n) {
            return Err(datafusion::object_store::Error::Generic {
                store: "probe",
                source: format!("write {n} fails on purpose").into(),
            });
        }
        Ok(())
    }
    fn read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl ObjectStore for Probe {
    async fn put_opts(&self, l: &ObjectPath, p: PutPayload, o: PutOptions) -> OsResult<PutResult> {
        self.write(l)?;
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &ObjectPath,
        o: PutMultipartOptions,
    ) -> OsResult<Box<dyn MultipartUpload>> {
        self.write(l)?;
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &ObjectPath, o: GetOptions) -> OsResult<GetResult> {
        self.read();
        self.inner.get_opts(l, o).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, OsResult<ObjectPath>>,
    ) -> BoxStream<'static, OsResult<ObjectPath>> {
        use futures::StreamExt;
        let writes = self.writes.clone();
        let kinds = self.kinds.clone();
        let fail_at = self.fail_at;
        let checked = locations.map(move |l| {
            let n = writes.fetch_add(1, Ordering::SeqCst) + 1;
            kinds.lock().unwrap().push("delete");
            if fail_at == Some(n) {
                return Err(datafusion::object_store::Error::Generic {
                    store: "probe",
                    source: format!("delete {n} fails on purpose").into(),
                });
            }
            l
        });
        self.inner.delete_stream(checked.boxed())
    }
    fn list(&self, prefix: Option<&ObjectPath>) -> BoxStream<'static, OsResult<ObjectMeta>> {
        self.read();
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> OsResult<ListResult> {
        self.read();
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &ObjectPath, to: &ObjectPath, o: CopyOptions) -> OsResult<()> {
        self.write(to)?;
        self.inner.copy_opts(from, to, o).await
    }
    async fn rename_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        o: RenameOptions,
    ) -> OsResult<()> {
        self.write(to)?;
        self.inner.rename_opts(from, to, o).await
    }
}

/// A real S3-compatible server process (`s3s-fs`, from crates.io; `.ci/run`
/// installs it) serving a temporary directory, stopped when dropped.
pub(crate) struct S3Server {
    child: std::process::Child,
    port: u16,
    _root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BUCKET: &str = "custlake";

/// Start the S3 server if it is installed. Without it, `None` (and a line
/// saying what is skipped), unless `CUSTLAKE_REQUIRE_S3=1`, which makes its
/// absence a failure.
pub(crate) fn s3_server(test: &str) -> Option<S3Server> {
    let candidates = [
        std::env::var_os("CUSTLAKE_S3_SERVER").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/custlake/tools/bin/s3s-fs")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs")),
    ];
    let Some(bin) = candidates.into_iter().flatten().find(|p| p.is_file()) else {
        assert!(
            std::env::var("CUSTLAKE_REQUIRE_S3").as_deref() != Ok("1"),
            "CUSTLAKE_REQUIRE_S3=1 but no S3 server: install it with \
             `cargo install s3s-fs --version 0.14.1 --features binary --root ~/.cache/custlake/tools`"
        );
        eprintln!("{test}: skipped, no S3 server installed (see .ci/run)");
        return None;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(BUCKET)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            "custlake",
            "--secret-key",
            "custlake-secret",
        ])
        .arg(root.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut server = S3Server {
        child,
        port,
        _root: root,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            server.port = relay(port);
            return Some(server);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the S3 server did not start on port {port}");
}

/// A relay on loopback in front of the S3 server, acknowledging every
/// segment at once; returns its port. The test server writes a response's
/// head and body in two writes without `TCP_NODELAY`, so each response
/// waited out the receiver's delayed acknowledgement (40 ms) and a tier
/// move's few hundred requests took tens of seconds. Real S3 endpoints do
/// not wait like that; the relay takes the wait out of the tests without
/// changing a byte of what custlake sends or receives.
fn relay(server: u16) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", server)) else {
                continue;
            };
            let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
                continue;
            };
            pipe(client, upstream);
            pipe(u2, c2);
        }
    });
    port
}

/// Copy `from` to `to` until either side closes, acknowledging each read.
fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let _ = to.set_nodelay(true);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let _ = socket2::SockRef::from(&from).set_tcp_quickack(true);
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// Write `dir/custlake.toml`: 30 years of retention, and with a server,
/// warm and cold under `s3://custlake/<prefix>/` while hot stays on disk.
pub(crate) fn write_config(dir: &Path, s3: Option<&S3Server>, prefix: &str) {
    std::fs::create_dir_all(dir).unwrap();
    // A lease a killed run left must not hold up the rerun (it would for
    // a minute, past this wait, and fail).
    let mut toml = String::from("[tiers]\nlock_wait_seconds = 20\n[retention]\nyears = 30\n");
    if let Some(s) = s3 {
        toml.push_str(&format!(
            "[tiers.warm]\nurl = \"s3://{BUCKET}/{prefix}/warm\"\n\
             [tiers.cold]\nurl = \"s3://{BUCKET}/{prefix}/cold\"\n\
             [s3]\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"custlake\"\nsecret_access_key = \"custlake-secret\"\nallow_http = true\n",
            s.port
        ));
    }
    std::fs::write(dir.join("custlake.toml"), toml).unwrap();
}

/// Sets `[tiers] lock_wait_seconds` in the configuration `write_config` wrote.
fn set_lock_wait(dir: &Path, seconds: u64) {
    let path = dir.join("custlake.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    assert!(toml.contains("lock_wait_seconds = 20"), "{toml}");
    let toml = toml.replace(
        "lock_wait_seconds = 20",
        &format!("lock_wait_seconds = {seconds}"),
    );
    std::fs::write(path, toml).unwrap();
}

/// The configuration the CLI uses in `dir`.
pub(crate) fn config_of(dir: &Path) -> custlake::config::Config {
    custlake::config::Config::load(
        Some(&dir.join("custlake.toml")),
        &custlake::config::Overrides {
            lake: Some(dir.join("data/lake").to_string_lossy().to_string()),
        },
    )
    .unwrap()
}

struct Counters {
    reads: [Arc<AtomicUsize>; 3],
    kinds: Arc<std::sync::Mutex<Vec<&'static str>>>,
}

/// The lake under `dir`, every tier behind a probe; writes are counted
/// across all tiers and the `fail_at`-th fails.
fn probed_lake(dir: &Path, fail_at: Option<usize>) -> (Lake, Counters) {
    let config = config_of(dir);
    let mut lake = Lake::new(&config).unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    let kinds = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reads: [Arc<AtomicUsize>; 3] = Default::default();
    for tier in Tier::ALL {
        let r = reads[tier as usize].clone();
        let (w, k) = (writes.clone(), kinds.clone());
        lake.wrap_store(tier, move |inner| {
            Arc::new(Probe {
                inner,
                reads: r,
                writes: w,
                kinds: k,
                fail_at,
            })
        });
    }
    (lake, Counters { reads, kinds })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A query context over every table of the lake.
async fn lake_context(lake: &Lake) -> datafusion::prelude::SessionContext {
    let ctx = custlake::query::context(&custlake::config::Config::embedded()).unwrap();
    custlake::query::register_lake(&ctx, lake, &Catalog::embedded().unwrap(), None)
        .await
        .unwrap();
    ctx
}

/// Policies read from the lake once, to be loaded back changed.
struct Reload {
    ctx: datafusion::prelude::SessionContext,
    rows: usize,
}

impl Reload {
    async fn read(lake: &Lake, sql: &str) -> Reload {
        let ctx = lake_context(lake).await;
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let ctx = custlake::lake::session::write_context();
        ctx.register_batch(
            "input",
            datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap(),
        )
        .unwrap();
        Reload { ctx, rows }
    }

    /// Upsert the rows into `policy`, the `changed` columns given by SQL
    /// expressions over the rows read.
    async fn load(&self, lake: &Lake, changed: &[(&str, String)]) {
        let def = Catalog::embedded()
            .unwrap()
            .table("policy")
            .unwrap()
            .clone();
        let columns: Vec<String> = def
            .fields
            .iter()
            .map(|f| match changed.iter().find(|c| c.0 == f.name) {
                Some((name, sql)) => format!("{sql} AS \"{name}\""),
                None => format!("\"{}\"", f.name),
            })
            .collect();
        let df = self
            .ctx
            .sql(&format!("SELECT {} FROM input", columns.join(", ")))
            .await
            .unwrap();
        custlake::lake::upsert(lake, &self.ctx, &def, df, false, Vec::new())
            .await
            .unwrap();
    }
}

/// Rows of a query through the library, as text lines.
async fn rows(lake: &Lake, sql: &str) -> Vec<String> {
    let ctx = lake_context(lake).await;
    let batches = match ctx.sql(sql).await {
        Ok(df) => df.collect().await,
        Err(e) => Err(e),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    text.lines().map(str::to_string).collect()
}

/// A lake with policies only (the tiered table these tests move), kept
/// for 30 years so that moves alone change nothing a reader sees.
fn policy_lake(dir: &Path, s3: Option<&S3Server>) -> PathBuf {
    write_config(dir, s3, &prefix_of(dir));
    let s = sample(dir, 400, 5);
    ok(
        dir,
        &[
            "ingest",
            "--source",
            "core",
            "--entity",
            "policy",
            s.join("core/policies.csv").to_str().unwrap(),
        ],
    );
    s
}

/// Every policy row, ordered, as CSV: the content checksum.
const ALL_POLICIES: &str = "SELECT * FROM policy ORDER BY policy_no";
const KEYS_ONCE: &str = "SELECT count(*) - count(DISTINCT policy_no) FROM policy";

/// Compare row lists without printing thousands of rows.
#[track_caller]
fn same_rows(got: &[String], want: &[String], context: &str) {
    if got != want {
        let extra: Vec<&String> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
        let missing: Vec<&String> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
        panic!(
            "{context}: {} rows, expected {}; e.g. extra {extra:?}, missing {missing:?}",
            got.len(),
            want.len()
        );
    }
}

/// An S3 prefix of the lake's own, from its directory name.
pub(crate) fn prefix_of(dir: &Path) -> String {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let parent = dir
        .parent()
        .and_then(|p| p.file_name())
        .unwrap()
        .to_string_lossy()
        .to_string();
    format!("{parent}-{name}").replace('.', "")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Run the move again; then the same rows, no key twice, and every tier
/// holding only partitions it owns.
fn rerun_and_check(d: &Path, before: &[String], after: &str) {
    ok(d, &["tier", "apply", "--as-of", "2026-06-30"]);
    same_rows(
        &query(d, ALL_POLICIES),
        before,
        &format!("rerun after {after}"),
    );
    assert_eq!(query(d, KEYS_ONCE), ["0"], "rerun after {after}");
    assert_tiers_clean(d);
}

/// After a move, each tier holds only partitions it owns.
fn assert_tiers_clean(d: &Path) {
    let status: serde_json::Value =
        serde_json::from_str(&ok(d, &["tier", "status", "--json"])).unwrap();
    for s in status.as_array().unwrap() {
        if s["owns"] == false {
            assert_eq!(s["rows"], 0, "{s}");
            continue;
        }
        let (first, last) = (s["first"].as_str(), s["last"].as_str());
        let (from, before) = (s["range_from"].as_str(), s["range_before"].as_str());
        if let (Some(f), Some(from)) = (first, from) {
            assert!(f >= from, "{s}: holds {f}, owns from {from}");
        }
        if let (Some(l), Some(before)) = (last, before) {
            assert!(l < before, "{s}: holds {l}, owns before {before}");
        }
    }
}

/// Each case runs with every tier on disk, and again with warm and cold on
/// a real S3 server.
macro_rules! on_disk_and_s3 {
    ($case:ident, $disk:ident, $s3:ident) => {
        #[test]
        fn $disk() {
            $case(None);
        }
        #[test]
        fn $s3() {
            if let Some(server) = s3_server(stringify!($s3)) {
                $case(Some(&server));
            }
        }
    };
}

on_disk_and_s3!(
    moves_by_age,
    tier_apply_moves_by_age_and_readers_see_one_table,
    tier_apply_moves_by_age_with_warm_and_cold_on_s3
);
on_disk_and_s3!(
    holds,
    purging_spares_what_a_legal_hold_covers,
    purging_spares_what_a_legal_hold_covers_on_s3
);
on_disk_and_s3!(
    pruning,
    a_query_on_recent_months_reads_nothing_from_warm_or_cold,
    a_query_on_recent_months_reads_nothing_from_s3
);
on_disk_and_s3!(
    failed_writes,
    a_move_that_fails_at_any_write_finishes_on_rerun,
    a_move_to_s3_that_fails_at_any_write_finishes_on_rerun
);
on_disk_and_s3!(
    kills,
    a_killed_move_finishes_on_rerun,
    a_killed_move_to_s3_finishes_on_rerun
);
on_disk_and_s3!(
    concurrent_reader,
    a_reader_during_moves_never_sees_a_row_twice_or_misses_one,
    a_reader_during_moves_to_s3_never_sees_a_row_twice_or_misses_one
);

fn moves_by_age(s3: Option<&S3Server>) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let s = policy_lake(d, s3);
    // Nothing is past 30 years: every row must survive.
    let before = query(d, ALL_POLICIES);
    assert!(before.len() > 500);
    let tree = crate::common::tree(&d.join("data"));
    let plan = ok(d, &["tier", "plan", "--as-of", "2026-06-30"]);
    assert!(
        plan.contains("hot → warm") && plan.contains("hot → cold"),
        "{plan}"
    );
    assert_eq!(
        crate::common::tree(&d.join("data")),
        tree,
        "plan changed the lake"
    );
    let version_before = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(std::time::Duration::from_millis(1100));

    ok(d, &["tier", "apply", "--as-of", "2026-06-30"]);
    same_rows(&query(d, ALL_POLICIES), &before, "after the move");
    assert_tiers_clean(d);
    let status: serde_json::Value =
        serde_json::from_str(&ok(d, &["tier", "status", "--json"])).unwrap();
    let tier = |name: &str| {
        status
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["table"] == "policy" && s["tier"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(tier("hot")["range_from"], "2025-06");
    assert_eq!(tier("warm")["range_from"], "2024-06");
    assert_eq!(tier("cold")["range_before"], "2024-06");
    for name in ["hot", "warm", "cold"] {
        assert!(tier(name)["rows"].as_u64().unwrap() > 0, "{name} is empty");
    }
    // Again: nothing left to do.
    assert!(ok(d, &["tier", "apply", "--as-of", "2026-06-30"]).contains("nothing to move"));

    // A reload goes to the tiers that own each row: nothing doubles.
    ok(
        d,
        &[
            "ingest",
            "--source",
            "core",
            "--entity",
            "policy",
            s.join("core/policies.csv").to_str().unwrap(),
        ],
    );
    same_rows(&query(d, ALL_POLICIES), &before, "after the move");
    assert_eq!(query(d, KEYS_ONCE), ["0"]);
    assert_tiers_clean(d);

    // As of before the move, the same rows, read from the hot tier alone.
    let then = ok(
        d,
        &[
            "sql",
            "--format",
            "csv",
            "--as-of",
            &version_before,
            ALL_POLICIES,
        ],
    );
    assert_eq!(then.lines().skip(1).collect::<Vec<_>>(), before);
    let err = crate::common::fails(d, &["sql", "--as-of", "last tuesday", "SELECT 1"]);
    assert!(err.contains("--as-of"), "{err}");
}

/// A day on which all of `month` (YYYY-MM) is `years` old: the first of
/// the month after it, `years` later (a month is purged only then).
fn all_past(month: &str, years: i32) -> String {
    let (year, m): (i32, u32) = (month[..4].parse().unwrap(), month[5..7].parse().unwrap());
    let (y, m) = if m == 12 {
        (year + years + 1, 1)
    } else {
        (year + years, m + 1)
    };
    format!("{y:04}-{m:02}-01")
}

fn holds(s3: Option<&S3Server>) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    policy_lake(d, s3);
    let toml = std::fs::read_to_string(d.join("custlake.toml")).unwrap();
    std::fs::write(
        d.join("custlake.toml"),
        toml.replace("years = 30", "years = 10"),
    )
    .unwrap();
    let months = |sql: &str| query(d, sql);
    let oldest = months("SELECT min(effective_month) FROM policy")[0].clone();
    let held = months(&format!(
        "SELECT min(effective_month) FROM policy WHERE effective_month > '{oldest}'"
    ))[0]
        .clone();
    // Once all of the second-oldest month is ten years old, both oldest
    // months are due.
    let as_of = all_past(&held, 10);
    let err = crate::common::fails(d, &["hold", "add", "--from", "2020-13", "--reason", "x"]);
    assert!(err.contains("YYYY-MM"), "{err}");
    ok(
        d,
        &[
            "hold", "add", "--table", "policy", "--from", &held, "--to", &held, "--reason",
            "case 42",
        ],
    );
    assert!(ok(d, &["hold", "list"]).contains("case 42"));
    let kept = query(
        d,
        &format!("SELECT count(*) FROM policy WHERE effective_month = '{held}'"),
    );
    let plan = ok(d, &["tier", "plan", "--as-of", &as_of]);
    assert!(plan.contains("purged"), "{plan}");
    ok(d, &["tier", "apply", "--as-of", &as_of]);
    assert_eq!(
        query(
            d,
            &format!("SELECT count(*) FROM policy WHERE effective_month = '{oldest}'")
        ),
        ["0"]
    );
    // Removed from disk too, not only from the table.
    let dir = d.join(format!("data/lake/hot/policy/effective_month={oldest}"));
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "purged files left in {}: {left:?}",
        dir.display()
    );
    assert_eq!(
        query(
            d,
            &format!("SELECT count(*) FROM policy WHERE effective_month = '{held}'")
        ),
        kept
    );
    let id = ok(d, &["hold", "list", "--json"]);
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let id = id[0]["id"].as_str().unwrap().to_string();
    ok(d, &["hold", "remove", &id]);
    ok(d, &["tier", "apply", "--as-of", &as_of]);
    assert_eq!(
        query(
            d,
            &format!("SELECT count(*) FROM policy WHERE effective_month = '{held}'")
        ),
        ["0"]
    );
    assert!(crate::common::fails(d, &["hold", "remove", &id]).contains("no hold"));
}

fn pruning(s3: Option<&S3Server>) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    policy_lake(d, s3);
    ok(d, &["tier", "apply", "--as-of", "2026-06-30"]);
    let rt = rt();
    let (lake, c) = probed_lake(d, None);
    let reads = |c: &Counters| {
        c.reads
            .iter()
            .map(|r| r.swap(0, Ordering::SeqCst))
            .collect::<Vec<_>>()
    };
    reads(&c);
    let recent = rt.block_on(rows(
        &lake,
        "SELECT count(*) FROM policy WHERE effective_month >= '2026-04'",
    ));
    let r = reads(&c);
    assert!(r[Tier::Hot as usize] > 0);
    assert_eq!(
        (r[Tier::Warm as usize], r[Tier::Cold as usize]),
        (0, 0),
        "{recent:?}"
    );
    // Two years back reaches warm but not cold.
    rt.block_on(rows(
        &lake,
        "SELECT count(*) FROM policy WHERE effective_month BETWEEN '2024-07' AND '2026-06'",
    ));
    let r = reads(&c);
    assert!(r[Tier::Warm as usize] > 0);
    assert_eq!(r[Tier::Cold as usize], 0);
    // All history reads all three.
    rt.block_on(rows(&lake, "SELECT count(*) FROM policy"));
    assert!(reads(&c).iter().all(|n| *n > 0));
}

/// Remove a finished run: its directory and, on S3, its warm and cold
/// objects (the test server lists its whole bucket for every listing, so
/// leftovers of earlier runs would slow every later one).
fn remove_run(rt: &tokio::runtime::Runtime, d: &Path, s3: Option<&S3Server>) {
    if s3.is_some() {
        let lake = Lake::new(&config_of(d)).unwrap();
        rt.block_on(async {
            use datafusion::object_store::ObjectStoreExt;
            use futures::TryStreamExt;
            for tier in [Tier::Warm, Tier::Cold] {
                let (store, root) = lake.store(tier);
                let paths: Vec<ObjectPath> = store
                    .list(Some(&root))
                    .map_ok(|m| m.location)
                    .try_collect()
                    .await
                    .unwrap_or_default();
                for p in paths {
                    let _ = store.delete(&p).await;
                }
            }
        });
    }
    let _ = std::fs::remove_dir_all(d);
}

/// The writes to fail, by number: on disk every one in turn; on the S3
/// server (where each rerun's checks are slow) the first write of every
/// kind, the last one, and a few in between, so that every kind of write
/// still fails once.
fn writes_to_fail(kinds: &[&'static str], every: bool) -> Vec<usize> {
    let total = kinds.len();
    if every {
        return (1..=total).collect();
    }
    let mut picked = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, k) in kinds.iter().enumerate() {
        if seen.insert(*k) {
            picked.insert(i + 1);
        }
    }
    picked.insert(total);
    for i in 1..=3 {
        picked.insert((total * i / 4).max(1));
    }
    picked.into_iter().collect()
}

fn failed_writes(s3: Option<&S3Server>) {
    let t = tempfile::tempdir().unwrap();
    let template = t.path().join("template");
    policy_lake(&template, s3);
    let before = query(&template, ALL_POLICIES);
    let rt = rt();
    let catalog = Catalog::embedded().unwrap();
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 6, 30).unwrap();
    // A month later, one month moves hot → warm and one warm → cold:
    // every step of a move, with few enough writes to fail each in turn.
    let setup = |n: usize| {
        let d = t.path().join(format!("run{n}"));
        copy_dir(&template, &d);
        write_config(&d, s3, &prefix_of(&d));
        ok(&d, &["tier", "apply", "--as-of", "2026-05-15"]);
        d
    };
    let apply = |lake: &Lake| {
        rt.block_on(async {
            let plans = tiers::plan(lake, &catalog, as_of).await?;
            tiers::apply(lake, &catalog, &plans, &[], &custlake::progress::Silent).await
        })
    };
    // The move once without failures: which writes it makes.
    let d = setup(0);
    let (lake, counters) = probed_lake(&d, None);
    apply(&lake).unwrap();
    let kinds = counters.kinds.lock().unwrap().clone();
    assert!(kinds.len() >= 6, "the move made {} writes", kinds.len());
    remove_run(&rt, &d, s3);
    let failing = writes_to_fail(&kinds, s3.is_none());
    eprintln!(
        "a move of two months makes {} writes ({:?}); failing {} of them in turn",
        kinds.len(),
        kinds.iter().collect::<std::collections::BTreeSet<_>>(),
        failing.len()
    );
    for n in failing {
        let d = setup(n);
        let (lake, _) = probed_lake(&d, Some(n));
        // The move stops at the failed write (or, if that write was the
        // best-effort pruning of old lease records, finishes without it).
        let _ = apply(&lake);
        // Mid-way, and after the rerun, the rows are the same.
        assert_eq!(query(&d, KEYS_ONCE), ["0"], "after failing write {n}");
        same_rows(
            &query(&d, ALL_POLICIES),
            &before,
            &format!("after failing write {n}"),
        );
        rerun_and_check(&d, &before, &format!("failing write {n}"));
        remove_run(&rt, &d, s3);
    }
}

fn kills(s3: Option<&S3Server>) {
    let t = tempfile::tempdir().unwrap();
    let template = t.path().join("template");
    policy_lake(&template, s3);
    let before = query(&template, ALL_POLICIES);
    // Stopped after each kind of write: a purge, the first and second
    // range copies, the watermarks, a delete, a vacuum.
    for (i, point) in [
        "tier.after_purge",
        "tier.after_copy",
        "tier.after_copy@2",
        "tier.after_watermarks",
        "tier.after_delete",
        "tier.after_vacuum",
    ]
    .into_iter()
    .enumerate()
    {
        let d = t.path().join(format!("kill{i}"));
        copy_dir(&template, &d);
        write_config(&d, s3, &prefix_of(&d));
        let status = std::process::Command::new(crate::common::bin())
            .current_dir(&d)
            .args(["--quiet", "tier", "apply", "--as-of", "2026-06-30"])
            .env("CUSTLAKE_FAILPOINT", point)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        // Every point but the purge is on this move's path.
        assert!(point == "tier.after_purge" || !status.success(), "{point}");
        same_rows(
            &query(&d, ALL_POLICIES),
            &before,
            &format!("stopped at {point}"),
        );
        rerun_and_check(&d, &before, &format!("a stop at {point}"));
    }
}

/// Month by month, `months` moves from July 2023 on, in a task; the flag
/// says when they are done.
fn monthly_moves(
    rt: &tokio::runtime::Runtime,
    lake: &Lake,
    months: u32,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = {
        let lake = lake.clone();
        let done = done.clone();
        rt.spawn(async move {
            let catalog = Catalog::embedded().unwrap();
            for m in 0..months {
                let day =
                    chrono::NaiveDate::from_ymd_opt(2023, 7, 1).unwrap() + chrono::Months::new(m);
                let plans = tiers::plan(&lake, &catalog, day).await.unwrap();
                tiers::apply(&lake, &catalog, &plans, &[], &custlake::progress::Silent)
                    .await
                    .unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    (mover, done)
}

fn concurrent_reader(s3: Option<&S3Server>) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    policy_lake(d, s3);
    let rt = rt();
    // Removed files are kept for the grace period, as a reader that started
    // before a move needs.
    let (lake, _) = probed_lake(d, None);
    let sql = "SELECT count(*), count(DISTINCT policy_no), sum(premium) FROM policy";
    let expected = rt.block_on(rows(&lake, sql));
    let (mover, done) = monthly_moves(&rt, &lake, 36);
    let mut reads = 0;
    while !done.load(Ordering::SeqCst) && !mover.is_finished() {
        assert_eq!(rt.block_on(rows(&lake, sql)), expected, "read {reads}");
        reads += 1;
    }
    rt.block_on(mover).unwrap();
    assert!(reads > 3, "only {reads} reads ran during the moves");
    assert_eq!(rt.block_on(rows(&lake, sql)), expected);
}

#[test]
fn a_customer_under_hold_keeps_rows_past_retention() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("custlake.toml"), "[retention]\nyears = 10\n").unwrap();
    let s = sample(d, 300, 7);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    let oldest = query(d, "SELECT min(effective_month) FROM policy")[0].clone();
    let customer = query(
        d,
        &format!(
            "SELECT customer_id FROM customer_policy WHERE effective_month = '{oldest}' \
             AND customer_id IS NOT NULL ORDER BY customer_id LIMIT 1"
        ),
    )[0]
    .clone();
    let theirs = format!(
        "SELECT policy_no FROM customer_policy WHERE customer_id = '{customer}' \
         AND effective_month = '{oldest}' ORDER BY policy_no"
    );
    let kept = query(d, &theirs);
    assert!(!kept.is_empty());
    ok(
        d,
        &[
            "hold",
            "add",
            "--customer",
            &customer,
            "--reason",
            "litigation",
        ],
    );
    let as_of = all_past(&oldest, 10);
    let applied: serde_json::Value =
        serde_json::from_str(&ok(d, &["tier", "apply", "--as-of", &as_of, "--json"])).unwrap();
    assert!(applied["rows_purged"].as_u64().unwrap() > 0, "{applied}");
    // Their rows stay; nobody else's in that month does.
    assert_eq!(query(d, &theirs), kept);
    assert_eq!(
        query(
            d,
            &format!(
                "SELECT count(*) FROM customer_policy WHERE effective_month = '{oldest}' \
                 AND (customer_id IS NULL OR customer_id <> '{customer}')"
            )
        ),
        ["0"]
    );
}

#[test]
fn loads_during_moves_lose_nothing() {
    loads_during_moves(None, 36);
}

// Six moves, not 36: each move to the S3 server takes tens of seconds in a
// debug build, and 36 of them took about 15 minutes.
#[test]
fn loads_during_moves_to_s3_lose_nothing() {
    if let Some(server) = s3_server("loads_during_moves_to_s3_lose_nothing") {
        loads_during_moves(Some(&server), 6);
    }
}

/// Loads rewriting rows of every month while month after month moves: each
/// waits for the other (the table lease), so no load lands in a range being
/// moved or in a tier that no longer owns its rows.
fn loads_during_moves(s3: Option<&S3Server>, months: u32) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    policy_lake(d, s3);
    // Here the lease is busy by design: a load waits out a whole move, and a
    // move a whole load, which on a busy machine can take longer than the
    // 20 s the other tests allow (no run is killed in this one).
    set_lock_wait(d, 900);
    let rt = rt();
    let (lake, _) = probed_lake(d, None);
    let total = rt.block_on(rows(&lake, "SELECT count(*) FROM policy"));
    // Every third policy, of every month, rewritten by each load.
    let chosen = rt.block_on(Reload::read(
        &lake,
        "SELECT * FROM (SELECT *, row_number() OVER (ORDER BY policy_no) AS n FROM policy) \
         WHERE n % 3 = 0",
    ));
    let n_chosen = chosen.rows;
    assert!(n_chosen > 100);
    let (mover, done) = monthly_moves(&rt, &lake, months);
    let mut round = 0;
    while round < 3 || (!done.load(Ordering::SeqCst) && !mover.is_finished()) {
        round += 1;
        let code = format!("product_code || '#{round}'");
        rt.block_on(chosen.load(&lake, &[("product_code", code)]));
    }
    rt.block_on(mover).unwrap();
    let scalar = |sql: &str| {
        let r = rt.block_on(rows(&lake, sql));
        r[3].trim_matches(|c| c == '|' || c == ' ').to_string()
    };
    assert_eq!(
        rt.block_on(rows(&lake, "SELECT count(*) FROM policy")),
        total
    );
    assert_eq!(scalar(KEYS_ONCE), "0");
    // Every chosen row carries the last load's change, wherever it moved.
    let last = scalar(&format!(
        "SELECT count(*) AS n FROM policy WHERE product_code LIKE '%#{round}'"
    ));
    assert_eq!(last, n_chosen.to_string(), "after {round} loads");
    assert_tiers_clean(d);
}

/// A process holding a table's lease keeps `tier apply` in another one
/// waiting (here, past `lock_wait_seconds`, into a clear error); once it is
/// released the move runs.
#[test]
fn tier_apply_waits_for_a_load_holding_the_table() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    policy_lake(d, None);
    set_lock_wait(d, 1);
    let rt = rt();
    let (lake, _) = probed_lake(d, None);
    let lease = rt
        .block_on(custlake::lake::lease::Lease::acquire(
            &lake,
            "policy",
            "a test load",
            std::time::Duration::from_secs(1),
            &|_| {},
        ))
        .unwrap();
    let plan = ok(d, &["tier", "plan", "--as-of", "2026-06-30"]);
    let err = crate::common::fails(d, &["tier", "apply", "--as-of", "2026-06-30"]);
    assert!(err.contains("policy is in use by a test load"), "{err}");
    assert!(
        err.contains(&format!("process {}", std::process::id())),
        "{err}"
    );
    // Nothing moved.
    assert_eq!(ok(d, &["tier", "plan", "--as-of", "2026-06-30"]), plan);
    rt.block_on(lease.release(&lake));
    ok(d, &["tier", "apply", "--as-of", "2026-06-30"]);
    assert_tiers_clean(d);
}

/// A load that corrects a policy's effective date into a month of another
/// tier moves the row there: the old version goes, the key stays once.
#[test]
fn a_row_whose_month_changes_tier_moves_with_it() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    policy_lake(d, None);
    ok(d, &["tier", "apply", "--as-of", "2026-06-30"]);
    let rt = rt();
    let (lake, _) = probed_lake(d, None);
    let total = query(d, "SELECT count(*) FROM policy");
    let first = |filter: &str| {
        query(
            d,
            &format!("SELECT policy_no FROM policy WHERE {filter} ORDER BY policy_no LIMIT 1"),
        )[0]
        .clone()
    };
    let hot = first("effective_month >= '2026-01'");
    let cold = first("effective_month < '2023-01'");
    let fix = rt.block_on(Reload::read(
        &lake,
        &format!("SELECT * FROM policy WHERE policy_no IN ('{hot}', '{cold}')"),
    ));
    rt.block_on(fix.load(
        &lake,
        &[
            (
                "effective_date",
                format!(
                    "CASE WHEN policy_no = '{hot}' THEN DATE '2020-03-10' \
                     ELSE DATE '2026-05-10' END"
                ),
            ),
            (
                "effective_month",
                format!("CASE WHEN policy_no = '{hot}' THEN '2020-03' ELSE '2026-05' END"),
            ),
        ],
    ));
    assert_eq!(query(d, "SELECT count(*) FROM policy"), total);
    assert_eq!(query(d, KEYS_ONCE), ["0"]);
    assert_eq!(
        query(
            d,
            &format!(
                "SELECT policy_no, effective_month FROM policy \
                 WHERE policy_no IN ('{hot}', '{cold}') ORDER BY effective_month"
            )
        ),
        [format!("{hot},2020-03"), format!("{cold},2026-05")]
    );
    assert_tiers_clean(d);
}

/// A statement reads text as views (its joins and aggregates take a view,
/// not a copy) and answers with the types it was planned with: plain
/// strings, whether the table is one Delta table or tiered.
#[test]
fn a_statement_reads_text_as_views_and_answers_plain_strings() {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::physical_plan::ExecutionPlan;
    fn views_inside(plan: &std::sync::Arc<dyn ExecutionPlan>) -> bool {
        plan.schema()
            .fields()
            .iter()
            .any(|f| f.data_type() == &DataType::Utf8View)
            || plan.children().into_iter().any(views_inside)
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    policy_lake(d, None);
    let rt = rt();
    let sql = "SELECT p.product_line, min(p.policy_no) AS first, count(*) AS n \
               FROM policy p JOIN policy q ON q.policy_no = p.policy_no \
               WHERE p.status <> 'x' GROUP BY p.product_line \
               UNION ALL SELECT 'none', 'none', 0 ORDER BY 1";
    let mut answers = Vec::new();
    for tiered in [false, true] {
        if tiered {
            ok(d, &["tier", "apply", "--as-of", "2026-06-30"]);
        }
        let lake = Lake::new(&config_of(d)).unwrap();
        let (plan, batches) = rt.block_on(async {
            let ctx = lake_context(&lake).await;
            let df = ctx.sql(sql).await.unwrap();
            let plan = df.clone().create_physical_plan().await.unwrap();
            (plan, df.collect().await.unwrap())
        });
        assert!(views_inside(&plan), "tiered {tiered}: no views read");
        let schema = batches[0].schema();
        let types: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(types, [DataType::Utf8, DataType::Utf8, DataType::Int64]);
        assert_eq!(plan.schema().fields()[0].data_type(), &DataType::Utf8);
        answers.push(
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(answers[0], answers[1]);
    assert!(answers[0].contains("| none"), "{}", answers[0]);
    // Shapes whose types settle only once typed (a first branch or first
    // `THEN` that is a literal, a list of texts, a subquery's value) or
    // that keep the types they were planned with (a correlated subquery's
    // outer row, a recursive query's work table) answer plain strings.
    let lake = Lake::new(&config_of(d)).unwrap();
    for sql in [
        "SELECT 'total' AS k, count(*) AS n FROM policy \
         UNION ALL SELECT product_line, count(*) FROM policy GROUP BY product_line",
        "SELECT CASE WHEN status = 'x' THEN 'unknown' ELSE product_line END AS k, count(*) \
         FROM policy GROUP BY 1",
        "SELECT product_line, array_agg(policy_no ORDER BY policy_no) AS a \
         FROM policy GROUP BY product_line",
        "SELECT (SELECT max(policy_no) FROM policy) AS top",
        "SELECT p.policy_no FROM policy p WHERE EXISTS (SELECT 1 FROM policy q \
         WHERE q.policy_no = p.policy_no AND p.status = 'active') ORDER BY 1 LIMIT 3",
        "WITH RECURSIVE r(n, k) AS (SELECT 1, min(policy_no) FROM policy \
         UNION ALL SELECT r.n + 1, p.policy_no FROM r JOIN policy p ON p.policy_no = r.k \
         WHERE r.n < 3) SELECT * FROM r",
    ] {
        let (declared, batches) = rt.block_on(async {
            let ctx = lake_context(&lake).await;
            let df = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            let declared = df.schema().as_arrow().clone();
            let batches = df.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            (declared, batches)
        });
        assert!(!batches.is_empty(), "{sql}");
        for b in &batches {
            let got: Vec<_> = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            let want: Vec<_> = declared
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            assert_eq!(got, want, "{sql}");
            assert!(!format!("{got:?}").contains("View"), "{sql}: {got:?}");
        }
    }
    // A parameter bound after planning, at the head of a `UNION`, is
    // planned untyped: the answer takes the type the statement gives it.
    for (sql, value, want) in [
        (
            "SELECT $1 AS k, count(*) AS n FROM policy GROUP BY 1 \
             UNION ALL SELECT product_line, count(*) FROM policy GROUP BY 1",
            datafusion::scalar::ScalarValue::from("all"),
            DataType::Utf8,
        ),
        (
            "SELECT $1 AS k UNION ALL SELECT count(*) FROM policy GROUP BY product_line",
            datafusion::scalar::ScalarValue::from(7i64),
            DataType::Int64,
        ),
    ] {
        let batches = rt.block_on(async {
            let ctx = lake_context(&lake).await;
            let df = ctx.sql(sql).await.unwrap().with_param_values(vec![value]);
            df.unwrap()
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        });
        assert!(batches.iter().any(|b| b.num_rows() > 0), "{sql}");
        for b in &batches {
            assert_eq!(b.schema().field(0).data_type(), &want, "{sql}");
        }
    }
}

/// A statement that runs out of memory reading text as views, before its
/// first row, runs again as planned (plain strings, smaller than views
/// for short values) and answers as if it had read plain strings from
/// the start.
#[test]
fn a_statement_out_of_memory_as_views_runs_again_as_planned() {
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::{ExecutionPlan, collect};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    policy_lake(d, None);
    let lake = Lake::new(&config_of(d)).unwrap();
    let config = custlake::config::Config::embedded();
    // Six short keys and a 17-character one: a view is 16 bytes, a plain
    // string four and its length (the join's build side takes about 1.3
    // times the memory as views).
    // The scalar subquery is answered before the statement is planned,
    // and the statement optimised again (as the analytics queries pick
    // their score run).
    let sql = "SELECT count(*) AS n, min(p.product_line) AS l, min(q.agent_id) AS a \
               FROM policy p JOIN policy q ON q.policy_no = p.policy_no \
               AND q.source_system = p.source_system AND q.product_code = p.product_code \
               AND q.status = p.status AND q.region = p.region AND q.agent_id = p.agent_id \
               WHERE p.premium >= (SELECT min(premium) FROM policy WHERE status <> 'x')";
    let rt = rt();
    // The statement's physical plan in a pool of `bytes`, reading views
    // (the query context) or plain strings (a cluster member's context,
    // which leaves the rule out).
    let plan = |bytes: usize, views: bool| {
        rt.block_on(async {
            let runtime = RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(FairSpillPool::new(bytes)))
                .build_arc()
                .unwrap();
            let ctx = if views {
                custlake::query::context_on(&config, runtime)
            } else {
                custlake::query::member_context(&config, runtime)
            };
            custlake::query::register_lake(&ctx, &lake, &Catalog::embedded().unwrap(), None)
                .await
                .unwrap();
            let plan = ctx
                .sql(sql)
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            (plan, ctx.task_ctx())
        })
    };
    let run = |plan: Arc<dyn ExecutionPlan>, task| {
        // The answer's types and values.
        rt.block_on(collect(plan, task)).map(|b| {
            let types: Vec<_> = b[0]
                .schema()
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            let values = datafusion::arrow::util::pretty::pretty_format_batches(&b).unwrap();
            format!("{types:?}\n{values}")
        })
    };
    let fits = |bytes: usize, views: bool| {
        let (p, task) = plan(bytes, views);
        let p = if views {
            assert_eq!(p.name(), "PlannedAgainExec");
            Arc::clone(p.children()[0])
        } else {
            p
        };
        run(p, task).is_ok()
    };
    // The smallest pool (to 1 %) the statement fits reading plain strings,
    // and reading views alone.
    let smallest = |views: bool| {
        let (mut low, mut high) = (1usize << 10, 64usize << 20);
        assert!(fits(high, views));
        while high - low > high / 100 {
            let mid = low + (high - low) / 2;
            if fits(mid, views) {
                high = mid;
            } else {
                low = mid;
            }
        }
        high
    };
    let (as_plain, as_views) = (smallest(false), smallest(true));
    assert!(
        as_views > as_plain + as_plain / 10,
        "views should need more memory: {as_views} bytes, plain strings {as_plain}"
    );
    // Halfway (geometrically) between the two.
    let bytes = ((as_plain as f64) * (as_views as f64)).sqrt() as usize;
    let (plain, task) = plan(bytes, false);
    let want = run(plain, task).expect("fits as plain strings");
    assert!(
        want.contains("accident") && want.contains("[Int64, Utf8, Utf8]"),
        "{want}"
    );

    let (planned, task) = plan(bytes, true);
    assert_eq!(planned.name(), "PlannedAgainExec");
    // Reading views alone does not fit that pool…
    let views = Arc::clone(planned.children()[0]);
    let err = run(views, Arc::clone(&task)).expect_err("views should need more memory");
    assert_eq!(
        custlake::error::datafusion_kind(&err),
        custlake::error::ErrorKind::ResourcesExhausted,
        "{err}"
    );
    // …and the statement answers all the same, as planned; with room for
    // views it reads them, once.
    for (bytes, again) in [(bytes, 1), (64 << 20, 0)] {
        let (planned, task) = plan(bytes, true);
        assert_eq!(run(Arc::clone(&planned), task).unwrap(), want);
        let counted = planned.metrics().unwrap().sum_by_name("planned_again");
        assert_eq!(counted.unwrap().as_usize(), again, "{bytes} bytes");
    }
}

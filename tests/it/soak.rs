//! The soak: for a bounded time, ingests (the same files more than once,
//! at once), resolves, tier moves, steward decisions over HTTP and queries
//! run together on one lake. Afterwards every key is there once, the lake
//! holds exactly the keys a one-at-a-time run of the same loads gives, ids
//! are unique, a full resolve changes nothing, and the server never
//! answered 5xx but 503.
//!
//! `CUSTLAKE_SOAK_SECONDS` sets the duration (default 40; `benches/soak.sh`
//! runs it longer).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{count, ok, query, run_in, sample};
use crate::server::{query as http_query, request, server_with};

/// Source files to load, relative to a sample directory.
const FILES: [(&str, &str, &str); 4] = [
    ("telesales", "customer", "telesales/leads.csv"),
    ("core", "customer", "core/customers.csv"),
    ("claims", "customer", "claims/claimants.jsonl"),
    ("core", "policy", "core/policies.csv"),
];

const KEYED: [(&str, &str); 3] = [
    ("source_customer", "source_system || ':' || source_id"),
    ("policy", "policy_no"),
    ("ingest_batch", "batch_id"),
];

fn keys(d: &Path, table: &str, key: &str) -> Vec<String> {
    query(d, &format!("SELECT {key} FROM {table} ORDER BY 1"))
}

#[derive(Default)]
struct Tally {
    ingests: AtomicU64,
    resolves: AtomicU64,
    tier_applies: AtomicU64,
    decisions: AtomicU64,
    queries: AtomicU64,
    answered_503: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// Run a command until `stop`, counting each run; a failure other than a
/// wait that ran out (exit 75, "try again") is recorded.
fn cli_loop(
    d: &Path,
    stop: &AtomicBool,
    tally: &Tally,
    counter: &AtomicU64,
    mut args: impl FnMut(u64) -> Vec<String>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let a = args(n);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = run_in(d, &a);
        counter.fetch_add(1, Ordering::Relaxed);
        if !out.status.success() && out.status.code() != Some(75) {
            tally.fail(format!(
                "{a:?}: exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        n += 1;
    }
}

#[test]
fn concurrent_writers_and_readers_lose_nothing_and_duplicate_nothing() {
    let seconds: u64 = std::env::var("CUSTLAKE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_rt, addr) = server_with(d, |c| c.server.max_concurrent_queries = 4);
    ok(d, &["resolve"]);
    // Two more extracts: one of other customers, one repeating the first
    // (same keys, other values), loaded again and again at once.
    for sub in ["more", "again"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let more = sample(&d.join("more"), 200, 21);
    let again = sample(&d.join("again"), 300, 9);
    let loads: Vec<(String, String, String)> = [&more, &again]
        .iter()
        .flat_map(|s| {
            FILES.iter().map(move |(src, ent, f)| {
                (
                    src.to_string(),
                    ent.to_string(),
                    s.join(f).to_string_lossy().to_string(),
                )
            })
        })
        .collect();
    let customers = query(d, "SELECT customer_id FROM customer ORDER BY 1 LIMIT 40");
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let status_5xx: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let (stop, tally, loads) = (&stop, &tally, &loads);
            scope.spawn(move || {
                cli_loop(d, stop, tally, &tally.ingests, |n| {
                    let (src, ent, file) = &loads[(n as usize + worker) % loads.len()];
                    ["ingest", "--source", src, "--entity", ent, file]
                        .map(str::to_string)
                        .to_vec()
                })
            });
        }
        scope.spawn(|| {
            cli_loop(d, &stop, &tally, &tally.resolves, |n| {
                if n % 3 == 2 {
                    vec!["resolve".into(), "--full".into()]
                } else {
                    vec!["resolve".into()]
                }
            })
        });
        scope.spawn(|| {
            cli_loop(d, &stop, &tally, &tally.tier_applies, |_| {
                vec!["tier".into(), "apply".into()]
            })
        });
        scope.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let n = customers.len();
                let pair = [&customers[(2 * i) % n], &customers[(2 * i + 1) % n]];
                let body = serde_json::json!({"customers": pair, "reason": "soak"}).to_string();
                let r = request(
                    addr,
                    "POST",
                    "/v1/customers/merge",
                    &[("content-type", "application/json")],
                    body.as_bytes(),
                );
                tally.decisions.fetch_add(1, Ordering::Relaxed);
                if r.status >= 500 {
                    status_5xx
                        .lock()
                        .unwrap()
                        .push(format!("merge: {} {}", r.status, r.text()));
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        scope.spawn(|| {
            let sqls = [
                "SELECT count(*) AS n FROM source_customer",
                "SELECT product_line, count(*) FROM policy GROUP BY 1",
                "SELECT count(*) FROM customer_policy WHERE customer_id IS NOT NULL",
            ];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = http_query(
                    addr,
                    "json",
                    serde_json::json!({"sql": sqls[i % sqls.len()]}),
                );
                tally.queries.fetch_add(1, Ordering::Relaxed);
                match r.status {
                    503 => {
                        tally.answered_503.fetch_add(1, Ordering::Relaxed);
                    }
                    s if s >= 500 => status_5xx
                        .lock()
                        .unwrap()
                        .push(format!("query: {s} {}", r.text())),
                    _ => {}
                }
                let s = request(addr, "GET", "/v1/suspects?limit=5", &[], b"");
                tally.queries.fetch_add(1, Ordering::Relaxed);
                if s.status >= 500 && s.status != 503 {
                    status_5xx
                        .lock()
                        .unwrap()
                        .push(format!("suspects: {} {}", s.status, s.text()));
                }
                i += 1;
            }
        });
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed();
    let failures = tally.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let bad = status_5xx.lock().unwrap().clone();
    assert!(bad.is_empty(), "the server answered {bad:?}");
    // Each load once more, one at a time (a no-op for those the soak ran:
    // a lost row stays lost), so both lakes have seen every load.
    for (src, ent, file) in &loads {
        ok(d, &["ingest", "--source", src, "--entity", ent, file]);
    }
    // And one move last, in both lakes: what is past retention goes.
    ok(d, &["tier", "apply"]);

    // The same loads one at a time, into a lake of their own.
    let reference = tempfile::tempdir().unwrap();
    let r = reference.path();
    let first = sample(r, 300, 9);
    ok(r, &["ingest", "--from", first.to_str().unwrap()]);
    for (src, ent, file) in &loads {
        ok(r, &["ingest", "--source", src, "--entity", ent, file]);
    }
    ok(r, &["tier", "apply"]);
    let mut rows_checked = 0;
    for (table, key) in KEYED {
        let got = keys(d, table, key);
        let dups = got.windows(2).filter(|w| w[0] == w[1]).count();
        assert_eq!(dups, 0, "{table}: {dups} keys twice");
        // Batches loaded once at least; the concurrent lake may also hold
        // the `--from` batches of the sample the reference loaded too.
        let want = keys(r, table, key);
        let missing: Vec<&String> = want
            .iter()
            .filter(|k| got.binary_search(k).is_err())
            .take(5)
            .collect();
        let extra: Vec<&String> = got
            .iter()
            .filter(|k| want.binary_search(k).is_err())
            .take(5)
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty() && got.len() == want.len(),
            "{table}: {} keys, one-at-a-time loads give {}; missing {missing:?}, extra {extra:?}",
            got.len(),
            want.len()
        );
        rows_checked += got.len();
    }
    for (table, id) in [("customer", "customer_id"), ("merge_event", "event_id")] {
        let dups = count(
            d,
            &format!(
                "SELECT count(*) FROM (SELECT {id} FROM {table} GROUP BY 1 HAVING count(*) > 1)"
            ),
        );
        assert_eq!(dups, 0, "{table}.{id} allocated twice");
    }
    ok(d, &["resolve"]);
    let xref = "SELECT source_system || ':' || source_id || '=' || customer_id FROM customer_xref ORDER BY 1";
    let before = query(d, xref);
    ok(d, &["resolve", "--full"]);
    assert_eq!(
        before,
        query(d, xref),
        "a full resolve changed the customers"
    );
    rows_checked += before.len();
    println!(
        "soak: {:.0} s; {} ingests, {} resolves, {} tier applies, {} decisions over HTTP, {} queries ({} answered 503); {} rows checked",
        elapsed.as_secs_f64(),
        tally.ingests.load(Ordering::Relaxed),
        tally.resolves.load(Ordering::Relaxed),
        tally.tier_applies.load(Ordering::Relaxed),
        tally.decisions.load(Ordering::Relaxed),
        tally.queries.load(Ordering::Relaxed),
        tally.answered_503.load(Ordering::Relaxed),
        rows_checked,
    );
}

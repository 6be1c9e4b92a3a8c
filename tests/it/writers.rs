//! Writers that run at once, in separate processes, on one lake: loads of
//! the same file, loads into the same table, resolves and steward
//! decisions. They take turns; nothing is loaded twice and no id is
//! allocated twice.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::{bin, count, ingest_file, ok, query, sample};

fn spawn(dir: &Path, args: &[&str]) -> Child {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .args(args)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("CUSTLAKE") {
            cmd.env_remove(k);
        }
    }
    cmd.spawn().expect("custlake starts")
}

fn all_succeed(children: Vec<Child>) -> Vec<String> {
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        })
        .collect()
}

fn leads_load_once(d: &Path, leads: &Path) {
    let args = [
        "ingest",
        "--source",
        "telesales",
        "--entity",
        "customer",
        leads.to_str().unwrap(),
    ];
    all_succeed(vec![spawn(d, &args), spawn(d, &args), spawn(d, &args)]);
    let keys = count(
        d,
        "SELECT count(DISTINCT source_id) FROM source_customer WHERE source_system = 'telesales'",
    );
    let rows = count(
        d,
        "SELECT count(*) FROM source_customer WHERE source_system = 'telesales'",
    );
    assert!(keys > 0);
    assert_eq!(rows, keys, "telesales rows loaded more than once");
    assert_eq!(
        count(
            d,
            "SELECT count(*) FROM ingest_batch WHERE source_system = 'telesales'"
        ),
        1
    );
}

#[test]
fn three_loads_of_the_same_file_at_once_load_it_once() {
    // Into an empty lake (the first-load streaming path) ...
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = sample(d, 300, 5);
    leads_load_once(d, &s.join("telesales/leads.csv"));
    // ... and into a table already holding the core customers (the
    // "do these keys exist?" path).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = sample(d, 300, 5);
    ingest_file(d, "core", "customer", &s.join("core/customers.csv"));
    let core = count(d, "SELECT count(*) FROM source_customer");
    leads_load_once(d, &s.join("telesales/leads.csv"));
    assert!(count(d, "SELECT count(*) FROM source_customer") > core);
}

#[test]
fn resolves_and_merges_at_once_never_share_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = sample(d, 300, 6);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    let ids = query(
        d,
        "SELECT customer_id FROM customer ORDER BY customer_id LIMIT 8",
    );
    // Four merges of different pairs and a full resolve, all at once.
    let mut children: Vec<Child> = ids
        .chunks(2)
        .map(|pair| {
            spawn(
                d,
                &[
                    "merge",
                    "--customers",
                    &pair[0],
                    &pair[1],
                    "--reason",
                    "same person (test)",
                ],
            )
        })
        .collect();
    children.push(spawn(d, &["resolve", "--full"]));
    all_succeed(children);
    let dup_events = count(
        d,
        "SELECT count(*) FROM (SELECT event_id FROM merge_event GROUP BY 1 HAVING count(*) > 1)",
    );
    assert_eq!(dup_events, 0, "an event id was allocated twice");
    assert_eq!(
        count(
            d,
            "SELECT count(*) FROM merge_event WHERE event_type = 'merge'"
        ),
        4
    );
    let dup_customers = count(
        d,
        "SELECT count(*) FROM (SELECT customer_id FROM customer GROUP BY 1 HAVING count(*) > 1)",
    );
    assert_eq!(dup_customers, 0);
    // Each pair is one customer now.
    for pair in ids.chunks(2) {
        let golden = query(
            d,
            &format!(
                "SELECT DISTINCT customer_id FROM customer_xref WHERE customer_id IN ('{}', '{}')",
                pair[0], pair[1]
            ),
        );
        assert_eq!(golden.len(), 1, "{pair:?}: {golden:?}");
    }
    // A full resolve afterwards changes nothing.
    let before = query(
        d,
        "SELECT source_system || ':' || source_id || '=' || customer_id FROM customer_xref ORDER BY 1",
    );
    ok(d, &["resolve", "--full"]);
    let after = query(
        d,
        "SELECT source_system || ':' || source_id || '=' || customer_id FROM customer_xref ORDER BY 1",
    );
    assert_eq!(before, after);
}

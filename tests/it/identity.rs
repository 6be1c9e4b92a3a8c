//! Identity resolution through the binary: ground truth, stable ids,
//! steward decisions, facts through the golden views, and `dedupe`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::common::{count, fails, ok, query, sample};

/// (record → customer) from customer_xref.
fn links(dir: &Path) -> BTreeMap<String, String> {
    query(
        dir,
        "SELECT source_system || ':' || source_id, customer_id FROM customer_xref",
    )
    .into_iter()
    .map(|l| {
        let (r, c) = l.split_once(',').unwrap();
        (r.to_string(), c.to_string())
    })
    .collect()
}

fn truth(sample: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(sample.join("truth.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (format!("{}:{}", f[0], f[1]), f[2].to_string())
        })
        .collect()
}

/// A lake holding a generated sample insurer, resolved.
fn resolved_sample(d: &Path, customers: u64, seed: u64) -> std::path::PathBuf {
    let s = sample(d, customers, seed);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    s
}

#[test]
fn resolution_matches_the_ground_truth_and_ids_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = resolved_sample(d, 400, 21);
    let before = links(d);
    let records = count(d, "SELECT count(*) FROM source_customer");
    assert_eq!(before.len() as i64, records, "one link per source record");

    // Precision: no golden customer mixes two real entities.
    let truth = truth(&s);
    let mut entities: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (r, c) in &before {
        entities.entry(c).or_default().insert(truth[r].as_str());
    }
    assert!(
        entities.values().all(|e| e.len() == 1),
        "an automatic merge mixed two entities"
    );
    // Recall: every entity's records are one customer, or customers joined
    // by an open suspect group.
    let mut joined: HashMap<String, String> =
        before.values().map(|c| (c.clone(), c.clone())).collect();
    for row in query(
        d,
        "SELECT group_id, customer_id FROM suspect_group WHERE status = 'open' ORDER BY 1, 2",
    ) {
        let (g, c) = row.split_once(',').unwrap();
        let root = joined
            .entry(format!("group:{g}"))
            .or_insert_with(|| c.to_string())
            .clone();
        joined.insert(c.to_string(), root);
    }
    let mut per_entity: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for (r, c) in &before {
        per_entity
            .entry(truth[r].as_str())
            .or_default()
            .insert(joined[c].clone());
    }
    assert!(
        per_entity.values().all(|c| c.len() == 1),
        "a true duplicate was neither merged nor proposed"
    );
    // Survivorship is recorded per field.
    let sv = query(
        d,
        "SELECT survivorship FROM customer WHERE customer_type = 'individual' LIMIT 1",
    );
    assert!(sv[0].contains("id_number") && sv[0].contains(':'), "{sv:?}");

    // A suspect group: reject (not proposed again), undo, then confirm (merged).
    let groups = query(
        d,
        "SELECT DISTINCT group_id FROM suspect_group WHERE status = 'open' ORDER BY 1",
    );
    assert!(!groups.is_empty(), "the sample has suspected duplicates");
    let g = groups[0].clone();
    let status = |d: &Path| {
        query(
            d,
            &format!("SELECT DISTINCT status FROM suspect_group WHERE group_id = '{g}'"),
        )
    };
    ok(
        d,
        &["suspects", "reject", &g, "--reason", "different people"],
    );
    ok(d, &["resolve"]);
    assert_eq!(status(d), vec!["rejected"]);
    let event = query(
        d,
        "SELECT event_id FROM merge_event WHERE event_type = 'reject'",
    )[0]
    .clone();
    ok(d, &["undo", "--event", &event, "--reason", "reconsidered"]);
    assert_eq!(status(d), vec!["open"]);
    ok(d, &["suspects", "confirm", &g, "--reason", "same person"]);
    assert_eq!(status(d), vec!["confirmed"]);
    let merged = query(
        d,
        &format!(
            "SELECT DISTINCT x.customer_id FROM suspect_group s JOIN customer_xref x ON s.member = x.source_system || ':' || x.source_id WHERE s.group_id = '{g}'"
        ),
    );
    assert_eq!(merged.len(), 1, "a confirmed group is one customer");
    let before = links(d);

    // Unchanged input: same ids, nothing written.
    let log_before = crate::common::log_files(&d.join("data/lake"));
    ok(d, &["resolve"]);
    assert_eq!(links(d), before);
    assert_eq!(crate::common::log_files(&d.join("data/lake")), log_before);

    // More customers arrive: existing ids stay, new ones are numbered after.
    let bigger = d.join("bigger");
    ok(
        d,
        &[
            "generate",
            "--customers",
            "450",
            "--seed",
            "21",
            "--as-of",
            "2026-06-30",
            "--out",
            bigger.to_str().unwrap(),
        ],
    );
    ok(d, &["ingest", "--from", bigger.to_str().unwrap()]);
    ok(d, &["resolve"]);
    let after = links(d);
    let max_before = before.values().max().unwrap().clone();
    for (r, c) in &before {
        assert_eq!(&after[r], c, "{r} changed customer");
    }
    let new: Vec<&String> = after.keys().filter(|r| !before.contains_key(*r)).collect();
    assert!(!new.is_empty());
    assert!(
        new.iter().all(|r| after[*r] > max_before),
        "new records reused an old id"
    );
}

#[test]
fn steward_decisions_are_recorded_survive_reruns_and_can_be_undone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    resolved_sample(d, 120, 5);
    // Two customers that hold policies.
    let ids = query(
        d,
        "SELECT DISTINCT customer_id FROM customer_policy ORDER BY customer_id LIMIT 2",
    );
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let b_policies = count(
        d,
        &format!("SELECT count(*) FROM customer_policy WHERE customer_id = '{b}'"),
    );
    assert!(b_policies > 0);

    assert!(fails(d, &["merge", "--customers", &a, &b, "--reason", " "]).contains("reason"));
    ok(
        d,
        &[
            "merge",
            "--customers",
            &a,
            &b,
            "--reason",
            "same company",
            "--actor",
            "alice",
        ],
    );
    // The older id survives; the other points to it; facts follow.
    assert_eq!(
        query(
            d,
            &format!("SELECT status, merged_into FROM customer WHERE customer_id = '{b}'")
        ),
        vec![format!("retired,{a}")]
    );
    assert_eq!(
        count(
            d,
            &format!("SELECT count(*) FROM customer_policy WHERE customer_id = '{b}'")
        ),
        0
    );
    assert!(
        count(
            d,
            &format!("SELECT count(*) FROM customer_policy WHERE customer_id = '{a}'")
        ) >= b_policies
    );
    let explained = ok(d, &["explain", "--customer", &b]);
    assert!(
        explained.contains(&format!("customer {a}")) && explained.contains("merge by alice"),
        "{explained}"
    );
    assert!(fails(d, &["merge", "--customers", &a, &b, "--reason", "again"]).contains("already"));

    // A later automatic run keeps the manual decision.
    ok(d, &["resolve"]);
    assert_eq!(
        count(
            d,
            &format!("SELECT count(*) FROM customer_xref WHERE customer_id = '{b}'")
        ),
        0
    );

    // Undo restores both customers with their ids.
    let event = query(
        d,
        "SELECT event_id FROM merge_event WHERE event_type = 'merge'",
    )[0]
    .clone();
    ok(d, &["undo", "--event", &event, "--reason", "wrong pair"]);
    assert_eq!(
        count(
            d,
            &format!("SELECT count(*) FROM customer_policy WHERE customer_id = '{b}'")
        ),
        b_policies
    );
    assert!(fails(d, &["undo", "--event", &event, "--reason", "twice"]).contains("already undone"));

    // Split: the moved record gets a new id; the rest keep theirs.
    let records = query(
        d,
        &format!(
            "SELECT source_system || ':' || source_id FROM customer_xref WHERE customer_id = '{a}' ORDER BY 1"
        ),
    );
    if records.len() > 1 {
        let moved = records.last().unwrap().clone();
        ok(
            d,
            &[
                "split",
                "--customer",
                &a,
                "--records",
                &moved,
                "--reason",
                "different person",
            ],
        );
        let now = links(d);
        assert_ne!(now[&moved], a);
        assert!(records[..records.len() - 1].iter().all(|r| now[r] == a));
        ok(d, &["resolve"]);
        assert_eq!(links(d), now, "the split survives an automatic run");
    }
    assert!(
        fails(
            d,
            &[
                "split",
                "--customer",
                &a,
                "--records",
                "core:nope",
                "--reason",
                "x"
            ]
        )
        .contains("core:nope")
    );
    let ledger = count(d, "SELECT count(*) FROM merge_event WHERE actor <> 'auto'");
    assert!(ledger >= 2);
}

#[test]
fn dedupe_clusters_any_csv_with_a_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("rules.toml"),
        r#"
[[field]]
name = "name"
normalize = ["trim", "lower"]

[[profile]]
name = "prospect"
review_at = 3.0
merge_at = 5.0

[[profile.block]]
keys = ["phone"]

[[profile.block]]
keys = ["name:prefix3"]

[[profile.compare]]
field = "name"
method = "jaro_winkler"
levels = [[1.0, 3.0], [0.9, 2.0]]
else = -3.0

[[profile.compare]]
field = "phone"
method = "phone"
levels = [[1.0, 3.0]]
else = -1.0
"#,
    )
    .unwrap();
    std::fs::write(
        d.join("in.csv"),
        "pid,name,phone\n9,Ann Lee,138 0000 0001\n3,ann lee ,+8613800000001\n5,Bob Li,13900000002\n7,Anne Lee,13800000001\n",
    )
    .unwrap();
    ok(
        d,
        &[
            "dedupe",
            "--rules",
            "rules.toml",
            "--input",
            "in.csv",
            "--id-column",
            "pid",
            "--output",
            "out.csv",
        ],
    );
    let out = std::fs::read_to_string(d.join("out.csv")).unwrap();
    assert_eq!(out, "id,cluster_id\n9,3\n3,3\n5,5\n7,3\n");

    let e = fails(
        d,
        &[
            "dedupe",
            "--rules",
            "rules.toml",
            "--input",
            "in.csv",
            "--id-column",
            "id",
            "--output",
            "o.csv",
        ],
    );
    assert!(e.contains("no column \"id\""), "{e}");
    std::fs::write(d.join("dup.csv"), "pid,name,phone\n1,a,1\n1,b,2\n").unwrap();
    let e = fails(
        d,
        &[
            "dedupe",
            "--rules",
            "rules.toml",
            "--input",
            "dup.csv",
            "--id-column",
            "pid",
            "--output",
            "o.csv",
        ],
    );
    assert!(e.contains("line 3") && e.contains("unique"), "{e}");
    assert!(!d.join("o.csv").exists(), "no partial output");
    std::fs::write(
        d.join("bad.toml"),
        "[[profile]]\nname = \"p\"\nreview_at = 1.0\n",
    )
    .unwrap();
    let e = fails(
        d,
        &[
            "dedupe",
            "--rules",
            "bad.toml",
            "--input",
            "in.csv",
            "--id-column",
            "pid",
            "--output",
            "o.csv",
        ],
    );
    assert!(
        e.contains("bad.toml") && e.contains("nothing could ever match"),
        "{e}"
    );
}

/// The rows of `bigger` that `base` does not have, with the header of a
/// CSV: what a source system delivers as its daily changes.
fn increment(base: &Path, bigger: &Path, out: &Path, file: &str, header: bool) -> Vec<String> {
    let read = |p: &Path| std::fs::read(p.join(file)).unwrap_or_default();
    let (old, new) = (read(base), read(bigger));
    let old: BTreeSet<&[u8]> = old.split_inclusive(|b| *b == b'\n').collect();
    let mut lines = new.split_inclusive(|b| *b == b'\n');
    let mut body: Vec<u8> = Vec::new();
    if header && let Some(h) = lines.next() {
        body.extend_from_slice(h);
    }
    let mut added = Vec::new();
    for l in lines.filter(|l| !old.contains(l)) {
        body.extend_from_slice(l);
        if !l.ends_with(b"\n") {
            body.push(b'\n');
        }
        added.push(String::from_utf8_lossy(l).to_string());
    }
    let path = out.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
    added
}

fn resolve_json(d: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["resolve", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(d, &all)).unwrap()
}

/// Everything resolution writes, as text (the ledger once it exists).
fn resolved_state(d: &Path, ledger: bool) -> Vec<Vec<String>> {
    [
        "SELECT * FROM customer_xref ORDER BY source_system, source_id",
        "SELECT * FROM customer ORDER BY customer_id",
        "SELECT * FROM suspect_group ORDER BY group_id, member",
        "SELECT * FROM merge_event ORDER BY event_id",
    ]
    .iter()
    .take(if ledger { 4 } else { 3 })
    .map(|sql| query(d, sql))
    .collect()
}

#[test]
fn incremental_resolve_gives_what_a_full_run_gives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = resolved_sample(d, 600, 31);
    let bigger = d.join("bigger");
    ok(
        d,
        &[
            "generate",
            "--customers",
            "660",
            "--seed",
            "31",
            "--as-of",
            "2026-06-30",
            "--out",
            bigger.to_str().unwrap(),
        ],
    );
    let total_before = count(d, "SELECT count(*) FROM customer_xref");

    // The increment: new customers' rows from every text extract, one lead
    // that is an existing customer under a new lead id (same id number and
    // name: a strong match), and one existing lead whose phone changed.
    let delta = d.join("delta");
    for (file, header) in [
        ("core/customers.csv", true),
        ("claims/claimants.jsonl", false),
        ("telesales/leads.csv", true),
    ] {
        increment(&base, &bigger, &delta, file, header);
    }
    let leads = std::fs::read_to_string(base.join("telesales/leads.csv")).unwrap();
    let header: Vec<&str> = leads.lines().next().unwrap().split(',').collect();
    let (cert, tel) = (
        header.iter().position(|h| *h == "cert_no").unwrap(),
        header.iter().position(|h| *h == "tel").unwrap(),
    );
    let rows: Vec<Vec<&str>> = leads
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .filter(|r: &Vec<&str>| r.len() == header.len())
        .collect();
    let linked = links(d);
    let loaded = |r: &Vec<&str>| linked.contains_key(&format!("telesales:{}", r[0]));
    let person = rows
        .iter()
        .find(|r| loaded(r) && r[cert].len() == 18 && r[1] == "IND" && !r[2].is_empty())
        .unwrap();
    let mut again = person.clone();
    again[0] = "L99999999";
    let moved = rows
        .iter()
        .find(|r| loaded(r) && r[0] != person[0] && r[tel].len() > 8 && !r[tel].ends_with('9'))
        .unwrap();
    let mut phone = moved.clone();
    let new_tel = format!("{}9", &moved[tel][..moved[tel].len() - 1]);
    phone[tel] = &new_tel;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(delta.join("telesales/leads.csv"))
        .unwrap();
    use std::io::Write;
    writeln!(f, "{}\n{}", again.join(","), phone.join(",")).unwrap();
    drop(f);
    ok(d, &["ingest", "--from", delta.to_str().unwrap()]);

    let inc = resolve_json(d, &[]);
    assert_eq!(inc["mode"], "incremental", "{inc}");
    let total = count(d, "SELECT count(*) FROM source_customer");
    assert!(total > total_before);
    let seen = inc["records"].as_u64().unwrap() as i64;
    assert!(
        seen < total / 2,
        "an increment re-examined {seen} of {total} records"
    );
    assert_eq!(
        inc["new_or_changed"].as_i64().unwrap(),
        total - total_before + 1,
        "{inc}"
    );
    let l = links(d);
    assert_eq!(l.len() as i64, total, "every record has its link");
    assert_eq!(
        l["telesales:L99999999"],
        l[&format!("telesales:{}", person[0])],
        "the returning customer joined the existing one"
    );

    // A full run finds nothing to change: the increment wrote exactly
    // what it would have.
    let state = resolved_state(d, false);
    let full = resolve_json(d, &["--full"]);
    assert_eq!(full["mode"], "full");
    assert_eq!(full["changed_links"], 0, "{full}");
    assert_eq!(full["changed_customers"], 0, "{full}");
    assert_eq!(resolved_state(d, false), state);

    // A steward's decision is resolved incrementally too, with the same
    // result as a full run.
    let ids = query(
        d,
        "SELECT customer_id FROM customer WHERE status = 'active' ORDER BY customer_id LIMIT 2",
    );
    ok(
        d,
        &[
            "merge",
            "--customers",
            &ids[0],
            &ids[1],
            "--reason",
            "same firm",
        ],
    );
    let state = resolved_state(d, true);
    let full = resolve_json(d, &["--full"]);
    assert_eq!(full["changed_links"], 0, "{full}");
    assert_eq!(full["changed_customers"], 0, "{full}");
    assert_eq!(resolved_state(d, true), state);
    // Nothing new: an incremental run looks at nothing.
    let idle = resolve_json(d, &[]);
    assert_eq!(idle["mode"], "incremental");
    assert_eq!(idle["records"], 0);
    assert_eq!(idle["customers"], full["customers"]);
}

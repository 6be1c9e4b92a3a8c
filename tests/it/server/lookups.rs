//! Lookups through the key indexes: the same rows as a scan that cannot
//! use them, before and after the indexes are built, and after an upsert
//! rewrites the file a looked-up record was in.

use super::{Api, token};
use crate::common::{core_customer_changed, ingest_file, sample};

/// The source records `customer_by_phone` returns for `phone`, as
/// `system|id` lines.
fn by_phone(api: &Api, phone: &str) -> Vec<String> {
    let r = api.request(
        "GET",
        &format!(
            "/v1/queries/customer_by_phone?phone={}&format=csv",
            phone.replace('+', "%2B")
        ),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(2).collect::<Vec<_>>().join("|"))
        .collect()
}

/// The same, by a filter no index serves (the column in an expression).
fn by_phone_scanned(api: &Api, phone: &str) -> Vec<String> {
    let r = api.query(
        "csv",
        serde_json::json!({"sql": format!(
            "SELECT source_system, source_id FROM source_customer WHERE concat(phone, '') = '{phone}' ORDER BY source_system, source_id"
        )}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .skip(1)
        .map(|l| l.replace(',', "|"))
        .collect()
}

fn index_bytes(api: &Api) -> f64 {
    metric(api, "custlake_key_index_bytes")
}

fn metric(api: &Api, name: &str) -> f64 {
    let m = api.request("GET", "/metrics", &[], b"").text();
    m.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn lookups_through_key_indexes_return_what_a_scan_returns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = Api::new(d);
    let phones: Vec<String> = {
        let r = api.query(
            "csv",
            serde_json::json!({"sql": "SELECT DISTINCT phone FROM source_customer WHERE phone IS NOT NULL ORDER BY phone LIMIT 25"}),
        );
        r.text().lines().skip(1).map(str::to_string).collect()
    };
    assert_eq!(phones.len(), 25);
    // Until the indexes are built the lookups read bloom filters; after,
    // the rows the indexes name. Every answer equals the scan's.
    let mut rounds = 0;
    loop {
        for p in &phones {
            let got = by_phone(&api, p);
            assert!(!got.is_empty(), "{p}");
            assert_eq!(got, by_phone_scanned(&api, p), "{p}");
        }
        rounds += 1;
        if index_bytes(&api) > 0.0 && rounds >= 2 {
            break;
        }
        assert!(rounds < 50, "the key indexes were never built");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The rounds after the first ran the kept plan of the statement.
    assert!(metric(&api, "custlake_plan_cache_hits_total") > 0.0);
    // A value in no file, and an IN list, through the indexes.
    assert!(by_phone(&api, "+8613000000000").is_empty());
    let r = api.query(
        "csv",
        serde_json::json!({"sql": format!(
            "SELECT count(*) AS n FROM source_customer WHERE phone IN ('{}', '{}')", phones[0], phones[1]
        )}),
    );
    let n: usize = r.text().lines().nth(1).unwrap().parse().unwrap();
    assert_eq!(
        n,
        by_phone_scanned(&api, &phones[0]).len() + by_phone_scanned(&api, &phones[1]).len()
    );

    // Golden records, every column, looked up through the key index and
    // the decoded rows kept in memory, equal a scan's; a second round
    // takes them from memory.
    crate::common::ok(d, &["resolve"]);
    let ids: Vec<String> = api
        .query(
            "csv",
            serde_json::json!({"sql": "SELECT customer_id FROM customer ORDER BY customer_id DESC LIMIT 15"}),
        )
        .text()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 15);
    let columns = "customer_id, customer_type, name, gender, birth_date, id_type, id_number, uscc, phone, email, \
                   address, province, owning_team, region, agent_id, status, merged_into";
    let mut rounds = 0;
    loop {
        for id in &ids {
            let got = api.request(
                "GET",
                &format!("/v1/queries/customer_golden?id={id}&format=csv"),
                &[],
                b"",
            );
            assert_eq!(got.status, 200, "{}", got.text());
            let scanned = api.query(
                "csv",
                serde_json::json!({"sql": format!(
                    "SELECT {columns} FROM customer WHERE concat(customer_id, '') = '{id}'"
                )}),
            );
            assert_eq!(got.text().lines().count(), 2, "{id}");
            assert_eq!(got.text(), scanned.text(), "{id}");
        }
        rounds += 1;
        if metric(&api, "custlake_row_cache_hits_total") > 0.0 {
            break;
        }
        assert!(rounds < 50, "no lookup was served from the row cache");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(metric(&api, "custlake_row_cache_bytes") > 0.0);
    // Rows taken from memory still pass the statement's other filters.
    let both = api.query(
        "csv",
        serde_json::json!({"sql": format!(
            "SELECT customer_id FROM customer WHERE customer_id IN ('{0}', '{1}') AND customer_id <> '{0}'",
            ids[0], ids[1]
        )}),
    );
    assert_eq!(both.text(), format!("customer_id\n{}\n", ids[1]));

    // Move one core record to another phone: the upsert writes the record
    // into a new file. Both phones' lookups follow at once (the new file
    // is read without an index until its own is built) and stay right.
    let (from, moved) = phones
        .iter()
        .find_map(|p| {
            by_phone(&api, p)
                .into_iter()
                .find(|k| k.starts_with("core|"))
                .map(|k| (p, k))
        })
        .expect("a core record among the looked-up phones");
    let to = phones.iter().find(|p| *p != from).unwrap();
    let source_id = moved.split('|').nth(1).unwrap().to_string();
    let s = sample(d, 300, 9);
    let fixed = d.join("moved.csv");
    core_customer_changed(&s, &source_id, "联系电话", to, &fixed);
    ingest_file(d, "core", "customer", &fixed);
    for round in 0..20 {
        let (f, t) = (by_phone(&api, from), by_phone(&api, to));
        assert!(!f.contains(&moved), "round {round}: {f:?}");
        assert!(t.contains(&moved), "round {round}: {t:?}");
        assert_eq!(f, by_phone_scanned(&api, from));
        assert_eq!(t, by_phone_scanned(&api, to));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `customer_count` as the telesales agent of `token` sees it.
fn agent_counts(api: &Api, token: &str) -> String {
    let auth = format!("Bearer {token}");
    let r = api.request(
        "GET",
        "/v1/queries/customer_count?format=csv",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[test]
fn a_kept_plan_serves_only_the_principal_it_was_planned_for() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No scheduled jobs: their first runs write the tables the plans
    // depend on, for minutes on a busy machine, and a plan over a table
    // that changed is rightly planned again.
    let api = Api::with(d, |c| c.scheduler.enabled = false);
    crate::common::ok(d, &["resolve"]);
    // The two agents with the most customers, and each one's counts by a
    // statement of the admin's own.
    let agents: Vec<String> = api
        .query(
            "csv",
            serde_json::json!({"sql": "SELECT agent_id FROM customer WHERE agent_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 2"}),
        )
        .text()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    assert_eq!(agents.len(), 2);
    let expected: Vec<String> = agents
        .iter()
        .map(|a| {
            api.query(
                "csv",
                serde_json::json!({"sql": format!(
                    "SELECT customer_type, count(*) AS customers FROM customer WHERE agent_id = '{a}' GROUP BY 1 ORDER BY 1"
                )}),
            )
            .text()
        })
        .collect();
    assert_ne!(expected[0], expected[1]);
    let tokens: Vec<String> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| token(d, &format!("agent{i}"), "telesales", &["--agent-id", a]))
        .collect();
    // Alternating: each agent's later runs come from its own kept plan,
    // never from the other's (rounds go on until kept plans have served
    // both agents a few times).
    let before = metric(&api, "custlake_plan_cache_hits_total");
    let mut rounds = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        for (t, want) in tokens.iter().zip(&expected) {
            assert_eq!(&agent_counts(&api, t), want);
        }
        rounds += 1;
        if metric(&api, "custlake_plan_cache_hits_total") >= before + 4.0 && rounds >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kept plans served no run in {rounds} rounds"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A new commit: a kept plan is planned again and sees it.
    for _ in 0..2 {
        assert!(by_phone(&api, "+8613999999999").is_empty());
    }
    let s = sample(d, 300, 9);
    let fixed = d.join("moved.csv");
    let source_id: String = api
        .query(
            "csv",
            serde_json::json!({"sql": "SELECT source_id FROM source_customer WHERE source_system = 'core' ORDER BY source_id LIMIT 1"}),
        )
        .text()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    core_customer_changed(&s, &source_id, "联系电话", "+8613999999999", &fixed);
    ingest_file(d, "core", "customer", &fixed);
    let by_phone_after = by_phone(&api, "+8613999999999");
    assert_eq!(by_phone_after, vec![format!("core|{source_id}")]);
}

//! Scores, lists and steward terminations through the command line and
//! the HTTP API, as a user runs them (the rules' boundaries are the SQL
//! cases of `tests/slt/analytics/`).

use std::path::Path;

use crate::common::{fails, ok, query, run_in, sample};
use crate::server::{request, server_with, token};

/// `custlake list ...`: stdout (the lines) and the run id from stderr.
fn list(dir: &Path, args: &[&str]) -> (String, String) {
    let out = run_in(dir, args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "custlake {args:?}: {err}");
    let run = err
        .split_whitespace()
        .find(|w| w.starts_with("LR"))
        .unwrap_or_else(|| panic!("no run id in {err}"))
        .to_string();
    (String::from_utf8(out.stdout).unwrap(), run)
}

/// A list's lines as one SQL statement: the rules of `sql/analytics/`
/// (each a CTE, its parameters written in: as of `as_of`, 30 days, every
/// line, team and region) over the shipped configuration's cross-sell
/// pairs and churn threshold, ending in the assignment.
fn list_statement(rule: &str, as_of: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("src/config/default.toml")).unwrap())
            .unwrap();
    let analytics = &config["analytics"];
    let pairs: Vec<String> = analytics["cross_sell"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "('{}', '{}')",
                p["has"].as_str().unwrap(),
                p["lacks"].as_str().unwrap()
            )
        })
        .collect();
    let threshold = analytics["churn_threshold"].as_float().unwrap();
    let d = format!("DATE '{as_of}'");
    let body = |name: &str| {
        let text = std::fs::read_to_string(root.join(format!("sql/analytics/{name}.sql"))).unwrap();
        let sql: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect();
        [
            ("$as_of", d.as_str()),
            ("$within_days", "30"),
            ("$product_line", "'*'"),
            ("$team", "'*'"),
            ("$region", "'*'"),
            ("$churn_threshold", &format!("{threshold:?}")),
        ]
        .iter()
        .fold(sql.join("\n"), |s, (k, v)| s.replace(k, v))
    };
    let assign = body("assign");
    let assign = assign
        .trim_start()
        .strip_prefix("WITH")
        .expect("assign.sql starts with WITH");
    format!(
        "WITH scores AS (SELECT * FROM customer_score WHERE as_of = \
         (SELECT max(as_of) FROM customer_score WHERE as_of <= {d})),\n\
         cross_sell_pairs AS (SELECT * FROM (VALUES {}) t(has, lacks)),\n\
         in_force AS ({}),\nreachable AS ({}),\ncandidates AS ({}),\n{assign}",
        pairs.join(", "),
        body("in_force"),
        body("reachable"),
        body(rule),
    )
}

#[test]
fn a_stored_list_reads_back_and_recomputes_the_same_after_new_data() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let s = sample(d, 400, 5);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    let scored = ok(d, &["score", "--as-of", "2026-06-30"]);
    assert!(scored.contains("scored"), "{scored}");
    let customers = query(d, "SELECT count(*) FROM customer WHERE status = 'active'");
    let per_date = "SELECT count(*) FROM customer_score WHERE as_of = DATE '2026-06-30'";
    assert_eq!(query(d, per_date), customers);

    let args = [
        "list",
        "renewals",
        "--as-of",
        "2026-06-30",
        "--within-days",
        "120",
        "--format",
        "csv",
    ];
    let (first, run) = list(d, &args);
    let lines = first.lines().count() - 1;
    assert!(lines >= 3, "too few lines to prove anything: {first}");
    // One line per customer, in priority order, numbered from 1.
    let ids: Vec<&str> = first
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{first}");
    assert!(first.lines().nth(1).unwrap().starts_with("1,"));

    // New data lands: more customers and policies, scores of the same date
    // replaced.
    let more = d.join("more");
    ok(
        d,
        &[
            "generate",
            "--customers",
            "300",
            "--seed",
            "77",
            "--as-of",
            "2026-06-30",
            "--out",
            more.to_str().unwrap(),
        ],
    );
    // The second extract reuses the first's record ids: its rows update
    // those records and add more, as a later extract of a source does.
    ok(d, &["ingest", "--from", more.to_str().unwrap()]);
    ok(d, &["resolve"]);
    ok(d, &["score", "--as-of", "2026-06-30"]);
    let (now, _) = list(d, &args);
    assert_ne!(now, first, "the new data should change the list");

    // Each list's rules, composed into one plain statement as an analyst
    // would adapt them, run through `custlake sql` and give the list's
    // lines (this statement once failed to plan: its scalar subquery was
    // answered first and the statement analysed again).
    for (kind, rule) in [
        ("renewals", "renewals"),
        ("cross-sell", "cross_sell"),
        ("churn", "churn"),
    ] {
        let mut args = vec!["list", kind, "--as-of", "2026-06-30", "--format", "csv"];
        if kind == "renewals" {
            args.extend(["--within-days", "30"]);
        }
        let (listed, _) = list(d, &args);
        let statement = list_statement(rule, "2026-06-30");
        let one = ok(d, &["sql", "--format", "csv", &statement]);
        let rows = |csv: &str| csv.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
        assert!(!rows(&listed).is_empty(), "{kind}: no lines to compare");
        assert_eq!(rows(&one), rows(&listed), "{kind}");
    }

    // The stored run reads back exactly as produced...
    let shown = ok(d, &["list", "show", &run, "--format", "csv"]);
    assert_eq!(shown, first);
    // ...and recomputed from the lake as it was then, it is the same.
    let verified = ok(d, &["list", "verify", &run]);
    assert!(
        verified.contains(&format!("the same {lines} line(s)")),
        "{verified}"
    );
    // The run is recorded with its parameters and each table's version.
    let row = query(
        d,
        &format!(
            "SELECT kind, row_count, principal, role, scores_as_of, parameters LIKE '%\"within_days\":\"120\"%', \
             versions LIKE '%\"policy\":{{\"cold\"%' FROM list_run WHERE run_id = '{run}'"
        ),
    );
    assert_eq!(row.len(), 1);
    assert!(
        row[0].starts_with(&format!("renewals,{lines},local:")),
        "{row:?}"
    );
    assert!(
        row[0].ends_with(",operator,2026-06-30,true,true"),
        "{row:?}"
    );
    assert_eq!(
        run_in(d, &["list", "show", "LRnope"]).status.code(),
        Some(66)
    );

    // Each list run added a file to `list_line` and `list_run`: with
    // `compact_min_files` at 4, `tier apply` rewrites their partition as
    // one file sorted by the key, and every run reads back the same.
    std::fs::write(d.join("custlake.toml"), "[tiers]\ncompact_min_files = 4\n").unwrap();
    let files = |table: &str| -> u64 {
        let status = ok(d, &["tier", "status", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&status).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["table"] == table)
            .map(|r| r["files"].as_u64().unwrap())
            .sum()
    };
    let lines_before = query(d, "SELECT count(*), sum(line) FROM list_line");
    let runs = query(d, "SELECT run_id FROM list_run ORDER BY created_at");
    assert!(runs.len() >= 5, "{runs:?}");
    assert!(files("list_line") >= 5 && files("list_run") >= 5);
    let plan: serde_json::Value =
        serde_json::from_str(&ok(d, &["tier", "plan", "--as-of", "2026-06-30", "--json"])).unwrap();
    let planned: Vec<&str> = plan
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["compactions"].as_array().unwrap().is_empty())
        .map(|p| p["table"].as_str().unwrap())
        .collect();
    assert!(
        planned.contains(&"list_line") && planned.contains(&"list_run"),
        "{planned:?}"
    );
    for day in ["2026-06-27", "2026-06-28", "2026-06-29"] {
        ok(d, &["score", "--as-of", day]);
    }
    let applied = ok(d, &["tier", "apply", "--as-of", "2026-06-30"]);
    assert!(applied.contains("partitions compacted"), "{applied}");
    assert_eq!(files("list_line"), 1);
    assert_eq!(files("list_run"), 1);
    assert_eq!(
        query(d, "SELECT count(*), sum(line) FROM list_line"),
        lines_before
    );
    assert_eq!(ok(d, &["list", "show", &run, "--format", "csv"]), first);
    // This apply also purged partitions past retention, so the hot tier's
    // removed files went at once: the lake as it was can no longer be read,
    // and verify says so.
    let gone = run_in(d, &["list", "verify", &run]);
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(
        !gone.status.success() && err.contains("can no longer be read"),
        "{err}"
    );
    // The new file holds the rows sorted by run and line.
    let sorted = compacted_sorted(&d.join("data/lake/hot/list_line"), &["run_id", "line"]);
    assert_eq!(
        sorted.to_string(),
        lines_before[0].split(',').next().unwrap()
    );
    // A month scored on several dates is compacted by date, then customer
    // (`cluster` in its schema): each date's rows stay together.
    let per_date = "SELECT as_of, count(*) FROM customer_score GROUP BY as_of ORDER BY as_of";
    let dates = query(d, per_date);
    let scored = query(d, "SELECT count(*) FROM customer_score")[0].clone();
    assert!(dates.len() >= 4, "{dates:?}");
    let sorted = compacted_sorted(
        &d.join("data/lake/hot/customer_score"),
        &["as_of", "customer_id"],
    );
    assert_eq!(sorted.to_string(), scored);
    assert_eq!(query(d, per_date), dates);
    // Nothing is left to compact.
    let again = ok(d, &["tier", "plan", "--as-of", "2026-06-30"]);
    assert!(!again.contains("compacted"), "{again}");
}

/// The one file the latest commit of the Delta table at `table` added
/// (a compaction's): asserts that its rows are sorted by `columns` and
/// returns how many there are.
fn compacted_sorted(table: &Path, columns: &[&str]) -> usize {
    use datafusion::arrow::row::{RowConverter, SortField};
    let log = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
        .unwrap();
    let added: Vec<String> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["add"]["path"].as_str().map(str::to_string)
        })
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(
                // A log entry's path is percent-encoded (partition values).
                table.join(
                    datafusion::object_store::path::Path::from_url_path(&added[0])
                        .unwrap()
                        .as_ref(),
                ),
            )
            .unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
    let mut converter = None;
    let mut last = None;
    let mut rows = 0;
    for batch in reader {
        let batch = batch.unwrap();
        let cols: Vec<_> = columns
            .iter()
            .map(|c| batch.column_by_name(c).unwrap().clone())
            .collect();
        let conv = converter.get_or_insert_with(|| {
            RowConverter::new(
                cols.iter()
                    .map(|c| SortField::new(c.data_type().clone()))
                    .collect(),
            )
            .unwrap()
        });
        let keys = conv.convert_columns(&cols).unwrap();
        for r in keys.iter() {
            if let Some(prev) = &last {
                assert!(
                    *prev <= r.owned(),
                    "{}: row {rows} is out of {columns:?} order",
                    table.display()
                );
            }
            last = Some(r.owned());
            rows += 1;
        }
    }
    rows
}

#[test]
fn a_list_needs_scores_and_valid_options() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let s = sample(d, 200, 3);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    let e = fails(d, &["list", "renewals", "--as-of", "2026-06-30"]);
    assert!(e.contains("custlake score --as-of 2026-06-30"), "{e}");
    ok(d, &["score", "--as-of", "2026-06-30"]);
    let out = run_in(
        d,
        &[
            "list",
            "renewals",
            "--as-of",
            "2026-06-30",
            "--product-line",
            "boats",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a standard code"));
    let out = run_in(d, &["list", "churn", "--as-of", "2026-02-30"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_in(d, &["list", "renewals", "--within-days", "9999"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_in(d, &["score", "--as-of", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    // Rerunning a date replaces it: still one row per customer.
    ok(d, &["score", "--as-of", "2026-06-30"]);
    let dup = query(
        d,
        "SELECT count(*) FROM (SELECT customer_id FROM customer_score GROUP BY customer_id, as_of HAVING count(*) > 1)",
    );
    assert_eq!(dup, vec!["0"]);
}

#[test]
fn terminations_follow_the_rules_and_leave_the_lists() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let s = sample(d, 200, 4);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    let ids = query(
        d,
        "SELECT customer_id FROM customer WHERE status = 'active' ORDER BY 1 LIMIT 2",
    );
    let (a, b) = (ids[0].as_str(), ids[1].as_str());
    let t = |args: &[&str]| run_in(d, args).status.code();
    let terminate = |id: &str, date: &str| {
        t(&[
            "customer",
            "terminate",
            "--customer",
            id,
            "--reason",
            "asked",
            "--date",
            date,
        ])
    };
    let reactivate = |id: &str, date: &str| {
        t(&[
            "customer",
            "reactivate",
            "--customer",
            id,
            "--reason",
            "back",
            "--date",
            date,
        ])
    };
    assert_eq!(terminate(a, "2026-03-01"), Some(0));
    assert_eq!(terminate(a, "2026-04-01"), Some(65), "already terminated");
    assert_eq!(
        reactivate(a, "2026-02-01"),
        Some(65),
        "before the termination"
    );
    assert_eq!(reactivate(a, "2026-04-01"), Some(0));
    assert_eq!(reactivate(a, "2026-04-02"), Some(65), "not terminated");
    // More than 24 months ago: historical, never reactivated.
    assert_eq!(terminate(b, "2023-01-01"), Some(0));
    assert_eq!(reactivate(b, "2025-01-02"), Some(65));
    assert_eq!(terminate("CU9999999999", "2026-03-01"), Some(66));
    assert_eq!(terminate(a, "2999-01-01"), Some(2), "in the future");
    assert_eq!(
        t(&["customer", "terminate", "--customer", a, "--reason", " "]),
        Some(2)
    );
    ok(d, &["score", "--as-of", "2026-06-30"]);
    let stages = query(
        d,
        &format!(
            "SELECT customer_id, lifecycle_stage, stage_since FROM customer_score \
             WHERE as_of = DATE '2026-06-30' AND customer_id IN ('{a}', '{b}') ORDER BY 1"
        ),
    );
    assert_eq!(stages[1], format!("{b},historical,2025-01-02"));
    // Reactivated 2026-04-01: no longer terminated, and no stage starts
    // before the reactivation.
    let a_row: Vec<&str> = stages[0].split(',').collect();
    assert!(
        a_row[1] != "terminated" && a_row[2] >= "2026-04-01",
        "{stages:?}"
    );
    // The decisions are rows of lifecycle_event with their actor.
    let events = query(
        d,
        "SELECT action, count(*) FROM lifecycle_event GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(events, vec!["reactivate,1", "terminate,2"]);
}

#[test]
fn lists_over_http_show_each_role_its_lines() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let (_rt, addr) = server_with(d, |_| {});
    ok(d, &["resolve"]);
    ok(d, &["score", "--as-of", "2026-06-30"]);
    let analyst = token(d, "ann", "analyst", &[]);
    let bearer = |t: &str| format!("Bearer {t}");
    let get =
        |path: &str, t: &str| request(addr, "GET", path, &[("authorization", &bearer(t))], b"");

    let r = get(
        "/v1/lists/renewals?as_of=2026-06-30&within_days=120&format=csv",
        &analyst,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let run = r.header("x-list-run-id").unwrap().to_string();
    assert_eq!(
        r.header("content-location"),
        Some(format!("/v1/lists/{run}").as_str())
    );
    let text = r.text();
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert!(rows.len() >= 3, "{text}");
    // The analyst sees every line, with phones masked.
    assert!(rows.iter().all(|r| r[3].contains('*')), "{text}");
    // The same run again: the same lines.
    let again = get(&format!("/v1/lists/{run}?format=csv"), &analyst);
    assert_eq!(again.text(), text);

    // A telesales agent reads only their own assignments, phones in clear.
    let agent = rows
        .iter()
        .map(|r| r[14].clone())
        .find(|a| !a.is_empty())
        .expect("an assigned line");
    let mine: Vec<&Vec<String>> = rows.iter().filter(|r| r[14] == agent).collect();
    let tele = token(d, "tom", "telesales", &["--agent-id", &agent]);
    let r = get(&format!("/v1/lists/{run}?format=csv"), &tele);
    assert_eq!(r.status, 200, "{}", r.text());
    let theirs: Vec<String> = r.text().lines().skip(1).map(str::to_string).collect();
    assert_eq!(theirs.len(), mine.len(), "{}", r.text());
    for (t, m) in theirs.iter().zip(&mine) {
        let t: Vec<&str> = t.split(',').collect();
        assert_eq!(t[1], m[1]);
        assert!(!t[3].contains('*'), "{t:?}");
    }
    // Their assigned customers are now theirs in every table.
    let r = request(
        addr,
        "GET",
        "/v1/queries/customer_count?format=csv",
        &[("authorization", &bearer(&tele))],
        b"",
    );
    let seen: i64 = r
        .text()
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert!(seen >= mine.len() as i64, "{}", r.text());

    // Who may not: a steward (no lists), a monitor; unknown runs; bad options.
    let steward = token(d, "sue", "steward", &["--team", "个险一部"]);
    assert_eq!(
        get("/v1/lists/renewals?as_of=2026-06-30", &steward).status,
        403
    );
    assert_eq!(get(&format!("/v1/lists/{run}"), &steward).status, 403);
    assert_eq!(get("/v1/lists/LRnope", &analyst).status, 404);
    assert_eq!(
        get("/v1/lists/renewals?within_days=-1", &analyst).status,
        400
    );
    assert_eq!(get("/v1/lists/churn?within_days=3", &analyst).status, 400);
    assert_eq!(
        get("/v1/lists/cross-sell?region=mars", &analyst).status,
        400
    );
    assert_eq!(
        get("/v1/lists/renewals?as_of=2026-06-30&nope=1", &analyst).status,
        400
    );
    let r = get("/v1/lists/churn?as_of=2026-06-30&format=csv", &analyst);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get("/v1/lists/cross-sell?as_of=2026-06-30&format=csv", &analyst);
    assert_eq!(r.status, 200, "{}", r.text());

    // Every list read is an audited export naming its run.
    ok(d, &["audit", "flush"]);
    let exports = query(
        d,
        &format!(
            "SELECT outcome, count(*) FROM audit_log WHERE action = 'list_export' AND object = '{run}' \
             GROUP BY 1 ORDER BY 1"
        ),
    );
    // Streamed reads are recorded as they start; the steward's refused
    // read is recorded too.
    assert_eq!(exports, vec!["denied,1", "started,3"]);
}

#[test]
fn scoring_a_lake_with_nothing_resolved_scores_no_one() {
    let d = tempfile::tempdir().unwrap();
    let out = ok(d.path(), &["score", "--as-of", "2026-06-30", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["customers"], 0, "{s}");
    let n = crate::common::count(
        d.path(),
        "SELECT count(*) FROM customer_score WHERE as_of = DATE '2026-06-30'",
    );
    assert_eq!(n, 0);
}

#[test]
fn a_book_scored_in_passes_gets_the_rows_of_one_pass_in_one_commit() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let s = sample(d, 300, 11);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    let rows = "SELECT customer_id, as_of, customer_type, lifecycle_stage, stage_since, value_score, \
                value_tier, churn_risk, segment, product_lines, premium_3y, active_policies \
                FROM customer_score WHERE as_of = DATE '2026-06-30' ORDER BY customer_id";
    let whole: serde_json::Value =
        serde_json::from_str(&ok(d, &["score", "--as-of", "2026-06-30", "--json"])).unwrap();
    assert_eq!(whole["passes"], 1, "{whole}");
    let once = query(d, rows);
    let customers = query(d, "SELECT count(*) FROM customer WHERE status = 'active'");
    assert_eq!(once.len().to_string(), customers[0]);
    // Some customers hold several source records (merged), so a pass that
    // missed a record's facts would change their scores.
    let merged = crate::common::count(
        d,
        "SELECT count(*) FROM (SELECT customer_id FROM customer_xref GROUP BY customer_id HAVING count(*) > 1)",
    );
    assert!(
        merged > 20,
        "too few merged customers to prove anything: {merged}"
    );

    // At most 60 customers a pass: 300-odd customers in 5 or 6 passes,
    // consecutive ids each, written in one commit that replaces the date.
    std::fs::write(
        d.join("custlake.toml"),
        "[analytics]\nscore_pass_customers = 60\n",
    )
    .unwrap();
    let before = crate::common::count(d, "SELECT count(*) FROM customer_score");
    let passes: serde_json::Value =
        serde_json::from_str(&ok(d, &["score", "--as-of", "2026-06-30", "--json"])).unwrap();
    let n = passes["passes"].as_u64().unwrap();
    let total: u64 = customers[0].parse().unwrap();
    assert_eq!(n, total.div_ceil(60), "{passes}");
    assert_eq!(passes["customers"], whole["customers"]);
    assert_eq!(passes["stages"], whole["stages"]);
    assert_eq!(passes["tiers"], whole["tiers"]);
    assert_eq!(passes["version"], whole["version"].as_u64().unwrap() + 1);
    assert_eq!(query(d, rows), once);
    assert_eq!(
        crate::common::count(d, "SELECT count(*) FROM customer_score"),
        before
    );

    // A run that dies after its second pass, its rows of two passes
    // already sent to the write, commits nothing: the date keeps the
    // scores it had.
    let status = std::process::Command::new(crate::common::bin())
        .current_dir(d)
        .args(["score", "--quiet", "--as-of", "2026-06-30"])
        .env("CUSTLAKE_FAILPOINT", "score.after_pass@2")
        .status()
        .unwrap();
    assert!(!status.success(), "the failpoint should have stopped it");
    assert_eq!(query(d, rows), once);
    let again: serde_json::Value =
        serde_json::from_str(&ok(d, &["score", "--as-of", "2026-06-30", "--json"])).unwrap();
    assert_eq!(again["version"], passes["version"].as_u64().unwrap() + 1);

    // A pass that runs out of query memory before its first row is scored
    // again as two halves: the same rows, in one more pass, and a warning
    // that says so.
    let out = std::process::Command::new(crate::common::bin())
        .current_dir(d)
        .args(["score", "--as-of", "2026-06-30", "--json"])
        .env("CUSTLAKE_FAILPOINT", "score.pass_memory@1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let halved: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(halved["passes"].as_u64(), Some(n + 1), "{halved}");
    assert_eq!(halved["customers"], whole["customers"]);
    assert_eq!(halved["version"], again["version"].as_u64().unwrap() + 1);
    assert!(
        stderr.contains("ran out of query memory") && stderr.contains("scoring it as two passes"),
        "{stderr}"
    );
    assert_eq!(query(d, rows), once);
}

#[test]
fn a_policy_that_is_the_basis_of_two_offers_counts_once() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let s = sample(d, 400, 5);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    ok(d, &["score", "--as-of", "2026-06-30"]);
    // Motor offers two lines: a motor customer holding neither is offered
    // both, on the same motor policies.
    std::fs::write(
        d.join("custlake.toml"),
        "[[analytics.cross_sell]]\nhas = \"motor\"\nlacks = \"property\"\n\n\
         [[analytics.cross_sell]]\nhas = \"motor\"\nlacks = \"health\"\n",
    )
    .unwrap();
    let (out, _) = list(
        d,
        &[
            "list",
            "cross-sell",
            "--as-of",
            "2026-06-30",
            "--format",
            "json",
        ],
    );
    let lines: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let both: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["detail"] == "health,property")
        .collect();
    assert!(
        both.len() >= 3,
        "too few customers offered both lines to prove anything: {out}"
    );
    for line in both.iter().take(4) {
        let policies: Vec<&str> = line["policies"].as_str().unwrap().split(',').collect();
        let mut unique = policies.clone();
        unique.dedup();
        assert_eq!(unique, policies, "each policy once: {line}");
        let quoted: Vec<String> = policies.iter().map(|p| format!("'{p}'")).collect();
        let want = query(
            d,
            &format!(
                "SELECT sum(premium), count(*) FILTER (WHERE product_line <> 'motor') \
                 FROM policy WHERE policy_no IN ({})",
                quoted.join(",")
            ),
        );
        let got = line["total_premium"]
            .to_string()
            .trim_matches('"')
            .to_string();
        let want: Vec<&str> = want[0].split(',').collect();
        assert_eq!(want[1], "0", "only motor policies are the basis: {line}");
        assert_eq!(
            got.parse::<f64>().unwrap(),
            want[0].parse::<f64>().unwrap(),
            "premium counted once per policy: {line}"
        );
    }
}

//! Data quality: every dimension's score on a hand-made fixture, worked
//! out by hand below; and runs on a lake as a steward uses them (work
//! orders carried and closed, levels due, the stored sample seed).

use std::collections::BTreeMap;
use std::sync::Arc;

use custlake::config::Config;
use custlake::quality::{Metric, Scope};
use custlake::schema::Catalog;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::common::{core_customer_changed, ingest_file, ok, query, sample};

/// A table of the catalog with these rows (values as text, cast to the
/// declared types; `None` and undeclared columns are null).
fn table(
    ctx: &SessionContext,
    catalog: &Catalog,
    name: &str,
    cols: &[&str],
    rows: &[&[Option<&str>]],
) {
    let def = catalog.table(name).unwrap();
    let schema = def.arrow_schema();
    let arrays = schema
        .fields()
        .iter()
        .map(|f| {
            let at = |c: &str| cols.iter().position(|x| *x == c);
            // The source record's integer key, as ingest and resolve store it.
            if f.name() == "source_key"
                && let (Some(s), Some(i)) = (at("source_system"), def.source_key_of().and_then(at))
            {
                let keys: datafusion::arrow::array::Int64Array = rows
                    .iter()
                    .map(|r| Some(custlake::domain::source_key(r[s]?, r[i]?)))
                    .collect();
                return Arc::new(keys) as _;
            }
            let text: StringArray = match at(f.name()) {
                Some(i) => rows.iter().map(|r| r[i]).collect(),
                None => rows.iter().map(|_| None::<&str>).collect(),
            };
            cast(&text, f.data_type()).unwrap()
        })
        .collect::<Vec<_>>();
    for c in cols {
        assert!(def.field(c).is_some(), "{name} has no field {c}");
    }
    let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
    let _ = ctx.deregister_table(name);
    ctx.register_table(
        name,
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
    )
    .unwrap();
}

fn fixture(catalog: &Catalog) -> SessionContext {
    let config = Config::embedded();
    let ctx = custlake::query::context(&config).unwrap();
    for def in &catalog.tables {
        table(&ctx, catalog, &def.name, &[], &[]);
    }
    table(
        &ctx,
        catalog,
        "source_customer",
        &[
            "source_system",
            "source_id",
            "customer_type",
            "name",
            "gender",
            "birth_date",
            "id_type",
            "id_number",
            "uscc",
            "phone",
            "email",
            "owning_team",
            "agent_id",
            "updated_at",
            "ingested_at",
            "legal_rep",
        ],
        &[
            // R1: everything right; timely (landed 2 days after the change).
            &[
                Some("core"),
                Some("C1"),
                Some("individual"),
                Some("张三"),
                Some("M"),
                Some("1980-01-01"),
                Some("resident_id"),
                Some("11010519491231002X"),
                None,
                Some("+8613812345678"),
                None,
                Some("T1"),
                Some("A1"),
                Some("2026-06-01T00:00:00Z"),
                Some("2026-06-03T00:00:00Z"),
                None,
            ],
            // R2: the same person in telesales: no birth date, a wrong check
            // digit, another phone than the golden one, landed 9 days late.
            &[
                Some("telesales"),
                Some("L1"),
                Some("individual"),
                Some("张三"),
                Some("M"),
                None,
                Some("resident_id"),
                Some("110105194912310021"),
                None,
                Some("+8613900000000"),
                None,
                Some("T1"),
                Some("A2"),
                Some("2026-06-01T00:00:00Z"),
                Some("2026-06-10T00:00:00Z"),
                None,
            ],
            // R3: a company with a gender code that is none, a bad e-mail,
            // and a legal representative the business registry does not know.
            &[
                Some("core"),
                Some("C2"),
                Some("corporate"),
                Some("星辰科技有限公司"),
                Some("X"),
                None,
                None,
                None,
                Some("91350100M000100Y43"),
                None,
                Some("not-an-email"),
                Some("T2"),
                None,
                Some("2026-05-01T00:00:00Z"),
                Some("2026-05-01T00:00:00Z"),
                Some("赵六"),
            ],
            // R4: a person with only a name; no team; no updated_at.
            &[
                Some("core"),
                Some("C3"),
                Some("individual"),
                Some("李四"),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                Some("2026-05-01T00:00:00Z"),
                None,
            ],
        ],
    );
    // The registry knows R3's company under its name, with another legal
    // representative; its address is not compared (R3 has none).
    table(
        &ctx,
        catalog,
        "business_registry",
        &["uscc", "registered_name", "legal_rep", "address"],
        &[&[
            Some("91350100M000100Y43"),
            Some("星辰科技有限公司"),
            Some("王五"),
            Some("福建省|福州市|鼓楼区|五四路1号"),
        ]],
    );
    table(
        &ctx,
        catalog,
        "customer_xref",
        &["source_system", "source_id", "customer_id"],
        &[
            &[Some("core"), Some("C1"), Some("CU1")],
            &[Some("telesales"), Some("L1"), Some("CU1")],
            &[Some("core"), Some("C2"), Some("CU2")],
            &[Some("core"), Some("C3"), Some("CU3")],
        ],
    );
    let golden = [
        "customer_id",
        "customer_type",
        "name",
        "phone",
        "owning_team",
        "status",
        "created_at",
        "updated_at",
    ];
    table(
        &ctx,
        catalog,
        "customer",
        &golden,
        &[
            &[
                Some("CU1"),
                Some("individual"),
                Some("张三"),
                Some("+8613812345678"),
                Some("T1"),
                Some("active"),
                Some("2026-06-03T00:00:00Z"),
                Some("2026-06-10T00:00:00Z"),
            ],
            &[
                Some("CU2"),
                Some("corporate"),
                Some("星辰科技有限公司"),
                None,
                Some("T2"),
                Some("active"),
                Some("2026-05-01T00:00:00Z"),
                Some("2026-05-01T00:00:00Z"),
            ],
            &[
                Some("CU3"),
                Some("individual"),
                Some("李四"),
                None,
                None,
                Some("active"),
                Some("2026-05-01T00:00:00Z"),
                Some("2026-05-01T00:00:00Z"),
            ],
            // Retired: not checked.
            &[
                Some("CU9"),
                Some("individual"),
                None,
                None,
                Some("T1"),
                Some("retired"),
                Some("2026-05-01T00:00:00Z"),
                Some("2026-05-01T00:00:00Z"),
            ],
        ],
    );
    // An open group of CU2 (first member core:C2) and CU3; a rejected one.
    table(
        &ctx,
        catalog,
        "suspect_group",
        &["group_id", "member", "customer_id", "status"],
        &[
            &[Some("G1"), Some("core:C3"), Some("CU3"), Some("open")],
            &[Some("G1"), Some("core:C2"), Some("CU2"), Some("open")],
            &[Some("G2"), Some("core:C1"), Some("CU1"), Some("rejected")],
            &[Some("G2"), Some("core:C2"), Some("CU2"), Some("rejected")],
        ],
    );
    // core's customers were first loaded on 1 April, telesales' on 15 May.
    table(
        &ctx,
        catalog,
        "ingest_batch",
        &["batch_id", "source_system", "table_name", "started_at"],
        &[
            &[
                Some("B1"),
                Some("core"),
                Some("source_customer"),
                Some("2026-04-01T00:00:00Z"),
            ],
            &[
                Some("B2"),
                Some("telesales"),
                Some("source_customer"),
                Some("2026-05-15T00:00:00Z"),
            ],
            &[
                Some("B3"),
                Some("core"),
                Some("source_customer"),
                Some("2026-06-02T00:00:00Z"),
            ],
        ],
    );
    // A core row ingest rejected: a bad phone and no name, team T2.
    table(
        &ctx,
        catalog,
        "quarantine",
        &[
            "batch_id",
            "line",
            "source_system",
            "entity",
            "table_name",
            "reasons",
            "raw",
        ],
        &[&[
            Some("B1"),
            Some("5"),
            Some("core"),
            Some("customer"),
            Some("source_customer"),
            Some("INVALID_PHONE:phone; MISSING_REQUIRED:name"),
            Some(r#"{"归属团队": "T2", "手机": "12345"}"#),
        ]],
    );
    table(
        &ctx,
        catalog,
        "policy",
        &[
            "policy_no",
            "source_system",
            "source_customer_id",
            "product_line",
            "product_code",
            "status",
            "effective_date",
            "expiry_date",
            "premium",
            "owning_team",
        ],
        &[
            // P1 expires before it takes effect; P2 has a negative premium.
            &[
                Some("P1"),
                Some("core"),
                Some("C1"),
                Some("motor"),
                Some("M1"),
                Some("active"),
                Some("2026-01-01"),
                Some("2025-12-31"),
                Some("100.00"),
                Some("T1"),
            ],
            &[
                Some("P2"),
                Some("core"),
                Some("C2"),
                Some("motor"),
                Some("M1"),
                Some("active"),
                Some("2026-01-01"),
                Some("2026-12-31"),
                Some("-5.00"),
                Some("T2"),
            ],
        ],
    );
    ctx
}

fn find<'a>(
    ms: &'a [Metric],
    table: &str,
    rule: &str,
    field: &str,
    source: &str,
    team: &str,
) -> Option<&'a Metric> {
    ms.iter().find(|m| {
        m.table == table
            && m.rule == rule
            && m.field == field
            && m.source_system == source
            && m.owning_team == team
    })
}

#[track_caller]
fn counts(
    ms: &[Metric],
    table: &str,
    rule: &str,
    field: &str,
    source: &str,
    team: &str,
) -> (i64, i64) {
    let m = find(ms, table, rule, field, source, team)
        .unwrap_or_else(|| panic!("no metric {table} {rule} {field} {source} {team}"));
    (m.passed, m.checked)
}

/// (record key, field, rule) of a failure.
type Triple = (String, String, String);

#[track_caller]
fn close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
}

#[test]
fn every_dimension_scores_as_worked_out_by_hand() {
    let catalog = Catalog::embedded().unwrap();
    let mut config = Config::embedded();
    config
        .quality
        .tables
        .retain(|t, _| ["source_customer", "customer", "policy"].contains(&t.as_str()));
    config.quality.consistency_fields = vec!["name".into(), "phone".into()];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let eval = rt.block_on(async {
        let ctx = fixture(&catalog);
        let as_of = chrono::NaiveDate::from_ymd_opt(2026, 6, 30).unwrap();
        custlake::quality::run::prepare(&ctx, &custlake::security::Masks::new(b"salt"), as_of);
        let plans = custlake::quality::rules::plans(&config, &catalog).unwrap();
        let scope = Scope::full(1);
        custlake::quality::run::evaluate(
            &config,
            &ctx,
            &catalog,
            &plans,
            &scope,
            &custlake::progress::Silent,
        )
        .await
        .unwrap()
    });
    let ms = &eval.metrics;
    let sc = "source_customer";
    // Completeness: required per customer type (R3 is a company: no birth
    // date needed); the quarantined row's missing name counts.
    assert_eq!(
        counts(ms, sc, "complete", "birth_date", "core", "T1"),
        (1, 1)
    );
    assert_eq!(
        counts(ms, sc, "complete", "birth_date", "telesales", "T1"),
        (0, 1)
    );
    assert_eq!(
        counts(ms, sc, "complete", "birth_date", "core", "unassigned"),
        (0, 1)
    );
    assert!(find(ms, sc, "complete", "birth_date", "core", "T2").is_none());
    assert_eq!(counts(ms, sc, "complete", "name", "core", "T2"), (1, 2));
    assert_eq!(counts(ms, sc, "complete", "uscc", "core", "T2"), (1, 1));
    // Validity: check digits, code sets, validators; empty values are not
    // counted; the quarantined phone counts against its source and team.
    assert_eq!(counts(ms, sc, "valid", "id_number", "core", "T1"), (1, 1));
    assert_eq!(
        counts(ms, sc, "valid", "id_number", "telesales", "T1"),
        (0, 1)
    );
    assert_eq!(counts(ms, sc, "valid", "gender", "core", "T2"), (0, 1));
    assert_eq!(counts(ms, sc, "valid", "email", "core", "T2"), (0, 1));
    assert_eq!(counts(ms, sc, "valid", "uscc", "core", "T2"), (1, 1));
    assert_eq!(counts(ms, sc, "valid", "phone", "core", "T2"), (0, 1));
    assert_eq!(counts(ms, sc, "valid", "phone", "telesales", "T1"), (1, 1));
    assert!(find(ms, sc, "valid", "phone", "core", "unassigned").is_none());
    // Uniqueness: keys; the later member of an open suspect group (CU3),
    // not the first (CU2), nor a rejected group's.
    assert_eq!(
        counts(
            ms,
            sc,
            "unique_key",
            "source_system+source_id",
            "core",
            "T1"
        ),
        (1, 1)
    );
    assert_eq!(
        counts(
            ms,
            "customer",
            "unique_customer",
            "customer_id",
            "golden",
            "T1"
        ),
        (1, 1)
    );
    assert_eq!(
        counts(
            ms,
            "customer",
            "unique_customer",
            "customer_id",
            "golden",
            "T2"
        ),
        (1, 1)
    );
    assert_eq!(
        counts(
            ms,
            "customer",
            "unique_customer",
            "customer_id",
            "golden",
            "unassigned"
        ),
        (0, 1)
    );
    // Consistency: only customers with several source records (CU1).
    assert_eq!(counts(ms, sc, "consistent", "phone", "core", "T1"), (1, 1));
    assert_eq!(
        counts(ms, sc, "consistent", "phone", "telesales", "T1"),
        (0, 1)
    );
    assert_eq!(
        counts(ms, sc, "consistent", "name", "telesales", "T1"),
        (1, 1)
    );
    assert!(find(ms, sc, "consistent", "name", "core", "T2").is_none());
    // Accuracy: against the business registry, where both are filled.
    assert_eq!(counts(ms, sc, "accurate", "name", "core", "T2"), (1, 1));
    assert_eq!(
        counts(ms, sc, "accurate", "legal_rep", "core", "T2"),
        (0, 1)
    );
    assert!(find(ms, sc, "accurate", "address", "core", "T2").is_none());
    assert!(find(ms, sc, "accurate", "name", "core", "T1").is_none());
    // Timeliness: T+3 from updated_at; R4 has none; policy has no load.
    assert_eq!(counts(ms, sc, "timely", "updated_at", "core", "T1"), (1, 1));
    assert_eq!(
        counts(ms, sc, "timely", "updated_at", "telesales", "T1"),
        (0, 1)
    );
    assert_eq!(counts(ms, sc, "timely", "updated_at", "core", "T2"), (1, 1));
    assert!(find(ms, sc, "timely", "updated_at", "core", "unassigned").is_none());
    assert!(
        ms.iter()
            .all(|m| !(m.table == "policy" && m.rule == "timely"))
    );
    // A rule of sql/quality/ and a generated one on the same table.
    assert_eq!(
        counts(ms, "policy", "policy_term", "expiry_date", "core", "T1"),
        (0, 1)
    );
    assert_eq!(
        counts(ms, "policy", "policy_term", "expiry_date", "core", "T2"),
        (1, 1)
    );
    assert_eq!(
        counts(ms, "policy", "valid", "premium", "core", "T2"),
        (0, 1)
    );
    for m in ms.iter().filter(|m| m.rule != "overall") {
        close(m.score, m.passed as f64 / m.checked as f64 * 100.0);
    }

    // Overall: the dimensions weighted 30/25/15/10/10 (accuracy unchecked).
    // telesales T1 is R2 alone: completeness 7/8, validity 6/7,
    // consistency 1/2, uniqueness 1/1, timeliness 0/1.
    let r2 = (30.0 * 87.5 + 25.0 * 600.0 / 7.0 + 15.0 * 50.0 + 10.0 * 100.0) / 90.0;
    close(
        find(ms, sc, "overall", "*", "telesales", "T1")
            .unwrap()
            .score,
        r2,
    );
    // core T2 is R3 and the quarantined row: completeness 4/5, validity
    // 5/8, accuracy 1/2, uniqueness 1/1, timeliness 1/1.
    let t2 = (30.0 * 80.0 + 25.0 * 62.5 + 10.0 * 50.0 + 10.0 * 100.0 + 10.0 * 100.0) / 85.0;
    close(
        find(ms, sc, "overall", "*", "core", "T2").unwrap().score,
        t2,
    );
    assert!(find(ms, "*", "overall", "*", "*", "T1").is_some());
    assert!(find(ms, "*", "overall", "*", "*", "*").is_some());

    // Failing record fields, with the record's score and the value as a
    // steward sees it (an L4 id number masked, an L3 e-mail in clear).
    let got: BTreeMap<Triple, (Option<String>, String, String)> = eval
        .failures
        .iter()
        .map(|f| {
            (
                (f.record_key.clone(), f.field.clone(), f.rule.clone()),
                (
                    f.value.clone(),
                    f.owning_team.clone(),
                    format!("{:.6}", f.record_score),
                ),
            )
        })
        .collect();
    // R3: completeness 4/4, validity 5/7, accuracy 1/2, uniqueness,
    // timeliness 1/1.
    let r3 = (30.0 * 100.0 + 25.0 * 500.0 / 7.0 + 10.0 * 50.0 + 10.0 * 100.0 + 10.0 * 100.0) / 85.0;
    let r4 = (30.0 * 37.5 + 25.0 * 100.0 + 10.0 * 100.0) / 65.0;
    let cu3 = (30.0 * 100.0 + 25.0 * 100.0 + 10.0 * 50.0) / 65.0;
    let p = (30.0 * 100.0 + 25.0 * 500.0 / 6.0 + 10.0 * 100.0) / 65.0;
    let s = |v: Option<&str>, team: &str, score: f64| {
        (
            v.map(str::to_string),
            team.to_string(),
            format!("{score:.6}"),
        )
    };
    let k = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    let want = BTreeMap::from([
        (
            k("telesales|L1", "birth_date", "complete"),
            s(None, "T1", r2),
        ),
        (
            k("telesales|L1", "id_number", "valid"),
            s(Some("110***********0021"), "T1", r2),
        ),
        (
            k("telesales|L1", "phone", "consistent"),
            s(Some("+86*******0000"), "T1", r2),
        ),
        (
            k("telesales|L1", "updated_at", "timely"),
            s(
                Some("2026-06-01T00:00:00Z landed 2026-06-10T00:00:00Z"),
                "T1",
                r2,
            ),
        ),
        (k("core|C2", "gender", "valid"), s(Some("X"), "T2", r3)),
        (
            k("core|C2", "email", "valid"),
            s(Some("not-an-email"), "T2", r3),
        ),
        (
            k("core|C2", "legal_rep", "accurate"),
            s(Some("赵六"), "T2", r3),
        ),
        (
            k("core|C3", "gender", "complete"),
            s(None, "unassigned", r4),
        ),
        (
            k("core|C3", "birth_date", "complete"),
            s(None, "unassigned", r4),
        ),
        (
            k("core|C3", "id_type", "complete"),
            s(None, "unassigned", r4),
        ),
        (
            k("core|C3", "id_number", "complete"),
            s(None, "unassigned", r4),
        ),
        (k("core|C3", "phone", "complete"), s(None, "unassigned", r4)),
        (
            k("CU3", "customer_id", "unique_customer"),
            s(Some("CU3"), "unassigned", cu3),
        ),
        (
            k("P1", "expiry_date", "policy_term"),
            s(Some("2025-12-31"), "T1", p),
        ),
        (k("P2", "premium", "valid"), s(Some("-5.00"), "T2", p)),
    ]);
    assert_eq!(got, want);
    // R2, R3 and R4 score below 90 (work orders); CU3 and the policies not.
    assert!(r2 < 90.0 && r3 < 90.0 && r4 < 90.0 && cu3 >= 90.0 && p >= 90.0);
}

#[test]
fn a_fixed_record_leaves_the_open_work_orders_and_levels_run_when_due() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let s = sample(d, 300, 11);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    let first = ok(
        d,
        &[
            "quality",
            "run",
            "--full",
            "--as-of",
            "2026-06-30",
            "--json",
        ],
    );
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(first["open"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["new"], first["open"]);
    let run1 = first["run_id"].as_str().unwrap().to_string();

    // A failing consistency: a source phone that differs from the golden
    // one. Make that source record agree by loading a corrected file.
    let failing = query(
        d,
        "SELECT record_key FROM quality_issue WHERE rule = 'consistent' AND field = 'phone' AND status = 'open' AND record_key LIKE 'core|%' ORDER BY record_key LIMIT 1",
    );
    assert_eq!(failing.len(), 1, "the sample has no core phone disagreeing");
    let source_id = failing[0].split('|').nth(1).unwrap().to_string();
    let golden = query(
        d,
        &format!(
            "SELECT c.phone FROM customer c JOIN customer_xref x ON x.customer_id = c.customer_id WHERE x.source_system = 'core' AND x.source_id = '{source_id}'"
        ),
    );
    let fixed = d.join("customers.csv");
    core_customer_changed(&s, &source_id, "联系电话", &golden[0], &fixed);
    ingest_file(d, "core", "customer", &fixed);

    let second = ok(
        d,
        &[
            "quality",
            "run",
            "--full",
            "--as-of",
            "2026-06-30",
            "--json",
        ],
    );
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert!(second["fixed"].as_u64().unwrap() >= 1, "{second}");
    assert_eq!(second["new"], 0, "{second}");
    let run2 = second["run_id"].as_str().unwrap();
    let key = &failing[0];
    let rows = query(
        d,
        &format!(
            "SELECT run_id, status, first_seen_run FROM quality_issue WHERE record_key = '{key}' AND rule = 'consistent' AND field = 'phone' ORDER BY run_at"
        ),
    );
    assert_eq!(
        rows,
        vec![
            format!("{run1},open,{run1}"),
            format!("{run2},fixed,{run1}")
        ]
    );
    // Still-failing ones keep the run that first found them.
    let carried = query(
        d,
        &format!(
            "SELECT count(*) FROM quality_issue WHERE run_id = '{run2}' AND status = 'open' AND first_seen_run = '{run1}'"
        ),
    );
    assert_eq!(
        carried[0].parse::<u64>().unwrap(),
        second["open"].as_u64().unwrap()
    );

    // Scheduled runs: every level is due once in its period; the first
    // run checked them all on 2026-06-30, so a run that day has nothing
    // due, and on the next day only L4 (daily) is, on every record.
    let again = ok(d, &["quality", "run", "--as-of", "2026-06-30", "--json"]);
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["levels"], serde_json::json!({}), "{again}");
    let next = ok(
        d,
        &[
            "quality",
            "run",
            "--as-of",
            "2026-07-01",
            "--seed",
            "42",
            "--json",
        ],
    );
    let next: serde_json::Value = serde_json::from_str(&next).unwrap();
    // 1 July: a new day (L4), month (L2) and quarter (L1), the same ISO
    // week as 30 June (L3 not due).
    assert_eq!(
        next["levels"],
        serde_json::json!({"L1": 0.05, "L2": 0.1, "L4": 1.0}),
        "{next}"
    );
    let run3 = next["run_id"].as_str().unwrap();
    let stored = query(
        d,
        &format!(
            "SELECT DISTINCT level, sample_rate, sample_seed FROM quality_metric WHERE run_id = '{run3}' AND rule <> 'overall' ORDER BY level"
        ),
    );
    assert_eq!(stored, vec!["L1,0.05,42", "L2,0.1,42", "L4,1.0,42"]);

    // 6 July, a new ISO week: L3 at 20 % and L4. The L3 rules' work orders
    // were last written by the full run two runs back (only L4 was checked
    // on every record since), so they must still be found open, not new.
    let week = ok(
        d,
        &[
            "quality",
            "run",
            "--as-of",
            "2026-07-06",
            "--seed",
            "42",
            "--json",
        ],
    );
    let week: serde_json::Value = serde_json::from_str(&week).unwrap();
    assert_eq!(
        week["levels"],
        serde_json::json!({"L3": 0.2, "L4": 1.0}),
        "{week}"
    );
    let run4 = week["run_id"].as_str().unwrap();
    let l3 = query(
        d,
        &format!(
            "SELECT count(*) FROM quality_issue WHERE run_id = '{run4}' AND level = 'L3' AND status = 'open' AND first_seen_run = '{run1}'"
        ),
    );
    assert!(
        l3[0].parse::<u64>().unwrap() > 0,
        "no L3 work order found again with the run that first found it"
    );
    assert_eq!(week["new"], 0, "{week}");
    assert_eq!(week["fixed"], 0, "{week}");
}

#[test]
fn a_duplicated_key_fails_on_every_copy_and_without_one_no_key_join_is_made() {
    let catalog = Catalog::embedded().unwrap();
    let mut config = Config::embedded();
    config.quality.tables.retain(|t, _| t == "policy");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = fixture(&catalog);
        let as_of = chrono::NaiveDate::from_ymd_opt(2026, 6, 30).unwrap();
        custlake::quality::run::prepare(&ctx, &custlake::security::Masks::new(b"salt"), as_of);
        let plans = custlake::quality::rules::plans(&config, &catalog).unwrap();
        let policy = &plans[0];
        let scope = Scope::full(1);
        // The fixture's policies have distinct numbers: the query has no
        // key join and every key passes.
        let found = custlake::quality::run::lookups(&ctx, policy).await.unwrap();
        assert!(!found.duplicates);
        let sql = policy.compile(&scope, &found).unwrap().sql;
        assert!(!sql.contains(" qd "), "{sql}");
        // P2 twice (two source systems' copies), P1 once.
        let row = |no: &'static str, source: &'static str, team: &'static str| {
            [
                Some(no),
                Some(source),
                Some("C1"),
                Some("motor"),
                Some("M1"),
                Some("active"),
                Some("2026-01-01"),
                Some("2026-12-31"),
                Some("100.00"),
                Some(team),
            ]
        };
        let (p1, p2a, p2b) = (
            row("P1", "core", "T1"),
            row("P2", "core", "T2"),
            row("P2", "telesales", "T2"),
        );
        table(
            &ctx,
            &catalog,
            "policy",
            &[
                "policy_no",
                "source_system",
                "source_customer_id",
                "product_line",
                "product_code",
                "status",
                "effective_date",
                "expiry_date",
                "premium",
                "owning_team",
            ],
            &[&p1, &p2a, &p2b],
        );
        let found = custlake::quality::run::lookups(&ctx, policy).await.unwrap();
        assert!(found.duplicates);
        let sql = policy.compile(&scope, &found).unwrap().sql;
        assert!(sql.contains(" qd "), "{sql}");
        let eval = custlake::quality::run::evaluate(
            &config,
            &ctx,
            &catalog,
            &plans,
            &scope,
            &custlake::progress::Silent,
        )
        .await
        .unwrap();
        let ms = &eval.metrics;
        assert_eq!(
            counts(ms, "policy", "unique_key", "policy_no", "core", "T1"),
            (1, 1)
        );
        assert_eq!(
            counts(ms, "policy", "unique_key", "policy_no", "core", "T2"),
            (0, 1)
        );
        assert_eq!(
            counts(ms, "policy", "unique_key", "policy_no", "telesales", "T2"),
            (0, 1)
        );
        let mut dups: Vec<_> = eval
            .failures
            .iter()
            .filter(|f| f.rule == "unique_key")
            .map(|f| {
                (
                    f.record_key.as_str(),
                    f.source_system.as_str(),
                    f.value.as_deref(),
                )
            })
            .collect();
        dups.sort();
        assert_eq!(
            dups,
            [("P2", "core", Some("P2")), ("P2", "telesales", Some("P2"))]
        );
    });
}

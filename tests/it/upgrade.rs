//! `custlake upgrade` on a lake an older custlake wrote: tables without
//! `source_key` are refused until it runs, and after it every answer is
//! what it was.

use std::path::Path;

use datafusion::arrow::compute::cast;
use datafusion::arrow::record_batch::RecordBatch;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;

use crate::common::{fails, ok, query, run_in, sample};

/// Rewrite one table part with the Delta library itself, in one overwrite
/// commit: its rows as `sql` selects them from the table `t`, each column
/// of `keep` in its declared type.
async fn rewrite(
    path: &Path,
    def: &custlake::schema::TableDef,
    sql: &str,
    keep: &dyn Fn(&str) -> bool,
) {
    let url = url::Url::from_directory_path(path).unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let read = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let full = def.arrow_schema();
    let kept: Vec<_> = full
        .fields()
        .iter()
        .filter(|f| keep(f.name()))
        .cloned()
        .collect();
    let schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(kept));
    let batches: Vec<RecordBatch> = read
        .iter()
        .map(|b| {
            let columns = schema
                .fields()
                .iter()
                .map(|f| {
                    let i = b.schema().index_of(f.name()).unwrap();
                    cast(b.column(i), f.data_type()).unwrap()
                })
                .collect();
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        })
        .collect();
    let mut write = table
        .write(batches)
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(SchemaMode::Overwrite);
    if let Some(p) = &def.partition {
        write = write.with_partition_columns([p.column.clone()]);
    }
    write.await.unwrap();
}

/// What an older custlake stored: every table part with a `source_key`
/// rewritten without it (the other columns in their declared types).
/// Returns the parts rewritten.
async fn downgrade(lake: &Path) -> Vec<String> {
    let catalog = custlake::schema::Catalog::embedded().unwrap();
    let mut out = Vec::new();
    for tier in ["hot", "warm", "cold"] {
        for def in &catalog.tables {
            let path = lake.join(tier).join(&def.name);
            if def.field("source_key").is_none() || !path.join("_delta_log").is_dir() {
                continue;
            }
            rewrite(&path, def, "SELECT * FROM t", &|c| c != "source_key").await;
            out.push(format!("{}/{tier}", def.name));
        }
    }
    out
}

/// The answers the upgrade must keep: each fact's rows per golden
/// customer (through the golden views, which join on `source_key`), the
/// scores (computed again) and a renewal list.
fn answers(d: &Path) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (view, measure) in [
        ("customer_policy", "sum(premium)"),
        ("customer_payment", "sum(amount)"),
        ("customer_claim", "count(claim_no)"),
        ("customer_interaction", "count(*)"),
        ("customer_consent", "count(*)"),
    ] {
        out.push(query(
            d,
            &format!(
                "SELECT customer_id, count(*) AS n, {measure} AS m FROM {view} \
                 GROUP BY customer_id ORDER BY customer_id"
            ),
        ));
    }
    // Scored again: the scores are computed through the keys.
    ok(d, &["score", "--as-of", "2026-06-30"]);
    out.push(query(
        d,
        "SELECT customer_id, lifecycle_stage, value_score, churn_risk, segment \
         FROM customer_score ORDER BY customer_id",
    ));
    let list = ok(
        d,
        &[
            "list",
            "renewals",
            "--as-of",
            "2026-06-30",
            "--within-days",
            "120",
            "--format",
            "csv",
        ],
    );
    out.push(list.lines().map(str::to_string).collect());
    out
}

/// Every stored `source_key` is the key of its record's system and id.
const WRONG_KEYS: &str = "SELECT \
    (SELECT count(*) FROM source_customer WHERE source_key IS DISTINCT FROM source_key(source_system, source_id)) + \
    (SELECT count(*) FROM customer_xref WHERE source_key IS DISTINCT FROM source_key(source_system, source_id)) + \
    (SELECT count(*) FROM policy WHERE source_key IS DISTINCT FROM source_key(source_system, source_customer_id)) + \
    (SELECT count(*) FROM payment WHERE source_key IS DISTINCT FROM source_key(source_system, source_customer_id)) + \
    (SELECT count(*) FROM claim WHERE source_key IS DISTINCT FROM source_key(source_system, source_customer_id)) + \
    (SELECT count(*) FROM interaction WHERE source_key IS DISTINCT FROM source_key(source_system, source_customer_id)) + \
    (SELECT count(*) FROM consent WHERE source_key IS DISTINCT FROM source_key(source_system, source_customer_id))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_lake_is_refused_until_upgraded_and_then_answers_the_same() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let s = sample(d, 300, 11);
    ok(d, &["ingest", "--from", s.to_str().unwrap()]);
    ok(d, &["resolve"]);
    // Old partitions move to warm and cold, so every tier has parts.
    ok(d, &["tier", "apply", "--as-of", "2026-06-30"]);
    // Ingest and resolve wrote the keys.
    assert_eq!(query(d, WRONG_KEYS), ["0"]);
    let before = answers(d);
    assert!(before.iter().all(|a| a.len() > 3), "{before:?}");

    let lake = d.join("data/lake");
    let parts = downgrade(&lake).await;
    assert!(
        parts
            .iter()
            .any(|p| p.ends_with("/warm") || p.ends_with("/cold")),
        "{parts:?}"
    );
    for table in [
        "source_customer",
        "customer_xref",
        "policy",
        "payment",
        "claim",
        "interaction",
        "consent",
    ] {
        assert!(
            parts.contains(&format!("{table}/hot")),
            "{table}: {parts:?}"
        );
    }

    // Reads and writes are refused with what to do, not a missing column.
    for args in [
        vec!["sql", "SELECT count(*) FROM policy"],
        vec!["resolve"],
        vec!["score", "--as-of", "2026-06-30"],
    ] {
        let out = run_in(d, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains("custlake upgrade"), "{args:?}: {err}");
    }

    // The dry run names every part and changes nothing.
    let plan: serde_json::Value =
        serde_json::from_str(&ok(d, &["upgrade", "--dry-run", "--json"])).unwrap();
    let mut planned: Vec<String> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["table"].as_str().unwrap(),
                p["tier"].as_str().unwrap()
            )
        })
        .collect();
    planned.sort();
    let mut expected = parts.clone();
    expected.sort();
    assert_eq!(planned, expected);
    assert!(fails(d, &["sql", "SELECT 1 FROM payment LIMIT 1"]).contains("custlake upgrade"));

    let upgraded = ok(d, &["upgrade"]);
    assert!(
        upgraded.contains(&format!("{} table parts rewritten", parts.len())),
        "{upgraded}"
    );
    assert_eq!(query(d, WRONG_KEYS), ["0"]);
    assert_eq!(answers(d), before);
    assert!(ok(d, &["upgrade"]).contains("up to date"));
    // Loads and resolution go on as before.
    ok(d, &["resolve"]);
    assert_eq!(query(d, WRONG_KEYS), ["0"]);

    // Two source records that share a key (as a hash collision would)
    // stop resolution, which names both.
    let ids = query(
        d,
        "SELECT source_system || ':' || source_id, source_key FROM source_customer \
         ORDER BY source_system, source_id LIMIT 2",
    );
    let (first, second) = (&ids[0], &ids[1]);
    let (first_id, key) = first.split_once(',').unwrap();
    let second_id = second.split_once(',').unwrap().0;
    let def = custlake::schema::Catalog::embedded()
        .unwrap()
        .table("source_customer")
        .unwrap()
        .clone();
    let (system, id) = second_id.split_once(':').unwrap();
    rewrite(
        &lake.join("hot/source_customer"),
        &def,
        &format!(
            "SELECT * REPLACE (CASE WHEN source_system = '{system}' AND source_id = '{id}' \
             THEN {key} ELSE source_key END AS source_key) FROM t"
        ),
        &|_| true,
    )
    .await;
    let err = fails(d, &["resolve"]);
    assert!(
        err.contains(first_id)
            && err.contains(second_id)
            && err.contains("share one integer source_key"),
        "{err}"
    );
}

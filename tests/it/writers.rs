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

/// `lake::upsert_chunks`, the write of resolve's links and golden records:
/// into an empty table the batches stream into one append, into a table
/// with rows they are gathered and merged, and a stream that ends in an
/// error commits nothing either way.
#[test]
fn a_chunked_upsert_appends_merges_and_commits_nothing_when_its_stream_fails() {
    use custlake::lake::{Lake, upsert_chunks};
    use custlake::schema::Catalog;
    use custlake::schema::row::{BatchBuilder, Cell};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::error::{DataFusionError, Result as DfResult};

    let dir = tempfile::tempdir().unwrap();
    let config = custlake::config::Config::load(
        None,
        &custlake::config::Overrides {
            lake: Some(dir.path().join("lake").to_string_lossy().to_string()),
        },
    )
    .unwrap();
    let lake = Lake::new(&config).unwrap();
    let catalog = Catalog::embedded().unwrap();
    let def = catalog.table("agent").unwrap();
    let rows = |agents: &[(&str, i64)]| -> RecordBatch {
        let mut b = BatchBuilder::new(def, false);
        for (id, capacity) in agents {
            let cells: Vec<Cell> = def
                .fields
                .iter()
                .map(|f| match f.name.as_str() {
                    "agent_id" => Cell::Str(id.to_string()),
                    "name" => Cell::Str(format!("agent {id}")),
                    "team" => Cell::Str("个险一部".into()),
                    "capacity" => Cell::I64(*capacity),
                    "active" => Cell::Bool(true),
                    "batch_id" => Cell::Str("test".into()),
                    _ => Cell::Ts(1_764_000_000_000_000),
                })
                .collect();
            b.push(&cells, None);
        }
        b.finish().unwrap()
    };
    let send = |batches: Vec<DfResult<RecordBatch>>| {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for b in batches {
                if tx.send(b).await.is_err() {
                    break;
                }
            }
        });
        rx
    };
    let failed = || Err(DataFusionError::Execution("the producer failed".into()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = custlake::lake::session::write_context();
        let parquet_files = || {
            walkdir(&dir.path().join("lake"))
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .count()
        };
        let capacities = async || -> Vec<(String, i64)> {
            let table = lake.open(def).await.unwrap().unwrap();
            let ctx = custlake::lake::session::write_context();
            table.update_datafusion_session(&ctx.state()).unwrap();
            ctx.register_table("agent", table.table_provider().await.unwrap())
                .unwrap();
            let batches = ctx
                .sql("SELECT agent_id, capacity FROM agent ORDER BY agent_id")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let mut out = Vec::new();
            for b in batches {
                let ids = datafusion::arrow::compute::cast(
                    b.column(0),
                    &datafusion::arrow::datatypes::DataType::Utf8,
                )
                .unwrap();
                let ids = ids
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
                    .unwrap();
                let caps = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .unwrap();
                for i in 0..b.num_rows() {
                    out.push((ids.value(i).to_string(), caps.value(i)));
                }
            }
            out
        };

        // A stream that fails into a table that does not exist: no table,
        // no file.
        let e = upsert_chunks(
            &lake,
            &ctx,
            def,
            send(vec![Ok(rows(&[("A1", 10), ("A2", 20)])), failed()]),
            Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("the producer failed"), "{e}");
        assert!(lake.open(def).await.unwrap().is_none());
        assert_eq!(parquet_files(), 0);

        // Into the empty table: one append of every batch.
        let out = upsert_chunks(
            &lake,
            &ctx,
            def,
            send(vec![
                Ok(rows(&[("A1", 10), ("A2", 20)])),
                Ok(rows(&[("A3", 30)])),
            ]),
            Vec::new(),
        )
        .await
        .unwrap();
        assert!(!out.merged);
        let first = vec![("A1".into(), 10), ("A2".into(), 20), ("A3".into(), 30)];
        assert_eq!(capacities().await, first);

        // A stream that fails into a table with rows changes nothing.
        let version = lake.open(def).await.unwrap().unwrap().version();
        let e = upsert_chunks(
            &lake,
            &ctx,
            def,
            send(vec![Ok(rows(&[("A2", 99)])), failed()]),
            Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("the producer failed"), "{e}");
        assert_eq!(lake.open(def).await.unwrap().unwrap().version(), version);
        assert_eq!(capacities().await, first);

        // Into the table with rows: gathered and merged, keys kept once.
        let out = upsert_chunks(
            &lake,
            &ctx,
            def,
            send(vec![Ok(rows(&[("A2", 99)])), Ok(rows(&[("A4", 40)]))]),
            Vec::new(),
        )
        .await
        .unwrap();
        assert!(out.merged);
        assert_eq!(
            capacities().await,
            vec![
                ("A1".into(), 10),
                ("A2".into(), 99),
                ("A3".into(), 30),
                ("A4".into(), 40)
            ]
        );
    });
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

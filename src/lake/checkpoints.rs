//! How often a table's Delta log is checkpointed, and the setting given
//! to tables created before it.

use deltalake::DeltaTable;

use super::{LakeError, delta_err};

/// A table's log is checkpointed every this many commits (Delta's default
/// is 100). Opening a table reads its latest checkpoint and replays each
/// commit after it: lists, runs, scores and audit rows arrive a commit at
/// a time, and list_line at 90 commits past its checkpoint took 30 ms to
/// open, three times per list (its write, the commit's new state and the
/// read-back) - a fifth of a renewal list at a million customers.
pub const CHECKPOINT_INTERVAL: u64 = 10;

/// `table` with `delta.checkpointInterval` set to [`CHECKPOINT_INTERVAL`]:
/// a table created before it was set takes it now, in one metadata commit
/// (under the writer's lease, as every caller of
/// [`Lake::open_or_create_in`] holds one).
pub(super) async fn frequent_checkpoints(
    name: &str,
    table: DeltaTable,
) -> Result<DeltaTable, LakeError> {
    let key = deltalake::TableProperty::CheckpointInterval.as_ref();
    let set = table
        .snapshot()
        .is_ok_and(|s| s.metadata().configuration().contains_key(key));
    if set {
        return Ok(table);
    }
    table
        .set_tbl_properties()
        .with_properties(std::collections::HashMap::from([(
            key.to_string(),
            CHECKPOINT_INTERVAL.to_string(),
        )]))
        .await
        .map_err(|source| delta_err(name, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::lake::{Lake, Tier, delta_columns, lease, session, write};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tables_are_checkpointed_every_ten_commits_older_ones_once_a_writer_opens_them() {
        let mut config = Config::embedded();
        config.lake = "memory://checkpoints".into();
        let lake = Lake::new(&config).unwrap();
        let catalog = crate::schema::Catalog::embedded().unwrap();
        let def = catalog.table("code_list").unwrap();
        // A table as an earlier release created it: Delta's default interval.
        lake.builder(&def.name, Tier::Hot)
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_table_name(&def.name)
            .with_columns(delta_columns(def).unwrap())
            .await
            .unwrap();
        let interval = |t: &DeltaTable| {
            t.snapshot()
                .unwrap()
                .metadata()
                .configuration()
                .get("delta.checkpointInterval")
                .cloned()
        };
        let old = lake.open(def).await.unwrap().unwrap();
        assert_eq!(interval(&old), None);
        // A writer's open sets it, in one commit; a second open commits nothing.
        let t = lake.open_or_create(def).await.unwrap();
        assert_eq!((t.version(), interval(&t)), (Some(1), Some("10".into())));
        let t = lake.open_or_create(def).await.unwrap();
        assert_eq!(t.version(), Some(1));
        let checkpoints = async || {
            use futures::TryStreamExt;
            let t = lake.open(def).await.unwrap().unwrap();
            let files: Vec<_> = t.object_store().list(None).try_collect().await.unwrap();
            let mut found: Vec<String> = files
                .iter()
                .map(|f| f.location.to_string())
                .filter(|p| p.contains(".checkpoint."))
                .collect();
            found.sort();
            found
        };
        assert!(checkpoints().await.is_empty());
        // Versions 2 to 9: the tenth commit leaves a checkpoint.
        let ctx = session::write_context();
        let empty = datafusion::arrow::record_batch::RecordBatch::new_empty(def.arrow_schema());
        for _ in 2..=9 {
            lease::with_lease(&lake, &def.name, "test", async |_| {
                write::overwrite(&lake, &ctx, def, empty.clone(), Vec::new()).await
            })
            .await
            .unwrap();
        }
        let found = checkpoints().await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].ends_with("00000000000000000009.checkpoint.parquet"));
        // A table created now has the interval from its first commit.
        let fresh = catalog.table("list_run").unwrap();
        let t = lake.open_or_create(fresh).await.unwrap();
        assert_eq!((t.version(), interval(&t)), (Some(0), Some("10".into())));
    }
}

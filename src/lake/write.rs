//! Keyed upserts into Delta tables, one atomic commit each.
//!
//! A load either appends (when none of its keys exist yet: the common case
//! for new data) or merges (Delta MERGE: matched keys are updated, new keys
//! inserted). Both commit once, so a process killed mid-way leaves the table
//! as it was; re-running the same load gives the same table.

use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;

use super::{Lake, LakeError, Tier};
use crate::schema::TableDef;

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// The table version after the commit.
    pub version: i64,
    /// True when the load merged into existing keys, false for a plain append.
    pub merged: bool,
}

fn df_err(table: &str, e: impl super::OnTable) -> LakeError {
    e.on_table(table)
}

/// A SQL identifier in double quotes (inner quotes doubled).
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Upsert `source` (the table's columns, plus an optional `_line` column
/// that orders duplicates: the highest line of a key wins) into `def`'s table.
/// `dedup` says whether `source` may hold a key more than once.
///
/// Writers of a table take turns: the upsert holds the table's lease (see
/// [`super::lease`]), so its "do these keys exist?" check and its commit
/// see no other writer in between (two appends never conflict in Delta, so
/// without it two loads of the same keys would both append), and no tier
/// move runs meanwhile. A tiered table's rows go to the tier that owns
/// their partition under the current watermarks: one upsert per tier that
/// receives rows (each atomic; re-running the load is idempotent, as every
/// upsert is).
pub async fn upsert(
    lake: &Lake,
    ctx: &SessionContext,
    def: &TableDef,
    source: DataFrame,
    dedup: bool,
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<UpsertOutcome, LakeError> {
    super::lease::with_lease(lake, &def.name, "load", async move |_| {
        upsert_leased(lake, ctx, def, source, dedup, metadata).await
    })
    .await
}

/// [`upsert`] by a caller that holds the table's lease.
pub async fn upsert_leased(
    lake: &Lake,
    ctx: &SessionContext,
    def: &TableDef,
    source: DataFrame,
    dedup: bool,
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<UpsertOutcome, LakeError> {
    routed(lake, ctx, def, source, dedup, metadata, Keys::MayExist).await
}

/// Append rows whose keys cannot be in the table yet, because they carry
/// an id made for them (a list run's lines): as [`upsert`] (the lease, the
/// tiers), without first joining them to every key the table holds, a
/// look whose cost grows with the table.
pub async fn append_new(
    lake: &Lake,
    ctx: &SessionContext,
    def: &TableDef,
    source: DataFrame,
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<UpsertOutcome, LakeError> {
    super::lease::with_lease(lake, &def.name, "load", async move |_| {
        routed(lake, ctx, def, source, false, metadata, Keys::New).await
    })
    .await
}

/// Whether a write's keys may already be in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// They may: look, and merge when any is.
    MayExist,
    /// They are new by construction: append.
    New,
}

/// A write routed to the tiers that own its rows' partitions.
async fn routed(
    lake: &Lake,
    ctx: &SessionContext,
    def: &TableDef,
    source: DataFrame,
    dedup: bool,
    metadata: Vec<(String, serde_json::Value)>,
    keys: Keys,
) -> Result<UpsertOutcome, LakeError> {
    let tiers = match (&def.partition, def.tiered) {
        (Some(p), true) => {
            let w = super::catalog::watermarks(lake, &def.name, None)
                .await?
                .value;
            (!w.all_hot()).then(|| (p.column.clone(), w))
        }
        _ => None,
    };
    let Some((column, w)) = tiers else {
        return upsert_in(lake, ctx, def, Tier::Hot, source, dedup, metadata, keys).await;
    };
    // Duplicates resolved before routing: two lines of one key may fall in
    // different tiers, and only the last may land.
    let has_line = source.schema().field_with_unqualified_name("_line").is_ok();
    let source = if dedup && has_line {
        latest_per_key(ctx, def, source).await?
    } else {
        source
    };
    let mut last = None;
    for tier in Tier::ALL {
        let Some((lo, hi)) = w.range(tier) else {
            continue;
        };
        let part = source
            .clone()
            .filter(super::tiers::range_expr(&column, lo, hi))
            .map_err(|e| df_err(&def.name, e))?;
        let rows = part
            .clone()
            .count()
            .await
            .map_err(|e| df_err(&def.name, e))?;
        if rows == 0 {
            continue;
        }
        let out = upsert_in(lake, ctx, def, tier, part, false, metadata.clone(), keys).await?;
        if tier == Tier::Hot || last.is_none() {
            last = Some(out);
        }
    }
    if keys == Keys::MayExist {
        remove_old_versions(lake, ctx, def, &column, &w, &source).await?;
    }
    Ok(last.unwrap_or(UpsertOutcome {
        version: 0,
        merged: false,
    }))
}

/// `a OR b OR ...` as a balanced tree (a long chain would be as deep as
/// it is long).
fn any_of(mut exprs: Vec<datafusion::prelude::Expr>) -> datafusion::prelude::Expr {
    match exprs.len() {
        0 => lit(false),
        1 => exprs.remove(0),
        n => {
            let right = exprs.split_off(n / 2);
            any_of(exprs).or(any_of(right))
        }
    }
}

/// The highest `_line` of each key of `source`.
async fn latest_per_key(
    ctx: &SessionContext,
    def: &TableDef,
    source: DataFrame,
) -> Result<DataFrame, LakeError> {
    let name = &def.name;
    let view = format!("__latest_{}_{}", name, std::process::id());
    ctx.register_table(&view, source.into_view())
        .map_err(|e| df_err(name, e))?;
    let keys: Vec<String> = def.key.iter().map(|k| quote_ident(k)).collect();
    let columns: Vec<String> = def.fields.iter().map(|f| quote_ident(&f.name)).collect();
    let sql = format!(
        "SELECT {} FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY \"_line\" DESC) \
         AS __rn FROM {view}) WHERE __rn = 1",
        columns.join(", "),
        keys.join(", ")
    );
    let df = ctx.sql(&sql).await.map_err(|e| df_err(name, e))?;
    // Materialised, so that the view can go.
    let batches = df.collect().await.map_err(|e| df_err(name, e))?;
    let _ = ctx.deregister_table(&view);
    let schema = batches.first().map(|b| b.schema());
    match schema {
        Some(schema) => {
            let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])
                .map_err(|e| df_err(name, e))?;
            ctx.read_table(Arc::new(table)).map_err(|e| df_err(name, e))
        }
        None => ctx
            .sql(&format!("{sql} LIMIT 0"))
            .await
            .map_err(|e| df_err(name, e)),
    }
}

/// A row whose partition moved to another tier with this load leaves its
/// old version in the tier of its old partition: delete it there. (After
/// the new version is written: a crash in between shows the key twice
/// until the load runs again, and never loses it.) Returns the rows
/// deleted.
async fn remove_old_versions(
    lake: &Lake,
    ctx: &SessionContext,
    def: &TableDef,
    column: &str,
    w: &super::catalog::Watermarks,
    source: &DataFrame,
) -> Result<u64, LakeError> {
    let name = &def.name;
    let mut removed = 0;
    for tier in Tier::ALL {
        let Some(table) = lake.open_in(def, tier).await? else {
            continue;
        };
        if table
            .snapshot()
            .map(|s| s.log_data().num_files())
            .unwrap_or(0)
            == 0
        {
            continue;
        }
        // The load's keys that now live in another tier.
        let elsewhere = match w.range(tier) {
            Some((lo, hi)) => datafusion::prelude::not(super::tiers::range_expr(column, lo, hi)),
            None => lit(true),
        };
        let keys: Vec<datafusion::prelude::Expr> =
            def.key.iter().map(datafusion::prelude::ident).collect();
        let moved = source
            .clone()
            .filter(elsewhere)
            .and_then(|d| d.select(keys.clone()))
            .map_err(|e| df_err(name, e))?;
        let provider = table.table_provider().await.map_err(|e| df_err(name, e))?;
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| df_err(name, e))?;
        let here = ctx
            .read_table(provider)
            .and_then(|d| d.select(keys.clone()))
            .map_err(|e| df_err(name, e))?;
        let k: Vec<&str> = def.key.iter().map(String::as_str).collect();
        let found = moved
            .join(here, datafusion::prelude::JoinType::LeftSemi, &k, &k, None)
            .and_then(|d| d.distinct())
            .map_err(|e| df_err(name, e))?
            .collect()
            .await
            .map_err(|e| df_err(name, e))?;
        let mut rows: Vec<Vec<datafusion::common::ScalarValue>> = Vec::new();
        for b in &found {
            for row in 0..b.num_rows() {
                let values = (0..def.key.len())
                    .map(|i| datafusion::common::ScalarValue::try_from_array(b.column(i), row))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| df_err(name, e))?;
                rows.push(values);
            }
        }
        if rows.is_empty() {
            continue;
        }
        let predicate = if let [key] = def.key.as_slice() {
            let values = rows.into_iter().map(|mut r| lit(r.remove(0))).collect();
            datafusion::prelude::ident(key).in_list(values, false)
        } else {
            any_of(
                rows.into_iter()
                    .map(|r| {
                        def.key
                            .iter()
                            .zip(r)
                            .map(|(k, v)| datafusion::prelude::ident(k).eq(lit(v)))
                            .reduce(|a, b| a.and(b))
                            .unwrap_or(lit(true))
                    })
                    .collect(),
            )
        };
        removed += delete_rows(lake, def, tier, table, predicate).await?;
    }
    Ok(removed)
}

/// Delete the rows `predicate` matches from a tier's table, in one commit.
/// Returns the rows deleted.
pub(super) async fn delete_rows(
    lake: &Lake,
    def: &TableDef,
    tier: Tier,
    table: DeltaTable,
    predicate: datafusion::prelude::Expr,
) -> Result<u64, LakeError> {
    let ctx = crate::lake::session::write_context();
    super::lease::check_held()?;
    let (_, metrics) = table
        .delete()
        .with_predicate(predicate)
        .with_session_state(Arc::new(ctx.state()))
        .with_writer_properties(lake.writer_properties_in(def, tier))
        .await
        .map_err(|e| df_err(&def.name, e))?;
    Ok(metrics.num_deleted_rows.unwrap_or(0) as u64)
}

/// [`upsert`] (or [`append_new`]) into one tier's part of a table.
#[allow(clippy::too_many_arguments)]
async fn upsert_in(
    lake: &Lake,
    ctx: &SessionContext,
    def: &TableDef,
    tier: Tier,
    source: DataFrame,
    dedup: bool,
    metadata: Vec<(String, serde_json::Value)>,
    keys: Keys,
) -> Result<UpsertOutcome, LakeError> {
    let table = lake.open_or_create_in(def, tier).await?;
    let name = &def.name;
    let columns: Vec<String> = def.fields.iter().map(|f| quote_ident(&f.name)).collect();
    let has_line = source.schema().field_with_unqualified_name("_line").is_ok();

    // Unique view names: several upserts may share a context.
    let tag = format!("{}_{}", name, std::process::id());
    let src_view = format!("__src_{tag}");
    ctx.register_table(&src_view, source.into_view())
        .map_err(|e| df_err(name, e))?;
    let cleanup = |ctx: &SessionContext, views: &[&str]| {
        for v in views {
            let _ = ctx.deregister_table(*v);
        }
    };

    let select = columns.join(", ");
    let src_sql = if dedup && has_line {
        let keys: Vec<String> = def.key.iter().map(|k| quote_ident(k)).collect();
        format!(
            "SELECT {select} FROM (SELECT *, row_number() OVER (PARTITION BY {} ORDER BY \"_line\" DESC) AS __rn FROM {src_view}) WHERE __rn = 1",
            keys.join(", ")
        )
    } else {
        format!("SELECT {select} FROM {src_view}")
    };
    let src = ctx.sql(&src_sql).await.map_err(|e| df_err(name, e))?;

    // Does any key exist already?
    let files = table
        .snapshot()
        .map(|s| s.log_data().num_files())
        .unwrap_or(0);
    let overlap = if files == 0 || keys == Keys::New {
        false
    } else {
        let tgt_view = format!("__tgt_{tag}");
        let provider = table.table_provider().await.map_err(|e| df_err(name, e))?;
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| df_err(name, e))?;
        ctx.register_table(&tgt_view, provider)
            .map_err(|e| df_err(name, e))?;
        let on: Vec<String> = def
            .key
            .iter()
            .map(|k| format!("s.{q} = t.{q}", q = quote_ident(k)))
            .collect();
        let probe = format!(
            "SELECT 1 FROM ({src_sql}) s JOIN {tgt_view} t ON {} LIMIT 1",
            on.join(" AND ")
        );
        let found = ctx
            .sql(&probe)
            .await
            .map_err(|e| df_err(name, e))?
            .count()
            .await
            .map_err(|e| df_err(name, e))?;
        cleanup(ctx, &[&tgt_view]);
        found > 0
    };

    let commit = CommitProperties::default().with_metadata(metadata);
    let result = if let Err(e) = super::lease::check_held() {
        Err(e)
    } else if overlap {
        merge(table, def, src, ctx, lake, tier, commit).await
    } else {
        let plan = src.logical_plan().clone();
        table
            .write(Vec::new())
            .with_input_plan(plan)
            .with_save_mode(SaveMode::Append)
            .with_session_state(Arc::new(ctx.state()))
            .with_writer_properties(lake.writer_properties_in(def, tier))
            .with_commit_properties(commit)
            .await
            .map_err(|e| df_err(name, e))
    };
    cleanup(ctx, &[&src_view]);
    let table = result?;
    Ok(UpsertOutcome {
        version: table.version().map_or(0, |v| v as i64),
        merged: overlap,
    })
}

async fn merge(
    table: DeltaTable,
    def: &TableDef,
    src: DataFrame,
    ctx: &SessionContext,
    lake: &Lake,
    tier: Tier,
    commit: CommitProperties,
) -> Result<DeltaTable, LakeError> {
    let name = &def.name;
    let mut predicate: Option<datafusion::prelude::Expr> = None;
    for k in &def.key {
        let eq = col(format!("t.{}", quote_ident(k))).eq(col(format!("s.{}", quote_ident(k))));
        predicate = Some(match predicate {
            None => eq,
            Some(p) => p.and(eq),
        });
    }
    let predicate =
        predicate.ok_or_else(|| LakeError::Fault(format!("table {name} declares no key")))?;
    let fields: Vec<String> = def.fields.iter().map(|f| f.name.clone()).collect();
    let update_fields = fields.clone();
    let (table, _metrics) = table
        .merge(src, predicate)
        .with_source_alias("s")
        .with_target_alias("t")
        .with_session_state(Arc::new(ctx.state()))
        .with_writer_properties(lake.writer_properties_in(def, tier))
        .with_commit_properties(commit)
        .when_matched_update(|mut u| {
            for f in &update_fields {
                u = u.update(f.as_str(), col(format!("s.{}", quote_ident(f))));
            }
            u
        })
        .map_err(|e| df_err(name, e))?
        .when_not_matched_insert(|mut i| {
            for f in &fields {
                i = i.set(f.as_str(), col(format!("s.{}", quote_ident(f))));
            }
            i
        })
        .map_err(|e| df_err(name, e))?
        .await
        .map_err(|e| df_err(name, e))?;
    Ok(table)
}

/// A one-shot partition fed by a channel: rows flow from the ingest thread
/// straight into the Delta writer.
struct ChannelPartition {
    schema: datafusion::arrow::datatypes::SchemaRef,
    rx: std::sync::Mutex<Option<BatchReceiver>>,
}

/// Batches for [`append_stream`]; an `Err` aborts the write.
pub type BatchReceiver = tokio::sync::mpsc::Receiver<
    datafusion::error::Result<datafusion::arrow::record_batch::RecordBatch>,
>;

impl std::fmt::Debug for ChannelPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelPartition")
    }
}

impl datafusion::physical_plan::streaming::PartitionStream for ChannelPartition {
    fn schema(&self) -> &datafusion::arrow::datatypes::SchemaRef {
        &self.schema
    }

    fn execute(
        &self,
        _ctx: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::execution::SendableRecordBatchStream {
        let rx = self.rx.lock().ok().and_then(|mut g| g.take());
        let stream = futures::stream::unfold(rx, |rx| async move {
            match rx {
                None => Some((
                    Err(datafusion::error::DataFusionError::Internal(
                        "a streamed write's rows can be read only once".into(),
                    )),
                    None,
                )),
                Some(mut rx) => rx.recv().await.map(|item| (item, Some(rx))),
            }
        });
        Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                self.schema.clone(),
                stream,
            ),
        )
    }
}

/// Batches arriving on `rx` (of `schema`) as a source a write reads once,
/// as they come: what [`append_stream`] appends, or a [`replace_where`]
/// whose rows are computed while they are written. An `Err` on the channel
/// aborts the write; the write ends when every sender is dropped.
pub fn channel_source(
    ctx: &SessionContext,
    schema: datafusion::arrow::datatypes::SchemaRef,
    rx: BatchReceiver,
) -> datafusion::error::Result<DataFrame> {
    let partition = ChannelPartition {
        schema: schema.clone(),
        rx: std::sync::Mutex::new(Some(rx)),
    };
    let provider =
        datafusion::catalog::streaming::StreamingTable::try_new(schema, vec![Arc::new(partition)])?;
    ctx.read_table(Arc::new(provider))
}

/// `rows` (each batch passed through `map`) as a source a write reads once,
/// in their order: fed from a task of their own into a context whose write
/// keeps one stream. The caller aborts the returned task once the write is
/// over: a write that fails before it reads its rows must not leave the
/// feed waiting on a full channel.
pub fn ordered_feed(
    schema: datafusion::arrow::datatypes::SchemaRef,
    mut rows: datafusion::execution::SendableRecordBatchStream,
    mut map: impl FnMut(
        datafusion::arrow::record_batch::RecordBatch,
    ) -> datafusion::error::Result<datafusion::arrow::record_batch::RecordBatch>
    + Send
    + 'static,
) -> datafusion::error::Result<(SessionContext, DataFrame, tokio::task::JoinHandle<()>)> {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let feed = tokio::spawn(async move {
        while let Some(batch) = rows.next().await {
            let batch = batch.and_then(&mut map);
            let failed = batch.is_err();
            if tx.send(batch).await.is_err() || failed {
                break;
            }
        }
    });
    let config = super::session::session_config(0)
        .set_bool("datafusion.optimizer.enable_round_robin_repartition", false);
    let ctx = super::session::delta_context(
        config,
        Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default()),
    );
    let source = channel_source(&ctx, schema, rx)?;
    Ok((ctx, source, feed))
}

/// Append a stream of batches (exactly the table's columns) to a table that
/// holds no rows yet, creating the table in the same commit if it does not
/// exist. Nothing is committed unless the stream ends without an error.
/// For a tiered table only while every row is hot (see [`hot_only`]), and
/// with the table's lease held from that check to this commit.
pub async fn append_stream(
    lake: &Lake,
    ctx: &SessionContext,
    def: &TableDef,
    rx: BatchReceiver,
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<UpsertOutcome, LakeError> {
    let name = &def.name;
    let df = channel_source(ctx, def.arrow_schema(), rx).map_err(|e| df_err(name, e))?;
    let table = match lake.open(def).await? {
        Some(t) => t,
        None => lake
            .builder(name, Tier::Hot)?
            .build()
            .map_err(|e| df_err(name, e))?,
    };
    super::lease::check_held()?;
    let write = committed_write(
        table,
        ctx,
        &df,
        SaveMode::Append,
        lake.writer_properties(def),
        metadata,
    )
    .with_table_name(name.as_str())
    .with_description(def.description.as_str());
    let table = partitioned(write, def).await.map_err(|e| df_err(name, e))?;
    Ok(outcome(&table, false))
}

/// Whether a load may stream into `def`'s table as one append
/// ([`append_stream`]): the table holds no rows yet and every row would be
/// hot (once a tiered table's rows have moved, a load is routed by tier).
/// `Some(existed)` says whether the table exists; `None`: it may not.
pub async fn streamable(lake: &Lake, def: &TableDef) -> Result<Option<bool>, LakeError> {
    let existing = lake.open(def).await?;
    let existed = existing.is_some();
    let empty = existing.as_ref().is_none_or(|t| {
        t.snapshot()
            .map(|s| s.log_data().num_files() == 0)
            .unwrap_or(false)
    });
    drop(existing);
    Ok((empty && hot_only(lake, def).await?).then_some(existed))
}

/// Upsert rows that arrive as a stream of batches (exactly the table's
/// columns, each key at most once), in one commit. Into a table with no
/// rows yet (and all hot) they stream into one append as they arrive, so
/// they are never all held at once; otherwise they are gathered, then
/// upserted. An `Err` in the stream aborts the write: nothing is committed,
/// and the files of an aborted append are removed. Holds the table's lease.
pub async fn upsert_chunks(
    lake: &Lake,
    ctx: &SessionContext,
    def: &TableDef,
    mut rx: BatchReceiver,
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<UpsertOutcome, LakeError> {
    super::lease::with_lease(lake, &def.name, "load", async move |_| {
        if let Some(existed) = streamable(lake, def).await? {
            // A second early, for stores that keep whole seconds.
            let started = chrono::Utc::now() - chrono::Duration::seconds(1);
            let out = append_stream(lake, ctx, def, rx, metadata).await;
            if out.is_err() {
                if existed {
                    lake.remove_unreferenced(def, started).await?;
                } else {
                    lake.remove_uncommitted(def).await?;
                }
            }
            return out;
        }
        let mut batches = Vec::new();
        while let Some(b) = rx.recv().await {
            batches.push(b.map_err(|e| df_err(&def.name, e))?);
        }
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(UpsertOutcome {
                version: 0,
                merged: false,
            });
        }
        let source = ctx
            .read_batches(batches)
            .map_err(|e| df_err(&def.name, e))?;
        routed(lake, ctx, def, source, false, metadata, Keys::MayExist).await
    })
    .await
}

/// A write of `source` into `table` in one commit: the context's session,
/// the tier's writer properties and the commit's metadata.
fn committed_write(
    table: DeltaTable,
    ctx: &SessionContext,
    source: &DataFrame,
    mode: SaveMode,
    properties: datafusion::parquet::file::properties::WriterProperties,
    metadata: Vec<(String, serde_json::Value)>,
) -> deltalake::operations::write::WriteBuilder {
    table
        .write(Vec::new())
        .with_input_plan(source.logical_plan().clone())
        .with_save_mode(mode)
        .with_session_state(Arc::new(ctx.state()))
        .with_writer_properties(properties)
        .with_commit_properties(CommitProperties::default().with_metadata(metadata))
}

/// The write partitioned as the table declares.
fn partitioned(
    write: deltalake::operations::write::WriteBuilder,
    def: &TableDef,
) -> deltalake::operations::write::WriteBuilder {
    match &def.partition {
        Some(p) => write.with_partition_columns([p.column.clone()]),
        None => write,
    }
}

/// What a committed write made.
fn outcome(table: &DeltaTable, merged: bool) -> UpsertOutcome {
    UpsertOutcome {
        version: table.version().map_or(0, |v| v as i64),
        merged,
    }
}

/// Replace a table's whole content with `batch` in one commit (small
/// tables rewritten as a whole, such as the suspect groups).
pub async fn overwrite(
    lake: &Lake,
    ctx: &SessionContext,
    def: &TableDef,
    batch: datafusion::arrow::record_batch::RecordBatch,
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<UpsertOutcome, LakeError> {
    let name = &def.name;
    super::lease::check_held()?;
    let table = lake.open_or_create(def).await?;
    let df = ctx.read_batch(batch).map_err(|e| df_err(name, e))?;
    let table = committed_write(
        table,
        ctx,
        &df,
        SaveMode::Overwrite,
        lake.writer_properties(def),
        metadata,
    )
    .await
    .map_err(|e| df_err(name, e))?;
    Ok(outcome(&table, false))
}

/// Whether every row of the table belongs in the hot tier (it is not
/// tiered, or nothing has moved yet), so a load can stream into it.
pub async fn hot_only(lake: &Lake, def: &TableDef) -> Result<bool, LakeError> {
    if !def.tiered || def.partition.is_none() {
        return Ok(true);
    }
    Ok(super::catalog::watermarks(lake, &def.name, None)
        .await?
        .value
        .all_hot())
}

/// The rows a [`replace_where`] replaces: those whose `column` holds
/// `value`, all in the month partition `partition`.
pub struct Replace<'a> {
    pub column: &'a str,
    pub value: datafusion::common::ScalarValue,
    pub partition: &'a str,
}

/// Replace every row whose `column` equals `value` with `source` (rows
/// that all hold that value), in one commit: a rerun of the same day
/// replaces that day and leaves the others. `partition` is the month
/// partition the rows belong to; for a tiered table the rows go to the tier
/// that owns it. Holds the table's lease.
pub async fn replace_where(
    lake: &Lake,
    ctx: &SessionContext,
    def: &TableDef,
    source: DataFrame,
    rows: Replace<'_>,
    metadata: Vec<(String, serde_json::Value)>,
) -> Result<UpsertOutcome, LakeError> {
    let Replace {
        column,
        value,
        partition,
    } = rows;
    let name = &def.name;
    super::lease::with_lease(lake, name, "replace", async move |_| {
        let tier = if def.tiered && def.partition.is_some() {
            super::catalog::watermarks(lake, name, None)
                .await?
                .value
                .owner(partition)
        } else {
            Tier::Hot
        };
        let table = lake.open_or_create_in(def, tier).await?;
        let mut predicate = col(column).eq(lit(value));
        if let Some(p) = &def.partition {
            predicate = col(p.column.as_str()).eq(lit(partition)).and(predicate);
        }
        super::lease::check_held()?;
        let write = committed_write(
            table,
            ctx,
            &source,
            SaveMode::Overwrite,
            lake.writer_properties_in(def, tier),
            metadata,
        )
        .with_replace_where(predicate);
        let table = partitioned(write, def).await.map_err(|e| df_err(name, e))?;
        Ok(outcome(&table, true))
    })
    .await
}

/// Rows given as JSON objects (field name → value; timestamps and dates
/// as RFC 3339 text) as a batch of `def`'s columns; fields a row leaves
/// out are null.
pub fn json_rows(
    def: &TableDef,
    rows: &[serde_json::Value],
) -> Result<datafusion::arrow::record_batch::RecordBatch, LakeError> {
    let schema = def.arrow_schema();
    let bad = |e: datafusion::arrow::error::ArrowError| {
        LakeError::Invalid(format!("rows for {}: {e}", def.name))
    };
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(schema.clone())
        .build_decoder()
        .map_err(bad)?;
    decoder.serialize(rows).map_err(bad)?;
    Ok(decoder
        .flush()
        .map_err(bad)?
        .unwrap_or_else(|| datafusion::arrow::record_batch::RecordBatch::new_empty(schema)))
}

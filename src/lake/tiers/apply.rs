//! Carrying out a plan: purge, copy, advance the watermarks, delete,
//! vacuum, each write atomic and each step safe to repeat (see the
//! module's doc), under the table's lease.

use std::num::NonZeroU64;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::AsArray;
use datafusion::prelude::Expr;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use serde::Serialize;

use super::super::{Lake, LakeError, Tier, failpoint};
use super::catalog;
use super::{Move, TablePlan, extent, month, month_index, plan_table, range_expr, werr};
use crate::progress::Task;
use crate::schema::{Catalog, TableDef};

/// What applying a plan did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Applied {
    pub tables: usize,
    pub ranges_moved: usize,
    pub rows_moved: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub rows_purged: u64,
    pub leftovers_removed: usize,
    pub files_vacuumed: u64,
    /// Partitions rewritten from many small files, and the files they had.
    pub partitions_compacted: usize,
    pub files_compacted: u64,
    /// Compactions that failed (logged; their partitions stay as they were).
    pub compactions_failed: usize,
    pub seconds: f64,
}

/// The steps `apply` reports for these plans.
pub fn steps(plans: &[TablePlan]) -> u64 {
    plans
        .iter()
        .map(|p| (p.moves.len() * 2 + p.leftovers.len() + p.compactions.len() + 2) as u64)
        .sum::<u64>()
        .max(1)
}

/// One step of `apply` done: the task advances and says what is next.
fn step(task: &dyn Task, message: &str) {
    task.inc(1);
    task.set_message(message);
    tracing::info!("{message}");
}

/// Carry out plans made by [`plan`]: every table in turn. `held_records`:
/// the `(source_system, source_id)` of customers under hold.
pub async fn apply(
    lake: &Lake,
    catalog: &Catalog,
    plans: &[TablePlan],
    held_records: &[(String, String)],
    progress: &dyn Task,
) -> Result<Applied, LakeError> {
    let started = std::time::Instant::now();
    let holds = catalog::holds(lake).await?.value.holds;
    let mut out = Applied::default();
    for p in plans {
        let def = catalog
            .tables
            .iter()
            .find(|d| d.name == p.table)
            .ok_or_else(|| LakeError::Fault(format!("no table {}", p.table)))?;
        // Under the table's lease, so that no load writes while it moves;
        // planned again under it, as a load may have changed the table
        // since the plan was shown.
        crate::lake::lease::with_lease(lake, &def.name, "tier apply", async |lease| {
            let fresh = plan_table(lake, def, p.as_of).await?;
            let held = (holds.as_slice(), held_records);
            apply_table(lake, def, &fresh, held, lease, progress, &mut out).await
        })
        .await?;
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Carry out a table's plan (see the module's doc for the steps), sparing
/// what the holds and the held customers' source records cover. Each write
/// is a failpoint (`tier.after_*`), where the tests stop the process to
/// show that a rerun completes the move.
async fn apply_table(
    lake: &Lake,
    def: &TableDef,
    plan: &TablePlan,
    held: (&[catalog::Hold], &[(String, String)]),
    lease: &crate::lake::lease::Lease,
    progress: &dyn Task,
    out: &mut Applied,
) -> Result<(), LakeError> {
    let run = TableRun {
        lake,
        def,
        plan,
        lease,
        progress,
    };
    run.remove_leftovers(out).await?;
    let purged = run.purge(held, out).await?;
    run.copy(out).await?;
    run.advance().await?;
    run.delete_moved().await?;
    run.vacuum_and_checkpoint(&purged, out).await?;
    // Last, after the vacuum: the files a compaction replaces stay for
    // readers until a later run's vacuum, and a compaction that fails
    // (logged, counted) stops nothing else.
    run.compact(out).await?;
    out.tables += 1;
    Ok(())
}

/// One table's plan being carried out.
struct TableRun<'a> {
    lake: &'a Lake,
    def: &'a TableDef,
    plan: &'a TablePlan,
    lease: &'a crate::lake::lease::Lease,
    progress: &'a dyn Task,
}

impl TableRun<'_> {
    fn moving(&self) -> impl Iterator<Item = &Move> {
        self.plan
            .moves
            .iter()
            .filter(|m| m.to.is_some() && m.extent.files > 0)
    }

    /// Copies an interrupted run left outside their tier's range.
    async fn remove_leftovers(&self, out: &mut Applied) -> Result<(), LakeError> {
        let name = &self.def.name;
        for m in &self.plan.leftovers {
            step(
                self.progress,
                &format!(
                    "{name}: removing {} leftover rows from {}",
                    m.extent.rows,
                    m.from.name()
                ),
            );
            self.lease.check()?;
            delete_range(self.lake, self.def, &self.plan.column, m, None).await?;
            failpoint("tier.after_leftovers");
            out.leftovers_removed += 1;
        }
        Ok(())
    }

    /// Purge what is past retention, sparing held partitions and
    /// customers. Returns the tiers purged.
    async fn purge(
        &self,
        (holds, held_records): (&[catalog::Hold], &[(String, String)]),
        out: &mut Applied,
    ) -> Result<Vec<Tier>, LakeError> {
        let (name, column) = (&self.def.name, &self.plan.column);
        let mut purged = Vec::new();
        for m in self.plan.moves.iter().filter(|m| m.to.is_none()) {
            let spare = held_predicate(self.def, column, holds, held_records);
            step(
                self.progress,
                &format!(
                    "{name}: purging partitions before {} from {}",
                    m.hi.as_deref().unwrap_or("end"),
                    m.from.name()
                ),
            );
            self.lease.check()?;
            out.rows_purged += delete_range(self.lake, self.def, column, m, spare.as_ref()).await?;
            failpoint("tier.after_purge");
            if m.extent.files > 0 {
                purged.push(m.from);
            }
        }
        Ok(purged)
    }

    /// Step 1: copy each moving range into its destination.
    async fn copy(&self, out: &mut Applied) -> Result<(), LakeError> {
        let name = &self.def.name;
        for m in self.moving() {
            let Some(to) = m.to else { continue };
            step(
                self.progress,
                &format!(
                    "{name}: copying {} rows {}..{} {} → {}",
                    m.extent.rows,
                    m.lo.as_deref().unwrap_or("start"),
                    m.hi.as_deref().unwrap_or("end"),
                    m.from.name(),
                    to.name()
                ),
            );
            self.lease.check()?;
            let written = copy_range(
                self.lake,
                self.def,
                m.from,
                to,
                &self.plan.column,
                m.lo.as_deref(),
                m.hi.as_deref(),
            )
            .await?;
            failpoint("tier.after_copy");
            out.ranges_moved += 1;
            out.rows_moved += m.extent.rows;
            out.bytes_read += m.extent.bytes;
            out.bytes_written += written;
        }
        Ok(())
    }

    /// Step 2: the watermarks advance, conditionally on the version read.
    async fn advance(&self) -> Result<(), LakeError> {
        let (plan, name) = (self.plan, &self.def.name);
        if plan.target.warm_before == plan.current.warm_before
            && plan.target.cold_before == plan.current.cold_before
        {
            return Ok(());
        }
        step(self.progress, &format!("{name}: advancing the watermarks"));
        let mut w = plan.target.clone();
        w.at = catalog::now();
        self.lease.check()?;
        catalog::set_watermarks(self.lake, name, plan.read_version, &w).await?;
        failpoint("tier.after_watermarks");
        Ok(())
    }

    /// Step 3: delete what moved from where it was.
    async fn delete_moved(&self) -> Result<(), LakeError> {
        let name = &self.def.name;
        for m in self.moving() {
            step(
                self.progress,
                &format!("{name}: removing the moved rows from {}", m.from.name()),
            );
            self.lease.check()?;
            delete_range(self.lake, self.def, &self.plan.column, m, None).await?;
            failpoint("tier.after_delete");
        }
        Ok(())
    }

    /// Rewrite each partition of many small files in place (see
    /// [`super::Compaction`]): one commit per partition that replaces its
    /// files, so readers see the old files or the new, never both.
    async fn compact(&self, out: &mut Applied) -> Result<(), LakeError> {
        let name = &self.def.name;
        for c in &self.plan.compactions {
            step(
                self.progress,
                &format!(
                    "{name}: compacting {} files ({}, {} rows) of {} in {}",
                    c.files,
                    mib_text(c.bytes),
                    c.rows,
                    c.partition,
                    c.tier.name()
                ),
            );
            self.lease.check()?;
            let started = chrono::Utc::now();
            let done =
                compact_partition(self.lake, self.def, c.tier, &self.plan.column, &c.partition)
                    .await;
            match done {
                Ok(()) => {
                    failpoint("tier.after_compact");
                    out.partitions_compacted += 1;
                    out.files_compacted += c.files;
                }
                Err(e) => {
                    // Nothing was committed; what the write left is removed
                    // (the lease keeps other writers out of this table).
                    tracing::warn!(
                        table = %name, tier = c.tier.name(), partition = %c.partition, error = %e,
                        "a compaction failed; the partition stays as it was"
                    );
                    out.compactions_failed += 1;
                    self.lake
                        .remove_unreferenced_in(self.def, c.tier, started)
                        .await?;
                }
            }
        }
        // Readers replay one checkpoint, not the compactions' commits.
        for tier in Tier::ALL {
            if !self.plan.compactions.iter().any(|c| c.tier == tier) {
                continue;
            }
            if let Some(t) = self.lake.open_in(self.def, tier).await? {
                deltalake::checkpoints::create_checkpoint(&t, None)
                    .await
                    .map_err(|e| werr(name, e))?;
            }
        }
        Ok(())
    }

    /// Vacuum what was removed longer ago than the grace period (a tier
    /// purged just now at once: purged data is removed physically), and
    /// write a checkpoint, so that readers replay one file, not every
    /// commit.
    async fn vacuum_and_checkpoint(
        &self,
        purged: &[Tier],
        out: &mut Applied,
    ) -> Result<(), LakeError> {
        let name = &self.def.name;
        for tier in Tier::ALL {
            let Some(t) = self.lake.open_in(self.def, tier).await? else {
                continue;
            };
            let grace = if purged.contains(&tier) {
                0
            } else {
                self.lake.settings().retention.vacuum_grace_minutes
            };
            let (t, vacuumed) = vacuum(name, t, grace).await?;
            out.files_vacuumed += vacuumed;
            failpoint("tier.after_vacuum");
            let changed = self
                .plan
                .moves
                .iter()
                .chain(&self.plan.leftovers)
                .any(|m| m.extent.files > 0 && (m.from == tier || m.to == Some(tier)));
            if changed {
                deltalake::checkpoints::create_checkpoint(&t, None)
                    .await
                    .map_err(|e| werr(name, e))?;
            }
        }
        Ok(())
    }
}

/// A predicate for rows a hold protects in this table, if any.
fn held_predicate(
    def: &TableDef,
    column: &str,
    holds: &[catalog::Hold],
    held_records: &[(String, String)],
) -> Option<Expr> {
    use datafusion::prelude::{coalesce, ident, lit};
    let mut parts = Vec::new();
    for h in holds {
        if h.table.as_deref().is_some_and(|t| t != def.name) || h.customer.is_some() {
            continue;
        }
        let lo = h.from.as_deref();
        // `to` is inclusive: up to the month after it.
        let hi = h.to.as_deref().map(|t| {
            NaiveDate::parse_from_str(&format!("{t}-01"), "%Y-%m-%d")
                .map(|d| month(month_index(d) + 1))
                .unwrap_or_else(|_| format!("{t}\u{ffff}"))
        });
        parts.push(range_expr(column, lo, hi.as_deref()));
    }
    if !held_records.is_empty()
        && def.field("source_system").is_some()
        && def.field("source_customer_id").is_some()
    {
        // A null key is no customer's: never held. (Only here: Delta's
        // partition-only delete path mis-evaluates `coalesce` over
        // partition columns.)
        for (system, id) in held_records {
            let same = ident("source_system")
                .eq(lit(system.as_str()))
                .and(ident("source_customer_id").eq(lit(id.as_str())));
            parts.push(coalesce(vec![same, lit(false)]));
        }
    }
    datafusion::logical_expr::utils::disjunction(parts)
}

/// The source records of the customers under hold, from `customer_xref`.
pub async fn held_records(
    lake: &Lake,
    catalog: &Catalog,
    holds: &[catalog::Hold],
) -> Result<Vec<(String, String)>, LakeError> {
    use datafusion::prelude::{ident, lit};
    let ids: Vec<Expr> = holds
        .iter()
        .filter_map(|h| h.customer.as_deref())
        .map(lit)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let def = catalog
        .table("customer_xref")
        .map_err(|e| LakeError::Fault(e.to_string()))?;
    let Some(xref) = lake.open(def).await? else {
        return Err(LakeError::Invalid(
            "customers are under hold but customer_xref does not exist: run `custlake resolve` first"
                .into(),
        ));
    };
    let name = &def.name;
    let ctx = crate::lake::session::write_context();
    xref.update_datafusion_session(&ctx.state())
        .map_err(|e| werr(name, e))?;
    let provider = xref.table_provider().await.map_err(|e| werr(name, e))?;
    let batches = ctx
        .read_table(provider)
        .and_then(|df| {
            df.filter(ident("customer_id").in_list(ids, false))?
                .select_columns(&["source_system", "source_id"])
        })
        .map_err(|e| werr(name, e))?
        .collect()
        .await
        .map_err(|e| werr(name, e))?;
    let mut out = Vec::new();
    for b in batches {
        let text = |i: usize| {
            datafusion::arrow::compute::cast(
                b.column(i),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .map_err(|e| werr(name, datafusion::error::DataFusionError::from(e)))
        };
        let (s, i) = (text(0)?, text(1)?);
        let (s, i) = (s.as_string::<i32>(), i.as_string::<i32>());
        for r in 0..b.num_rows() {
            out.push((s.value(r).to_string(), i.value(r).to_string()));
        }
    }
    Ok(out)
}

/// Copy `[lo, hi)` of a tier into another, replacing that range there, with
/// the destination's compression and file size. Returns the bytes written.
async fn copy_range(
    lake: &Lake,
    def: &TableDef,
    from: Tier,
    to: Tier,
    column: &str,
    lo: Option<&str>,
    hi: Option<&str>,
) -> Result<u64, LakeError> {
    let name = &def.name;
    let Some(source) = lake.open_in(def, from).await? else {
        return Ok(0);
    };
    let dest = lake.open_or_create_in(def, to).await?;
    let ctx = crate::lake::session::write_context();
    source
        .update_datafusion_session(&ctx.state())
        .map_err(|e| werr(name, e))?;
    let provider = source.table_provider().await.map_err(|e| werr(name, e))?;
    ctx.register_table("__move_source", provider)
        .map_err(|e| werr(name, e))?;
    let columns: Vec<Expr> = def
        .fields
        .iter()
        .map(|f| datafusion::prelude::ident(&f.name))
        .collect();
    let predicate = range_expr(column, lo, hi);
    let df = ctx
        .table("__move_source")
        .await
        .and_then(|df| df.filter(predicate.clone())?.select(columns))
        .map_err(|e| werr(name, e))?;
    let before = dest_bytes(&dest);
    let table = replace_in_tier(
        lake,
        def,
        to,
        dest,
        df.logical_plan().clone(),
        predicate,
        &ctx,
    )
    .await
    .map_err(|e| werr(name, e))?;
    let after = dest_bytes(&table);
    Ok(after.saturating_sub(before.min(after)))
}

/// Memory a compaction's sort holds before it spills to disk.
const COMPACT_MEMORY_MB: u64 = 1024;

fn mib_text(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Rewrite one partition of a tier's table as files of the tier's target
/// size and writer settings, its rows sorted by the table's cluster order
/// (its key unless its schema says otherwise), in one commit that replaces
/// the partition's files.
///
/// The rows are sorted in a context of their own (its memory bounded,
/// spilling beyond it) and reach the writer through a channel, in order:
/// planned as one statement, the writer's plan keeps no order (DataFusion
/// drops a sort whose consumer does not ask for one) and spreads the rows
/// over its partitions.
async fn compact_partition(
    lake: &Lake,
    def: &TableDef,
    tier: Tier,
    column: &str,
    partition: &str,
) -> Result<(), LakeError> {
    use datafusion::prelude::{ident, lit};
    let name = &def.name;
    let Some(table) = lake.open_in(def, tier).await? else {
        return Ok(());
    };
    let runtime = crate::lake::session::runtime(COMPACT_MEMORY_MB, 0).map_err(|e| werr(name, e))?;
    // Two sorting partitions: the rows leave through one channel anyway,
    // and each partition's share of the pool stays large.
    let ctx = crate::lake::session::delta_context(crate::lake::session::session_config(2), runtime);
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| werr(name, e))?;
    let provider = table.table_provider().await.map_err(|e| werr(name, e))?;
    let predicate = ident(column).eq(lit(partition));
    let columns: Vec<Expr> = def.fields.iter().map(|f| ident(&f.name)).collect();
    let order: Vec<datafusion::logical_expr::SortExpr> = def
        .cluster_order()
        .iter()
        .map(|k| ident(k).sort(true, false))
        .collect();
    let sorted = ctx
        .read_table(provider)
        .and_then(|df| {
            let df = df.filter(predicate.clone())?.select(columns)?;
            if order.is_empty() {
                Ok(df)
            } else {
                df.sort(order)
            }
        })
        .map_err(|e| werr(name, e))?;
    let schema = std::sync::Arc::new(sorted.schema().as_arrow().clone());
    let rows = sorted.execute_stream().await.map_err(|e| werr(name, e))?;
    // One writer stream, in the order the rows come.
    let (write_ctx, source, feed) =
        crate::lake::ordered_feed(schema, rows, Ok).map_err(|e| werr(name, e))?;
    let plan = source.logical_plan().clone();
    drop(source);
    let written = replace_in_tier(lake, def, tier, table, plan, predicate, &write_ctx).await;
    feed.abort();
    let _ = feed.await;
    written.map_err(|e| werr(name, e))?;
    Ok(())
}

/// The write that replaces what `predicate` selects in a tier's table with
/// `plan`'s rows, in files of the tier's target size and writer settings
/// (a move's copy, a compaction).
fn replace_in_tier(
    lake: &Lake,
    def: &TableDef,
    tier: Tier,
    table: DeltaTable,
    plan: datafusion::logical_expr::LogicalPlan,
    predicate: Expr,
    ctx: &datafusion::prelude::SessionContext,
) -> deltalake::operations::write::WriteBuilder {
    let size = tier.settings(&lake.settings().tiers).target_file_mb.max(1) * 1024 * 1024;
    table
        .write(Vec::new())
        .with_input_plan(plan)
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(predicate)
        .with_session_state(Arc::new(ctx.state()))
        .with_writer_properties(lake.writer_properties_in(def, tier))
        .with_target_file_size(NonZeroU64::new(size))
}

fn dest_bytes(t: &DeltaTable) -> u64 {
    t.snapshot()
        .map(|s| s.log_data().iter().map(|f| f.size().max(0) as u64).sum())
        .unwrap_or(0)
}

/// Delete a move's range from its source tier (sparing rows `spare`
/// matches). Returns the rows deleted.
async fn delete_range(
    lake: &Lake,
    def: &TableDef,
    column: &str,
    m: &Move,
    spare: Option<&Expr>,
) -> Result<u64, LakeError> {
    let (tier, lo, hi) = (m.from, m.lo.as_deref(), m.hi.as_deref());
    let Some(table) = lake.open_in(def, tier).await? else {
        return Ok(0);
    };
    if extent(Some(&table), column, lo, hi).files == 0 {
        return Ok(0);
    }
    let mut predicate = range_expr(column, lo, hi);
    if let Some(s) = spare {
        predicate = predicate.and(datafusion::prelude::not(s.clone()));
    }
    crate::lake::write::delete_rows(lake, def, tier, table, predicate).await
}

/// Remove files a commit removed longer ago than `grace_minutes`.
/// Returns the table (as vacuum left it) and the files deleted.
async fn vacuum(
    name: &str,
    table: DeltaTable,
    grace_minutes: u32,
) -> Result<(DeltaTable, u64), LakeError> {
    let grace = chrono::Duration::minutes(i64::from(grace_minutes));
    let (table, metrics) = table
        .vacuum()
        .with_retention_period(grace)
        .with_enforce_retention_duration(false)
        .await
        .map_err(|e| werr(name, e))?;
    Ok((table, metrics.files_deleted.len() as u64))
}

/// Whether any table has something to move, purge or re-mark.
pub fn anything_due(plans: &[TablePlan]) -> bool {
    plans.iter().any(|p| {
        !p.moves.is_empty()
            || !p.leftovers.is_empty()
            || !p.compactions.is_empty()
            || p.target.warm_before != p.current.warm_before
            || p.target.cold_before != p.current.cold_before
    })
}

/// Plan as of `as_of` and apply what is due (`custlake tier apply`, the
/// nightly `tier` job), with progress; nothing due is an empty outcome.
pub async fn apply_due(
    lake: &Lake,
    catalog: &Catalog,
    as_of: chrono::NaiveDate,
    progress: &dyn crate::progress::Progress,
) -> Result<Applied, LakeError> {
    let plans = super::plan(lake, catalog, as_of).await?;
    if !anything_due(&plans) {
        return Ok(Applied::default());
    }
    let holds = catalog::holds(lake).await?.value.holds;
    let held = held_records(lake, catalog, &holds).await?;
    let task = progress.task(
        "tier apply",
        Some(steps(&plans)),
        crate::progress::Unit::Steps,
    );
    let out = apply(lake, catalog, &plans, &held, task.as_ref()).await;
    match &out {
        Ok(_) => task.finish(),
        Err(_) => task.fail("stopped"),
    }
    out
}

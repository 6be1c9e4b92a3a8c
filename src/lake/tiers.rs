//! Moving tiered tables' partitions between tiers, and purging them.
//!
//! The plan compares each table's watermarks with those the configured
//! ages give for a date, and lists the ranges that change tier or fall out
//! of retention. Applying it is design.md §3's three steps per table, each
//! atomic and each safe to repeat:
//!
//! 1. every moving range is written into its destination tier, replacing
//!    whatever that range held there (one Delta commit per range);
//! 2. the watermarks advance (one put-if-absent of the next catalog
//!    version, so a concurrent change is refused, not overwritten);
//! 3. every moved range is deleted from its source tier.
//!
//! Readers see each range in exactly one tier at every instant: before
//! step 2 in the source (the destination's copy lies outside the
//! destination's range), after it in the destination. A crash before step 2
//! is undone by running again (step 1 replaces); a crash after it leaves
//! copies outside their tier's range, which every run deletes first.
//! Purging deletes the rows of partitions past retention (except held
//! ones), and vacuums files removed longer ago than the grace period.

use std::num::NonZeroU64;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::AsArray;
use datafusion::prelude::Expr;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use serde::Serialize;

use super::catalog::{self, Watermarks};
use super::{Lake, LakeError, Tier};
use crate::progress::Task;
use crate::schema::{Catalog, TableDef};

fn werr(table: &str, e: impl super::OnTable) -> LakeError {
    e.on_table(table)
}

/// `YYYY-MM` of a month index (`year * 12 + month - 1`).
fn month(index: i64) -> String {
    format!(
        "{:04}-{:02}",
        index.div_euclid(12),
        index.rem_euclid(12) + 1
    )
}

fn month_index(d: NaiveDate) -> i64 {
    i64::from(d.year()) * 12 + i64::from(d.month0())
}

/// The watermarks and purge boundary the configuration gives on `as_of`:
/// a partition `moves_in_after_months` old or older leaves the tier above.
pub fn targets(lake: &Lake, table: &str, as_of: NaiveDate) -> (Watermarks, String) {
    let now = month_index(as_of);
    let t = &lake.settings().tiers;
    let years = lake
        .settings()
        .retention
        .tables
        .get(table)
        .copied()
        .unwrap_or(lake.settings().retention.years);
    let w = Watermarks {
        warm_before: Some(month(now - i64::from(t.warm.moves_in_after_months) + 1)),
        cold_before: Some(month(now - i64::from(t.cold.moves_in_after_months) + 1)),
        at: String::new(),
    };
    (w, month(now - i64::from(years) * 12 + 1))
}

/// `[lo, hi)` of the partition column as conjuncts (none for an open end):
/// the one way every reader and writer bounds a tier's range.
pub fn range_exprs(column: &str, lo: Option<&str>, hi: Option<&str>) -> Vec<Expr> {
    use datafusion::prelude::{ident, lit};
    let mut out = Vec::new();
    if let Some(lo) = lo {
        out.push(ident(column).gt_eq(lit(lo)));
    }
    if let Some(hi) = hi {
        out.push(ident(column).lt(lit(hi)));
    }
    out
}

/// `[lo, hi)` of the partition column as one predicate (`true` when open).
pub fn range_expr(column: &str, lo: Option<&str>, hi: Option<&str>) -> Expr {
    datafusion::logical_expr::utils::conjunction(range_exprs(column, lo, hi))
        .unwrap_or(datafusion::prelude::lit(true))
}

fn in_range(p: &str, lo: Option<&str>, hi: Option<&str>) -> bool {
    lo.is_none_or(|l| p >= l) && hi.is_none_or(|h| p < h)
}

/// What a tier's table holds in a partition range, from the Delta log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Extent {
    pub first: Option<String>,
    pub last: Option<String>,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
}

/// A file's value of the partition column (empty if none).
fn partition_of(f: &deltalake::kernel::LogicalFileView, column: &str) -> String {
    f.partition_values_map()
        .get(column)
        .cloned()
        .flatten()
        .unwrap_or_default()
}

fn extent(table: Option<&DeltaTable>, column: &str, lo: Option<&str>, hi: Option<&str>) -> Extent {
    let mut e = Extent::default();
    let Some(snapshot) = table.and_then(|t| t.snapshot().ok()) else {
        return e;
    };
    for f in snapshot.log_data().iter() {
        let p = partition_of(&f, column);
        if !in_range(&p, lo, hi) {
            continue;
        }
        e.rows += f.num_records().unwrap_or(0) as u64;
        e.files += 1;
        e.bytes += f.size().max(0) as u64;
        if e.first.as_ref().is_none_or(|x| &p < x) {
            e.first = Some(p.clone());
        }
        if e.last.as_ref().is_none_or(|x| &p > x) {
            e.last = Some(p);
        }
    }
    e
}

/// Whether a tier's table holds any partition outside `[lo, hi)` (copies an
/// interrupted move left); readers need not filter a table that does not.
pub fn holds_outside(table: &DeltaTable, column: &str, lo: Option<&str>, hi: Option<&str>) -> bool {
    let Ok(snapshot) = table.snapshot() else {
        return true;
    };
    snapshot.log_data().iter().any(|f| {
        let p = partition_of(&f, column);
        !in_range(&p, lo, hi)
    })
}

/// One range that changes tier (`to: None`: purged).
#[derive(Debug, Clone, Serialize)]
pub struct Move {
    pub from: Tier,
    pub to: Option<Tier>,
    pub lo: Option<String>,
    pub hi: Option<String>,
    #[serde(flatten)]
    pub extent: Extent,
}

impl Serialize for Tier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What `tier apply` does to one table.
#[derive(Debug, Clone, Serialize)]
pub struct TablePlan {
    pub table: String,
    pub column: String,
    /// The day the plan was made for.
    pub as_of: NaiveDate,
    #[serde(skip)]
    pub read_version: u64,
    pub current: Watermarks,
    pub target: Watermarks,
    pub purge_before: String,
    pub moves: Vec<Move>,
    /// Copies left outside their tier's range by an interrupted run.
    pub leftovers: Vec<Move>,
}

/// The tiered tables of the catalog.
pub fn tiered(catalog: &Catalog) -> impl Iterator<Item = &TableDef> {
    catalog
        .tables
        .iter()
        .filter(|d| d.tiered && d.partition.is_some())
}

async fn open_all(lake: &Lake, def: &TableDef) -> Result<[Option<DeltaTable>; 3], LakeError> {
    Ok([
        lake.open_in(def, Tier::Hot).await?,
        lake.open_in(def, Tier::Warm).await?,
        lake.open_in(def, Tier::Cold).await?,
    ])
}

/// Plan one table's moves and purge for `as_of`.
pub async fn plan_table(
    lake: &Lake,
    def: &TableDef,
    as_of: NaiveDate,
) -> Result<TablePlan, LakeError> {
    let column = def
        .partition
        .as_ref()
        .map(|p| p.column.clone())
        .ok_or_else(|| LakeError::Invalid(format!("{} is not partitioned", def.name)))?;
    let current = catalog::watermarks(lake, &def.name, None).await?;
    let (goal, purge_before) = targets(lake, &def.name, as_of);
    let old = current.value.clone();
    // Watermarks only advance.
    let target = Watermarks {
        warm_before: old.warm_before.clone().max(goal.warm_before),
        cold_before: old.cold_before.clone().max(goal.cold_before),
        at: String::new(),
    };
    let tables = open_all(lake, def).await?;
    let t = |tier: Tier| tables[tier as usize].as_ref();
    let (w0, c0) = (old.warm_before.clone(), old.cold_before.clone());
    let (w1, c1) = (target.warm_before.clone(), target.cold_before.clone());
    // `None` is before every partition, as `Option`'s order has it.
    let mut moves = Vec::new();
    let mut add = |from: Tier, to: Tier, lo: Option<String>, hi: Option<String>| {
        if lo < hi {
            let extent = extent(t(from), &column, lo.as_deref(), hi.as_deref());
            moves.push(Move {
                from,
                to: Some(to),
                lo,
                hi,
                extent,
            });
        }
    };
    add(
        Tier::Hot,
        Tier::Warm,
        w0.clone().max(c1.clone()),
        w1.clone(),
    );
    add(
        Tier::Hot,
        Tier::Cold,
        w0.clone(),
        w1.clone().min(c1.clone()),
    );
    add(
        Tier::Warm,
        Tier::Cold,
        c0.clone(),
        c1.clone().min(w0.clone()),
    );
    // Past retention, in whichever tier holds it: purged first, so that
    // nothing is moved only to be deleted.
    for from in Tier::ALL {
        let extent = extent(t(from), &column, None, Some(&purge_before));
        if extent.files > 0 {
            moves.insert(
                0,
                Move {
                    from,
                    to: None,
                    lo: None,
                    hi: Some(purge_before.clone()),
                    extent,
                },
            );
        }
    }
    // Anything a tier holds outside its current range.
    let mut leftovers = Vec::new();
    for tier in Tier::ALL {
        let outside: Vec<(Option<String>, Option<String>)> = match old.range(tier) {
            None => vec![(None, None)],
            Some((None, None)) => vec![],
            Some((Some(l), None)) => vec![(None, Some(l.to_string()))],
            Some((None, Some(h))) => vec![(Some(h.to_string()), None)],
            Some((Some(l), Some(h))) => {
                vec![(None, Some(l.to_string())), (Some(h.to_string()), None)]
            }
        };
        for (l, h) in outside {
            let extent = extent(t(tier), &column, l.as_deref(), h.as_deref());
            if extent.files > 0 {
                leftovers.push(Move {
                    from: tier,
                    to: None,
                    lo: l,
                    hi: h,
                    extent,
                });
            }
        }
    }
    Ok(TablePlan {
        table: def.name.clone(),
        column,
        as_of,
        read_version: current.version,
        current: old,
        target,
        purge_before,
        moves,
        leftovers,
    })
}

/// The plan for every tiered table that exists.
pub async fn plan(
    lake: &Lake,
    catalog: &Catalog,
    as_of: NaiveDate,
) -> Result<Vec<TablePlan>, LakeError> {
    let mut out = Vec::new();
    for def in tiered(catalog) {
        let tables = open_all(lake, def).await?;
        if tables.iter().all(Option::is_none) {
            continue;
        }
        out.push(plan_table(lake, def, as_of).await?);
    }
    Ok(out)
}

/// What one table's part in one tier holds now.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub table: String,
    pub tier: Tier,
    /// False while the tier owns no partition (nothing moved there yet).
    pub owns: bool,
    pub range_from: Option<String>,
    pub range_before: Option<String>,
    #[serde(flatten)]
    pub extent: Extent,
}

pub async fn status(lake: &Lake, catalog: &Catalog) -> Result<Vec<Status>, LakeError> {
    let mut out = Vec::new();
    for def in tiered(catalog) {
        let tables = open_all(lake, def).await?;
        if tables.iter().all(Option::is_none) {
            continue;
        }
        let column = def
            .partition
            .as_ref()
            .map(|p| p.column.as_str())
            .unwrap_or("");
        let w = catalog::watermarks(lake, &def.name, None).await?.value;
        for tier in Tier::ALL {
            let range = w.range(tier);
            let (lo, hi) = range.unwrap_or((None, None));
            out.push(Status {
                table: def.name.clone(),
                tier,
                owns: range.is_some(),
                range_from: lo.map(str::to_string),
                range_before: hi.map(str::to_string),
                // What it holds: in its range, or anything if it owns none.
                extent: extent(tables[tier as usize].as_ref(), column, lo, hi),
            });
        }
    }
    Ok(out)
}

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
    pub seconds: f64,
}

/// The steps `apply` reports for these plans.
pub fn steps(plans: &[TablePlan]) -> u64 {
    plans
        .iter()
        .map(|p| (p.moves.len() * 2 + p.leftovers.len() + 2) as u64)
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
            .ok_or_else(|| LakeError::Invalid(format!("no table {}", p.table)))?;
        // Under the table's lease, so that no load writes while it moves;
        // planned again under it, as a load may have changed the table
        // since the plan was shown.
        super::lease::with_lease(lake, &def.name, "tier apply", async |lease| {
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
/// what the holds and the held customers' source records cover.
async fn apply_table(
    lake: &Lake,
    def: &TableDef,
    plan: &TablePlan,
    (holds, held_records): (&[catalog::Hold], &[(String, String)]),
    lease: &super::lease::Lease,
    progress: &dyn Task,
    out: &mut Applied,
) -> Result<(), LakeError> {
    let name = &def.name;
    let column = &plan.column;
    // Copies an interrupted run left outside their tier's range.
    for m in &plan.leftovers {
        step(
            progress,
            &format!(
                "{name}: removing {} leftover rows from {}",
                m.extent.rows,
                m.from.name()
            ),
        );
        lease.check()?;
        delete_range(lake, def, column, m, None).await?;
        out.leftovers_removed += 1;
    }
    let moving: Vec<&Move> = plan.moves.iter().filter(|m| m.to.is_some()).collect();
    // Purge, sparing held partitions and customers.
    let mut purged = Vec::new();
    for m in plan.moves.iter().filter(|m| m.to.is_none()) {
        let spare = held_predicate(def, column, holds, held_records);
        step(
            progress,
            &format!(
                "{name}: purging partitions before {} from {}",
                m.hi.as_deref().unwrap_or("end"),
                m.from.name()
            ),
        );
        lease.check()?;
        out.rows_purged += delete_range(lake, def, column, m, spare.as_ref()).await?;
        if m.extent.files > 0 {
            purged.push(m.from);
        }
    }
    // Step 1: copy each moving range into its destination.
    for m in &moving {
        let Some(to) = m.to else { continue };
        if m.extent.files == 0 {
            continue;
        }
        step(
            progress,
            &format!(
                "{name}: copying {} rows {}..{} {} → {}",
                m.extent.rows,
                m.lo.as_deref().unwrap_or("start"),
                m.hi.as_deref().unwrap_or("end"),
                m.from.name(),
                to.name()
            ),
        );
        lease.check()?;
        let written = copy_range(
            lake,
            def,
            m.from,
            to,
            column,
            m.lo.as_deref(),
            m.hi.as_deref(),
        )
        .await?;
        out.ranges_moved += 1;
        out.rows_moved += m.extent.rows;
        out.bytes_read += m.extent.bytes;
        out.bytes_written += written;
    }
    // Step 2: the watermarks advance, conditionally on the version read.
    if plan.target.warm_before != plan.current.warm_before
        || plan.target.cold_before != plan.current.cold_before
    {
        step(progress, &format!("{name}: advancing the watermarks"));
        let mut w = plan.target.clone();
        w.at = catalog::now();
        lease.check()?;
        catalog::set_watermarks(lake, name, plan.read_version, &w).await?;
    }
    // Step 3: delete what moved from where it was.
    for m in &moving {
        if m.extent.files == 0 {
            continue;
        }
        step(
            progress,
            &format!("{name}: removing the moved rows from {}", m.from.name()),
        );
        lease.check()?;
        delete_range(lake, def, column, m, None).await?;
    }
    // Vacuum what was removed longer ago than the grace period (a tier
    // purged just now at once: purged data is removed physically), and
    // write a checkpoint, so that readers replay one file, not every commit.
    for tier in Tier::ALL {
        let Some(t) = lake.open_in(def, tier).await? else {
            continue;
        };
        let grace = if purged.contains(&tier) {
            0
        } else {
            lake.settings().retention.vacuum_grace_minutes
        };
        let (t, vacuumed) = vacuum(name, t, grace).await?;
        out.files_vacuumed += vacuumed;
        let changed = plan
            .moves
            .iter()
            .chain(&plan.leftovers)
            .any(|m| m.extent.files > 0 && (m.from == tier || m.to == Some(tier)));
        if changed {
            deltalake::checkpoints::create_checkpoint(&t, None)
                .await
                .map_err(|e| werr(name, e))?;
        }
    }
    out.tables += 1;
    Ok(())
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
        .map_err(|e| LakeError::Invalid(e.to_string()))?;
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
    let size = to.settings(&lake.settings().tiers).target_file_mb.max(1) * 1024 * 1024;
    let table = dest
        .write(Vec::new())
        .with_input_plan(df.logical_plan().clone())
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(predicate)
        .with_session_state(Arc::new(ctx.state()))
        .with_writer_properties(lake.writer_properties_in(def, to))
        .with_target_file_size(NonZeroU64::new(size))
        .await
        .map_err(|e| werr(name, e))?;
    let after = dest_bytes(&table);
    Ok(after.saturating_sub(before.min(after)))
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
    super::write::delete_rows(lake, def, tier, table, predicate).await
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

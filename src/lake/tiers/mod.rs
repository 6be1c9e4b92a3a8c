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

use chrono::{Datelike, Months, NaiveDate};
use datafusion::prelude::Expr;
use deltalake::DeltaTable;
use serde::Serialize;

mod apply;

pub use apply::{Applied, anything_due, apply, apply_due, held_records, steps};

use super::catalog::{self, Watermarks};
use super::{Lake, LakeError, Tier};
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
/// a partition `moves_in_after_months` old or older leaves the tier above;
/// partitions before the boundary are purged (see [`purge_before`]).
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
    (w, purge_before(as_of, years))
}

/// The first month kept on `as_of` under `years` of retention: a month is
/// purged only when all of it is past retention, i.e. its last day was at
/// least `years` ago. (On 2026-11-01 with 10 years, November 2016 still
/// holds rows from 2 to 30 November 2016, under 10 years old: it is kept
/// until 2026-11-30.)
pub fn purge_before(as_of: NaiveDate, years: u32) -> String {
    // Rows dated on or before `cutoff` have been kept `years` years.
    let cutoff = as_of
        .checked_sub_months(Months::new(years.saturating_mul(12)))
        .unwrap_or(NaiveDate::MIN);
    let month_ends = cutoff
        .succ_opt()
        .is_none_or(|next| next.month() != cutoff.month());
    month(month_index(cutoff) + i64::from(month_ends))
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

impl<'de> serde::Deserialize<'de> for Tier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
    /// Partitions of many small files, rewritten in place.
    pub compactions: Vec<Compaction>,
}

/// A partition of one tier whose files (at least `compact_min_files` small
/// ones: each load, list run or audit flush adds one) are rewritten as
/// files of the tier's target size, the rows in the table's cluster order,
/// so that a read of a few keys (a stored list's lines, a lookup) reads the
/// row groups that hold them, not a row group of every file.
#[derive(Debug, Clone, Serialize)]
pub struct Compaction {
    pub tier: Tier,
    pub partition: String,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
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
        .ok_or_else(|| LakeError::Fault(format!("{} is not partitioned", def.name)))?;
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
    let compactions = compactions(
        &tables,
        &column,
        &lake.settings().tiers,
        &purge_before,
        moves.iter().chain(&leftovers),
    );
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
        compactions,
    })
}

/// The partitions of each tier holding at least `compact_min_files` small
/// files (under half the tier's target size; none when it is 0), except
/// those this run purges, moves or removes anyway. Full files do not count:
/// a large partition of full files, or one compacted before, is left alone
/// until enough small files have joined it.
fn compactions<'a>(
    tables: &[Option<DeltaTable>; 3],
    column: &str,
    settings: &crate::config::Tiers,
    purge_before: &str,
    rewritten: impl Iterator<Item = &'a Move>,
) -> Vec<Compaction> {
    let min_files = settings.compact_min_files;
    if min_files == 0 {
        return Vec::new();
    }
    let rewritten: Vec<&Move> = rewritten.collect();
    let mut out = Vec::new();
    for tier in Tier::ALL {
        let Some(snapshot) = tables[tier as usize]
            .as_ref()
            .and_then(|t| t.snapshot().ok())
        else {
            continue;
        };
        let target = tier.settings(settings).target_file_mb.max(1) * 1024 * 1024;
        // Per partition: the compaction, and how many of its files are small.
        let mut parts: std::collections::BTreeMap<String, (Compaction, u64)> = Default::default();
        for f in snapshot.log_data().iter() {
            let partition = partition_of(&f, column);
            let (c, small) = parts.entry(partition.clone()).or_insert((
                Compaction {
                    tier,
                    partition,
                    files: 0,
                    rows: 0,
                    bytes: 0,
                },
                0,
            ));
            let size = f.size().max(0) as u64;
            c.files += 1;
            c.rows += f.num_records().unwrap_or(0) as u64;
            c.bytes += size;
            *small += u64::from(size < target / 2);
        }
        out.extend(parts.into_values().filter_map(|(c, small)| {
            let p = c.partition.as_str();
            let due = compaction_due(small, min_files)
                && !p.is_empty()
                && p >= purge_before
                && !rewritten.iter().any(|m| {
                    (m.from == tier || m.to == Some(tier))
                        && in_range(p, m.lo.as_deref(), m.hi.as_deref())
                });
            due.then_some(c)
        }));
    }
    out
}

/// Whether a partition holding `small` files of less than half the tier's
/// target size is rewritten: at least `min_files` of them (0: never).
fn compaction_due(small: u64, min_files: u64) -> bool {
    min_files > 0 && small >= min_files
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

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_partition_is_compacted_when_it_has_many_small_files() {
        assert!(compaction_due(1500, 16));
        assert!(compaction_due(16, 16));
        assert!(!compaction_due(15, 16));
        // Off.
        assert!(!compaction_due(1500, 0));
    }

    #[test]
    fn a_month_is_purged_only_once_all_of_it_is_past_retention() {
        // The case: on 2026-11-01, November 2016 is kept.
        assert_eq!(purge_before(day("2026-11-01"), 10), "2016-11");
        assert_eq!(purge_before(day("2026-11-29"), 10), "2016-11");
        // On 2026-11-30 the last of November 2016 is ten years old.
        assert_eq!(purge_before(day("2026-11-30"), 10), "2016-12");
        assert_eq!(purge_before(day("2026-12-01"), 10), "2016-12");
        // Short months and leap years.
        assert_eq!(purge_before(day("2026-02-27"), 10), "2016-02");
        assert_eq!(purge_before(day("2026-02-28"), 10), "2016-02");
        assert_eq!(purge_before(day("2026-03-01"), 10), "2016-03");
        assert_eq!(purge_before(day("2024-02-29"), 1), "2023-03");
        assert_eq!(purge_before(day("2024-02-28"), 1), "2023-03");
        assert_eq!(purge_before(day("2024-02-27"), 1), "2023-02");
    }
}

//! A tiered table read as one: the union of its hot, warm and cold Delta
//! tables, each restricted to the partition range its watermarks give it,
//! so every row is seen in exactly one tier.
//!
//! Nothing is read from a tier until a scan needs it: a scan whose filters
//! bound the partition column skips the tiers outside the bound without
//! opening them, so a query on recent months touches the hot store alone.
//! A scan reads the watermarks, opens the tiers it needs, and reads the
//! watermarks again; if a move advanced them in between it starts over, so
//! the tables it reads agree with the ranges it gives them.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;

use crate::error::{ErrorKind, Kinded};
use crate::lake::catalog::{self, Watermarks};
use crate::lake::session::Text;
use crate::lake::{AsOf, Lake, Tier};
use crate::schema::TableDef;

/// A tiered table as one table provider.
pub struct TieredTable {
    lake: Lake,
    def: TableDef,
    column: String,
    schema: SchemaRef,
    as_of: Option<AsOf>,
    /// Tier tables opened by earlier scans, brought up to date (new
    /// commits only) by later ones.
    opened: tokio::sync::Mutex<std::collections::HashMap<Tier, Opened>>,
    /// The watermarks last read, reused while their version is the newest.
    marks: tokio::sync::Mutex<Option<catalog::Versioned<Watermarks>>>,
    /// How the tiers' scans read text.
    text: Text,
    /// The same table read with text as views, for a statement's plan to
    /// swap in (see [`super::text`]).
    views: Option<Arc<TieredTable>>,
}

/// A tier's table and its provider, rebuilt only when the table changed.
struct Opened {
    table: deltalake::DeltaTable,
    provider: Arc<dyn TableProvider>,
}

impl std::fmt::Debug for TieredTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredTable")
            .field("table", &self.def.name)
            .finish()
    }
}

/// An error on the way through DataFusion, keeping what it is (so that a
/// storage failure is not taken for the user's SQL).
fn ext(e: impl Into<Carried>) -> DataFusionError {
    match e.into() {
        Carried::Lake(e) => Kinded::datafusion(e),
        Carried::Delta(e) => DataFusionError::External(Box::new(e)),
        Carried::DataFusion(e) => e,
        Carried::Fault(kind, message) => {
            DataFusionError::External(Box::new(Kinded::new(kind, message)))
        }
    }
}

enum Carried {
    Lake(crate::lake::LakeError),
    Delta(deltalake::DeltaTableError),
    DataFusion(DataFusionError),
    Fault(ErrorKind, String),
}

impl From<crate::lake::LakeError> for Carried {
    fn from(e: crate::lake::LakeError) -> Self {
        Self::Lake(e)
    }
}

impl From<DataFusionError> for Carried {
    fn from(e: DataFusionError) -> Self {
        Self::DataFusion(e)
    }
}

impl From<deltalake::DeltaTableError> for Carried {
    fn from(e: deltalake::DeltaTableError) -> Self {
        Self::Delta(e)
    }
}

/// The tiers disagree with each other: the lake is damaged.
fn damaged(message: String) -> Carried {
    Carried::Fault(ErrorKind::StorageDamaged, message)
}

impl TieredTable {
    pub fn new(
        lake: Lake,
        def: TableDef,
        schema: SchemaRef,
        as_of: Option<AsOf>,
        text: Text,
    ) -> Option<Self> {
        let column = def.partition.as_ref()?.column.clone();
        Some(Self {
            lake,
            def,
            column,
            schema,
            as_of,
            opened: Default::default(),
            marks: Default::default(),
            text,
            views: None,
        })
    }

    /// This table with `views`, the same table read with text as views.
    pub fn with_views(mut self, views: TieredTable) -> Self {
        self.views = Some(Arc::new(views));
        self
    }

    /// The same table read with text as views, if it has one.
    pub fn views(&self) -> Option<Arc<dyn TableProvider>> {
        self.views.clone().map(|v| v as Arc<dyn TableProvider>)
    }

    /// A tier's table and provider, current (or as of the time asked for).
    async fn tier_table(
        &self,
        tier: Tier,
    ) -> Result<Option<(deltalake::DeltaTable, Arc<dyn TableProvider>)>> {
        let mut opened = self.opened.lock().await;
        if let Some(o) = opened.get_mut(&tier) {
            if self.as_of.is_none() {
                let before = o.table.version();
                o.table.update_incremental(None).await.map_err(ext)?;
                if o.table.version() != before {
                    o.provider = o
                        .table
                        .table_provider()
                        .with_session(crate::lake::session::scan_session(self.text))
                        .await
                        .map_err(ext)?;
                }
            }
            return Ok(Some((o.table.clone(), o.provider.clone())));
        }
        let Some(table) = self
            .lake
            .open_at(&self.def, tier, self.as_of.as_ref())
            .await
            .map_err(ext)?
        else {
            return Ok(None);
        };
        let provider = table
            .table_provider()
            .with_session(crate::lake::session::scan_session(self.text))
            .await
            .map_err(ext)?;
        opened.insert(
            tier,
            Opened {
                table: table.clone(),
                provider: provider.clone(),
            },
        );
        Ok(Some((table, provider)))
    }

    /// Whether the tier scans apply a filter exactly: a comparison of the
    /// partition column with literals, which each tier's Delta scan
    /// answers from partition values alone.
    fn exact(&self, e: &Expr) -> bool {
        let column = self.column.as_str();
        let lit = |e: &Expr| matches!(e, Expr::Literal(..));
        let col = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And => self.exact(left) && self.exact(right),
                Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                    (col(left) && lit(right)) || (lit(left) && col(right))
                }
                _ => false,
            },
            Expr::Between(b) => col(&b.expr) && lit(&b.low) && lit(&b.high),
            Expr::InList(l) => col(&l.expr) && l.list.iter().all(lit),
            _ => false,
        }
    }

    async fn watermarks(&self) -> Result<catalog::Versioned<Watermarks>> {
        let at = self.as_of.as_ref().and_then(AsOf::time);
        let mut marks = self.marks.lock().await;
        if at.is_none()
            && let Some(m) = marks.as_ref()
            && catalog::watermarks_version(&self.lake, &self.def.name)
                .await
                .map_err(ext)?
                == m.version
        {
            return Ok(m.clone());
        }
        let read = catalog::watermarks(&self.lake, &self.def.name, at)
            .await
            .map_err(ext)?;
        *marks = Some(read.clone());
        Ok(read)
    }

    /// The bounds `[lo, hi]` the filters put on the partition column.
    fn bounds(&self, filters: &[Expr]) -> (Option<String>, Option<String>) {
        let mut lo: Option<String> = None;
        let mut hi: Option<String> = None;
        for f in filters {
            bound(f, &self.column, &mut lo, &mut hi);
        }
        (lo, hi)
    }
}

/// Tighten `[lo, hi]` (both inclusive) by what `e` says of `column`.
fn bound(e: &Expr, column: &str, lo: &mut Option<String>, hi: &mut Option<String>) {
    fn scalar(v: &ScalarValue) -> Option<String> {
        match v {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
            // The partition column is dictionary-encoded, and so are the
            // literals compared with it.
            ScalarValue::Dictionary(_, inner) => scalar(inner),
            _ => None,
        }
    }
    fn text(e: &Expr) -> Option<String> {
        match e {
            Expr::Literal(v, _) => scalar(v),
            Expr::Cast(c) => text(&c.expr),
            Expr::TryCast(c) => text(&c.expr),
            _ => None,
        }
    }
    fn is_col(e: &Expr, column: &str) -> bool {
        match e {
            Expr::Column(c) => c.name == column,
            Expr::Cast(c) => is_col(&c.expr, column),
            Expr::TryCast(c) => is_col(&c.expr, column),
            _ => false,
        }
    }
    let is_col = |e: &Expr| is_col(e, column);
    fn raise(lo: &mut Option<String>, v: String) {
        if lo.as_ref().is_none_or(|l| &v > l) {
            *lo = Some(v);
        }
    }
    fn lower(hi: &mut Option<String>, v: String) {
        if hi.as_ref().is_none_or(|h| &v < h) {
            *hi = Some(v);
        }
    }
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                bound(left, column, lo, hi);
                bound(right, column, lo, hi);
                return;
            }
            let (op, v) = if is_col(left) {
                (*op, text(right))
            } else if is_col(right) {
                let swapped = match op {
                    Operator::Lt => Operator::Gt,
                    Operator::LtEq => Operator::GtEq,
                    Operator::Gt => Operator::Lt,
                    Operator::GtEq => Operator::LtEq,
                    o => *o,
                };
                (swapped, text(left))
            } else {
                return;
            };
            let Some(v) = v else { return };
            match op {
                Operator::Eq => {
                    raise(lo, v.clone());
                    lower(hi, v);
                }
                // Partition values are compared as text, and a bound only
                // skips tiers: `>` as `>=` and `<` as `<=` are safe.
                Operator::Gt | Operator::GtEq => raise(lo, v),
                Operator::Lt | Operator::LtEq => lower(hi, v),
                _ => {}
            }
        }
        Expr::Between(b) if !b.negated && is_col(&b.expr) => {
            if let (Some(l), Some(h)) = (text(&b.low), text(&b.high)) {
                raise(lo, l);
                lower(hi, h);
            }
        }
        Expr::InList(l) if !l.negated && is_col(&l.expr) => {
            let values: Option<Vec<String>> = l.list.iter().map(text).collect();
            if let Some(v) = values
                && let (Some(min), Some(max)) = (v.iter().min(), v.iter().max())
            {
                raise(lo, min.clone());
                lower(hi, max.clone());
            }
        }
        _ => {}
    }
}

/// Whether `[lo, hi)` (a tier's range) can hold a value in `[blo, bhi]`.
fn overlaps(range: (Option<&str>, Option<&str>), blo: Option<&str>, bhi: Option<&str>) -> bool {
    let (lo, hi) = range;
    if let (Some(lo), Some(hi)) = (lo, hi)
        && lo >= hi
    {
        return false;
    }
    // A value v in the bound: v >= blo and v <= bhi; in the tier: v >= lo
    // and v < hi. A day partition `YYYY-MM-DD` sorts after its month
    // `YYYY-MM`, so the comparisons hold for both granularities.
    let below_hi = match (hi, blo) {
        (Some(h), Some(b)) => b < h,
        _ => true,
    };
    let above_lo = match (lo, bhi) {
        (Some(l), Some(b)) => b >= l || b.starts_with(l),
        _ => true,
    };
    below_hi && above_lo
}

#[async_trait]
impl TableProvider for TieredTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.exact(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (blo, bhi) = self.bounds(filters);
        for _attempt in 0..10 {
            let read = self.watermarks().await?;
            let w = read.value;
            let mut tables = Vec::new();
            for tier in Tier::ALL {
                let Some(range) = w.range(tier) else {
                    continue;
                };
                if !overlaps(range, blo.as_deref(), bhi.as_deref()) {
                    continue;
                }
                let Some(t) = self.tier_table(tier).await? else {
                    continue;
                };
                tables.push((tier, t));
            }
            if self.as_of.is_none()
                && catalog::watermarks_version(&self.lake, &self.def.name)
                    .await
                    .map_err(ext)?
                    != read.version
            {
                continue;
            }
            let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
            for (tier, (t, provider)) in tables {
                t.update_datafusion_session(state).map_err(ext)?;
                // Each tier's scan must take every filter declared exact.
                let pushdown =
                    provider.supports_filters_pushdown(&filters.iter().collect::<Vec<_>>())?;
                for (f, p) in filters.iter().zip(pushdown) {
                    if self.exact(f) && p != TableProviderFilterPushDown::Exact {
                        return Err(ext(damaged(format!(
                            "{}: the {} tier cannot apply {f} exactly",
                            self.def.name,
                            tier.name()
                        ))));
                    }
                }
                if provider.schema().fields() != self.schema.fields() {
                    return Err(ext(damaged(format!(
                        "{} in the {} tier has columns {:?}, the hot tier {:?}",
                        self.def.name,
                        tier.name(),
                        provider
                            .schema()
                            .fields()
                            .iter()
                            .map(|f| (f.name(), f.data_type()))
                            .collect::<Vec<_>>(),
                        self.schema
                            .fields()
                            .iter()
                            .map(|f| (f.name(), f.data_type()))
                            .collect::<Vec<_>>()
                    ))));
                }
                let (lo, hi) = w.range(tier).unwrap_or((None, None));
                let mut fs = filters.to_vec();
                // The tier's range, unless the table holds nothing outside
                // it (a filter costs the scan even when it removes nothing).
                if crate::lake::tiers::holds_outside(&t, &self.column, lo, hi) {
                    fs.extend(crate::lake::tiers::range_exprs(&self.column, lo, hi));
                }
                let plan = provider.scan(state, projection, &fs, None).await?;
                plans.push(super::cluster::for_session(
                    state,
                    &self.def.name,
                    tier,
                    t.version(),
                    projection,
                    &fs,
                    None,
                    plan,
                )?);
            }
            // On a cluster the tiers are one leaf, partition `i` reading
            // each tier's group `i` (see `cluster::scan`).
            if plans.len() > 1
                && crate::lake::session::on_cluster(state.config()).is_some()
                && let Some(one) = super::cluster::TierScanExec::merged(&plans)
            {
                return Ok(one);
            }
            return match plans.len() {
                0 => {
                    let schema = match projection {
                        Some(p) => Arc::new(self.schema.project(p)?),
                        None => self.schema.clone(),
                    };
                    Ok(Arc::new(EmptyExec::new(schema)))
                }
                1 => Ok(plans.remove(0)),
                _ => UnionExec::try_new(plans),
            };
        }
        Err(ext(Carried::Fault(
            ErrorKind::Conflict,
            format!(
                "{}: the tier watermarks kept moving while the query was planned; try again",
                self.def.name
            ),
        )))
    }
}

/// A table whose rows are all in the hot tier (untiered, or not moved
/// yet): Delta's provider, its scans marked with the table version they
/// read so that a cluster's executors can plan them again.
pub struct OneTier {
    name: String,
    version: Option<u64>,
    inner: Arc<dyn TableProvider>,
    /// Lookup columns a key index serves (see `keyindex`).
    indexed: Vec<String>,
    /// Scans of every file, by projection, that lookups served from the
    /// row cache start from (see [`OneTier::whole_scan`]).
    whole: std::sync::Mutex<WholeScans>,
    /// The same version read with text as views, for a statement's plan to
    /// swap in (see [`super::text`]).
    views: Option<Arc<OneTier>>,
}

/// Whole-table scans by projection.
type WholeScans = HashMap<Option<Vec<usize>>, Arc<dyn ExecutionPlan>>;

/// Whole-table scans kept per table version, at most (a statement's
/// projection is one key; few differ).
const WHOLE_SCANS: usize = 32;

impl OneTier {
    pub fn new(def: &TableDef, version: Option<u64>, inner: Arc<dyn TableProvider>) -> Self {
        Self {
            name: def.name.clone(),
            version,
            inner,
            indexed: def.lookup.clone(),
            whole: Default::default(),
            views: None,
        }
    }

    /// This table with `views`, the same version read with text as views.
    pub fn with_views(mut self, views: OneTier) -> Self {
        self.views = Some(Arc::new(views));
        self
    }

    /// The same version read with text as views, if it has one.
    pub fn views(&self) -> Option<Arc<dyn TableProvider>> {
        self.views.clone().map(|v| v as Arc<dyn TableProvider>)
    }

    /// Delta's scan of every file of this version with `projection`, no
    /// filter, no limit: planned once and kept, since a version's files
    /// never change. Planning it per lookup replayed the table's file list
    /// through the Delta kernel each time.
    async fn whole_scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let key = projection.cloned();
        if let Some(p) = self.whole_scans().get(&key) {
            return Ok(p.clone());
        }
        let plan = self.inner.scan(state, projection, &[], None).await?;
        let mut kept = self.whole_scans();
        if kept.len() >= WHOLE_SCANS {
            kept.clear();
        }
        kept.insert(key, plan.clone());
        Ok(plan)
    }

    fn whole_scans(&self) -> std::sync::MutexGuard<'_, WholeScans> {
        self.whole.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for OneTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneTier")
            .field("table", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

#[async_trait]
impl TableProvider for OneTier {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<datafusion::common::Statistics> {
        self.inner.statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted = if crate::lake::session::on_cluster(state.config()).is_none() {
            super::keyindex::wanted(filters, &self.indexed)
        } else {
            None
        };
        // A lookup of a few rows, every file indexed: the rows come from
        // the row cache and the statement's filters, all applied above the
        // scan (none is exact), pick those returned; the whole scan it
        // starts from is planned once per version.
        let mut served = None;
        if let Some((column, values)) = &wanted
            && limit.is_none()
            && self
                .inner
                .supports_filters_pushdown(&filters.iter().collect::<Vec<_>>())?
                .iter()
                .all(|p| *p != TableProviderFilterPushDown::Exact)
        {
            let whole = self.whole_scan(state, projection).await?;
            served = super::keyindex::from_row_cache(state, whole, column, values)?;
        }
        let plan = match served {
            Some(plan) => plan,
            None => {
                let plan = self.inner.scan(state, projection, filters, limit).await?;
                match wanted {
                    Some((column, values)) => {
                        super::keyindex::narrow(state, plan, &column, &values)?
                    }
                    None => plan,
                }
            }
        };
        super::cluster::for_session(
            state,
            &self.name,
            Tier::Hot,
            self.version,
            projection,
            filters,
            limit,
            plan,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_skip_only_tiers_outside_them() {
        let hot = (Some("2025-11"), None);
        let warm = (Some("2024-11"), Some("2025-11"));
        let cold = (None, Some("2024-11"));
        // The last three months.
        assert!(overlaps(hot, Some("2026-09"), None));
        assert!(!overlaps(warm, Some("2026-09"), None));
        assert!(!overlaps(cold, Some("2026-09"), None));
        // Two years back reaches warm, not cold.
        assert!(overlaps(warm, Some("2024-12"), None));
        assert!(!overlaps(cold, Some("2024-12"), None));
        // An upper bound on its own.
        assert!(!overlaps(hot, None, Some("2025-10")));
        assert!(overlaps(hot, None, Some("2025-11")));
        // Day partitions of a month at a boundary stay in.
        assert!(overlaps(hot, None, Some("2025-11-03")));
        assert!(overlaps(cold, Some("2024-10-31"), None));
        // An empty tier range.
        assert!(!overlaps((Some("2024-11"), Some("2024-11")), None, None));
    }
}

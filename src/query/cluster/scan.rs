//! A Delta scan that travels: each tier's table at a pinned version, with
//! the projection, filters and limit the statement gave it. On the machine
//! that plans the statement it holds the scans Delta planned; decoded on an
//! executor it plans the same scans again, from the same table versions,
//! when it first runs.
//!
//! It is one partition: one task reads all of it, running every partition
//! of the scans inside on the executor's threads. Ballista hands a stage's
//! partitions to several tasks and cuts each task's leaves down to its own
//! partitions, but only for the leaves it knows (its shuffle readers and
//! DataFusion's file and memory scans); a leaf of several partitions it
//! does not know would be read whole, or by the wrong indices, by every
//! task of its stage. One partition is read by exactly one task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::lake::{AsOf, Lake, Tier};
use crate::schema::Catalog;

/// What an executor needs to plan one tier's scan again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanSpec {
    pub table: String,
    pub tier: Tier,
    /// The Delta version the planner read.
    pub version: u64,
    pub projection: Option<Vec<usize>>,
    pub limit: Option<usize>,
}

/// One tier's scan: what it reads and its filters.
#[derive(Debug, Clone)]
pub struct Part {
    pub spec: ScanSpec,
    pub filters: Vec<Expr>,
}

/// Where a decoded scan finds its table: the lake of the executor's
/// configuration, and the tables it opened (by table, tier and version:
/// a version never changes, so the tasks of every job share one).
#[derive(Debug)]
pub struct Replanner {
    lake: Lake,
    catalog: Arc<Catalog>,
    opened: Mutex<HashMap<(String, Tier, u64), Opened>>,
}

/// A table version an executor opened, and its provider.
type Opened = (deltalake::DeltaTable, Arc<dyn TableProvider>);

/// Table versions an executor keeps open.
const KEPT: usize = 32;

impl Replanner {
    pub fn new(lake: Lake, catalog: Arc<Catalog>) -> Self {
        Self {
            lake,
            catalog,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// The provider of `spec`'s table version, its store registered in
    /// `state`'s runtime (a task's runtime may be new; the table is opened
    /// once).
    async fn provider(
        &self,
        spec: &ScanSpec,
        state: &datafusion::execution::SessionState,
    ) -> Result<Arc<dyn TableProvider>> {
        fn delta(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
            DataFusionError::External(Box::new(e))
        }
        let key = (spec.table.clone(), spec.tier, spec.version);
        if let Some((table, provider)) = self.cached(&key) {
            table.update_datafusion_session(state).map_err(delta)?;
            return Ok(provider);
        }
        let def = self
            .catalog
            .table(&spec.table)
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let table = self
            .lake
            .open_at(
                def,
                spec.tier,
                Some(&AsOf::Version(
                    i64::try_from(spec.version).unwrap_or(i64::MAX),
                )),
            )
            .await
            .map_err(crate::error::Kinded::datafusion)?
            .ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "{} has no {} tier table at version {}: it was planned on a lake this \
                     executor does not see (do the scheduler, executors and server share one \
                     configuration?)",
                    spec.table,
                    spec.tier.name(),
                    spec.version
                ))
            })?;
        table.update_datafusion_session(state).map_err(delta)?;
        let provider = table
            .table_provider()
            .with_session(crate::lake::session::scan_session(
                crate::lake::session::Text::Plain,
            ))
            .await
            .map_err(delta)?;
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if opened.len() >= KEPT {
            // Older versions of the same table go first, else any one.
            let stale = opened
                .keys()
                .find(|(t, tier, v)| *t == spec.table && *tier == spec.tier && *v < spec.version)
                .or_else(|| opened.keys().next())
                .cloned();
            if let Some(k) = stale {
                opened.remove(&k);
            }
        }
        opened.insert(key, (table, provider.clone()));
        Ok(provider)
    }

    fn cached(&self, key: &(String, Tier, u64)) -> Option<Opened> {
        let opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        opened.get(key).cloned()
    }

    /// Plan `part` again, as the planner did, its files split for the
    /// executor's threads.
    async fn plan(
        &self,
        part: &Part,
        schema: &SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = SessionStateBuilder::new()
            .with_config(ctx.session_config().clone())
            .with_runtime_env(ctx.runtime_env())
            .build();
        let spec = &part.spec;
        let provider = self.provider(spec, &state).await?;
        let plan = provider
            .scan(&state, spec.projection.as_ref(), &part.filters, spec.limit)
            .await?;
        if plan.schema().fields() != schema.fields() {
            return Err(DataFusionError::Execution(format!(
                "{} ({} tier, version {}): the scan planned again reads other columns than \
                 the planner's",
                spec.table,
                spec.tier.name(),
                spec.version
            )));
        }
        Ok(split(plan, &state))
    }
}

/// `plan` with its files split into the session's target partitions (as
/// DataFusion's optimiser splits a file scan), when it can be.
fn split(plan: Arc<dyn ExecutionPlan>, state: &dyn Session) -> Arc<dyn ExecutionPlan> {
    let target = state.config().target_partitions();
    if plan.output_partitioning().partition_count() >= target {
        return plan;
    }
    match plan.repartitioned(target, state.config_options()) {
        Ok(Some(p)) => p,
        _ => plan,
    }
}

/// The tier scans of one table, as a leaf of one partition that can
/// travel (see the module).
#[derive(Debug)]
pub struct TierScanExec {
    parts: Vec<Part>,
    schema: SchemaRef,
    /// What the scans planned here said of their rows (counts, sizes,
    /// column bounds from the Delta log): sent with the scan, so the
    /// scheduler's join choices see them as the local planner does.
    statistics: Arc<Statistics>,
    properties: Arc<PlanProperties>,
    planned: Arc<tokio::sync::OnceCell<Vec<Arc<dyn ExecutionPlan>>>>,
    replanner: Option<Arc<Replanner>>,
}

/// One partition, bounded, no ordering claimed: a plan above must not drop
/// a sort for an order the scans planned again need not keep.
pub(super) fn properties(schema: &SchemaRef) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        Partitioning::UnknownPartitioning(1),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

/// `plan` on one line, for a verbose EXPLAIN of a leaf that holds it.
pub(super) fn one_line(plan: &dyn ExecutionPlan) -> String {
    let shown = datafusion::physical_plan::displayable(plan).indent(true);
    shown.to_string().trim().replace('\n', " / ")
}

impl TierScanExec {
    /// The scans Delta planned for `parts` (on the planning machine).
    fn planned(parts: Vec<Part>, plans: Vec<Arc<dyn ExecutionPlan>>, schema: SchemaRef) -> Self {
        Self {
            properties: properties(&schema),
            statistics: statistics_of(&plans, &schema),
            parts,
            schema,
            planned: Arc::new(tokio::sync::OnceCell::new_with(Some(plans))),
            replanner: None,
        }
    }

    /// Scans an executor plans again when it first runs them.
    pub fn decoded(
        parts: Vec<Part>,
        schema: SchemaRef,
        statistics: Statistics,
        replanner: Arc<Replanner>,
    ) -> Self {
        Self {
            properties: properties(&schema),
            statistics: Arc::new(statistics),
            parts,
            schema,
            planned: Arc::new(tokio::sync::OnceCell::new()),
            replanner: Some(replanner),
        }
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    pub fn statistics(&self) -> &Statistics {
        &self.statistics
    }

    /// The tier scans of `plans` (each a [`TierScanExec`] planned here) as
    /// one; `None` if one of them is something else.
    pub fn merged(plans: &[Arc<dyn ExecutionPlan>]) -> Option<Arc<dyn ExecutionPlan>> {
        let mut parts = Vec::new();
        let mut inner = Vec::new();
        let schema = plans.first()?.schema();
        for p in plans {
            let scan = p.downcast_ref::<TierScanExec>()?;
            parts.extend(scan.parts.iter().cloned());
            inner.extend(scan.planned.get()?.iter().cloned());
        }
        Some(Arc::new(Self::planned(parts, inner, schema)))
    }
}

/// The statistics of `plans` together (unknown where they cannot be
/// computed or merged).
fn statistics_of(plans: &[Arc<dyn ExecutionPlan>], schema: &SchemaRef) -> Arc<Statistics> {
    let ctx = StatisticsContext::new();
    let each = plans
        .iter()
        .map(|p| ctx.compute(p.as_ref(), &StatisticsArgs::new()))
        .collect::<Result<Vec<_>>>();
    let merged = each.and_then(|each| {
        Statistics::try_merge_iter(each.iter().map(|s| s.as_ref()), schema.as_ref())
    });
    Arc::new(merged.unwrap_or_else(|_| Statistics::new_unknown(schema.as_ref())))
}

/// `plan`, Delta's scan of one tier of `table` at `version`, as it runs in
/// `state`: unchanged locally, a [`TierScanExec`] in a session whose plans
/// go to a cluster.
#[allow(clippy::too_many_arguments)]
pub fn for_session(
    state: &dyn Session,
    table: &str,
    tier: Tier,
    version: Option<u64>,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if crate::lake::session::on_cluster(state.config()).is_none() {
        return Ok(plan);
    }
    let version = version.ok_or_else(|| {
        DataFusionError::Plan(format!(
            "{table} ({} tier) has no version to send to the cluster",
            tier.name()
        ))
    })?;
    let part = Part {
        spec: ScanSpec {
            table: table.to_string(),
            tier,
            version,
            projection: projection.cloned(),
            limit,
        },
        filters: filters.to_vec(),
    };
    let schema = plan.schema();
    Ok(Arc::new(TierScanExec::planned(
        vec![part],
        vec![plan],
        schema,
    )))
}

impl DisplayAs for TierScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TierScanExec:")?;
        for (i, part) in self.parts.iter().enumerate() {
            let s = &part.spec;
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{}@{} v{}", s.table, s.tier.name(), s.version)?;
            if !part.filters.is_empty() {
                let shown: Vec<String> = part.filters.iter().map(|e| e.to_string()).collect();
                write!(f, " filters=[{}]", shown.join(", "))?;
            }
            if let Some(l) = s.limit {
                write!(f, " limit={l}")?;
            }
        }
        if matches!(t, DisplayFormatType::Verbose)
            && let Some(inner) = self.planned.get()
        {
            for p in inner {
                write!(f, " [{}]", one_line(p.as_ref()))?;
            }
        }
        Ok(())
    }
}

impl ExecutionPlan for TierScanExec {
    fn name(&self) -> &str {
        "TierScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    opaque_leaf!();

    fn statistics_from_inputs(
        &self,
        _: &[Arc<Statistics>],
        _: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        // One partition: the scan's statistics are its partition's.
        Ok(self.statistics.clone())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "TierScanExec has one partition, not {partition}"
            )));
        }
        let planned = self.planned.clone();
        let replanner = self.replanner.clone();
        let parts = self.parts.clone();
        let schema = self.schema.clone();
        let stream = futures::stream::once(async move {
            let inner = planned
                .get_or_try_init(|| async {
                    let r = replanner.ok_or_else(|| {
                        DataFusionError::Internal(
                            "a tier scan was neither planned nor decoded".into(),
                        )
                    })?;
                    let mut plans = Vec::with_capacity(parts.len());
                    for part in &parts {
                        plans.push(r.plan(part, &schema, &context).await?);
                    }
                    Ok::<_, DataFusionError>(plans)
                })
                .await?
                .clone();
            // Every partition of every tier, on the executor's threads.
            let all: Arc<dyn ExecutionPlan> = match inner.len() {
                1 => inner[0].clone(),
                _ => UnionExec::try_new(inner)?,
            };
            let one: Arc<dyn ExecutionPlan> = if all.output_partitioning().partition_count() == 1 {
                all
            } else {
                Arc::new(CoalescePartitionsExec::new(all))
            };
            one.execute(0, context)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream.boxed(),
        )))
    }
}

//! A Delta scan that travels: each tier's table at a pinned version, with
//! the projection, filters and limit the statement gave it. On the machine
//! that plans the statement it holds the scans Delta planned; decoded on an
//! executor it plans the same scans again, from the same table versions,
//! when it first runs.
//!
//! Its partitions are the files Delta planned (split by byte ranges into
//! the session's target partitions, as DataFusion splits a file scan):
//! partition `i` reads the files, or ranges of files, of group `i`, each
//! of its tier's table version. Ballista hands a stage's partitions to
//! several tasks and cuts each task's leaves down to its own partitions,
//! but only for the leaves it knows (its shuffle readers and DataFusion's
//! file and memory scans). So the scheduler decodes a tier scan as a file
//! scan ([`carrier`]) whose file groups are the scan's; Ballista cuts
//! those, and the scheduler's codec sends each task the tier scan of its
//! own groups. A scan whose files cannot be listed (its plan holds no
//! single file scan) is one partition, read whole by one task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
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

/// A file, or a byte range of one, that a partition of a tier scan reads:
/// of its `part`'s table version (the scan's `part`-th tier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    pub part: usize,
    pub path: String,
    pub size: u64,
    pub range: Option<(i64, i64)>,
}

impl Slice {
    /// `file` (as a file scan holds it) of the scan's `part`-th tier.
    pub(super) fn of(part: usize, file: &PartitionedFile) -> Self {
        Self {
            part,
            path: file.object_meta.location.to_string(),
            size: file.object_meta.size,
            range: file.range.as_ref().map(|r| (r.start, r.end)),
        }
    }
}

/// `plan` as DataFusion's file scan, if it is one.
pub(super) fn file_scan(plan: &dyn ExecutionPlan) -> Option<&FileScanConfig> {
    let source: &dyn std::any::Any = plan
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .as_ref();
    source.downcast_ref::<FileScanConfig>()
}

/// What each partition of a tier scan reads: `None`, one partition that
/// reads every part whole; else one group of slices a partition.
pub(super) type Groups = Option<Vec<Vec<Slice>>>;

/// One tier's scan: what it reads and its filters.
#[derive(Debug, Clone, PartialEq)]
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
    /// executor's threads (a scan cut into slices reads only its own).
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

/// The tier scans of one table, as a leaf whose partitions are their
/// files (or one partition that reads them whole), that can travel (see
/// the module).
#[derive(Debug)]
pub struct TierScanExec {
    parts: Vec<Part>,
    schema: SchemaRef,
    /// What the scans planned here said of their rows (counts, sizes,
    /// column bounds from the Delta log): sent with the scan, so the
    /// scheduler's join choices see them as the local planner does.
    statistics: Arc<Statistics>,
    /// The files each partition reads.
    groups: Groups,
    /// At most this many rows a partition (a limit pushed into the scan).
    fetch: Option<usize>,
    properties: Arc<PlanProperties>,
    /// Rows read, per partition (a scheduler pairs each node of a stage
    /// with metrics: the carrier it holds has them too).
    metrics: ExecutionPlanMetricsSet,
    planned: Arc<tokio::sync::OnceCell<Vec<Arc<dyn ExecutionPlan>>>>,
    replanner: Option<Arc<Replanner>>,
}

/// One partition, bounded, no ordering claimed (a cluster's job as the
/// server sees it).
pub(super) fn properties(schema: &SchemaRef) -> Arc<PlanProperties> {
    partitions(schema, 1)
}

/// `n` partitions, bounded, no ordering claimed: a plan above must not
/// drop a sort for an order the scans planned again need not keep.
fn partitions(schema: &SchemaRef, n: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        Partitioning::UnknownPartitioning(n),
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
    /// The scans Delta planned for `parts` (on the planning machine), their
    /// files in `groups`.
    fn planned(
        parts: Vec<Part>,
        plans: Vec<Arc<dyn ExecutionPlan>>,
        schema: SchemaRef,
        groups: Groups,
    ) -> Self {
        Self {
            properties: partitions(&schema, groups.as_ref().map_or(1, Vec::len)),
            statistics: statistics_of(&plans, &schema),
            parts,
            schema,
            groups,
            fetch: None,
            metrics: ExecutionPlanMetricsSet::new(),
            planned: Arc::new(tokio::sync::OnceCell::new_with(Some(plans))),
            replanner: None,
        }
    }

    /// Scans an executor plans again when it first runs them.
    pub fn decoded(
        parts: Vec<Part>,
        schema: SchemaRef,
        statistics: Statistics,
        groups: Groups,
        fetch: Option<usize>,
        replanner: Arc<Replanner>,
    ) -> Self {
        Self {
            properties: partitions(&schema, groups.as_ref().map_or(1, Vec::len)),
            // Of the whole scan: a task's cut reads part of it.
            statistics: Arc::new(statistics.to_inexact()),
            parts,
            schema,
            groups,
            fetch,
            metrics: ExecutionPlanMetricsSet::new(),
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

    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    pub fn fetch(&self) -> Option<usize> {
        self.fetch
    }

    /// Whether Ballista can cut this scan into tasks (through its
    /// [`carrier`]): its files are listed.
    pub fn cut_by_files(&self) -> bool {
        self.groups.is_some()
    }

    /// The tier scans of `plans` (each a [`TierScanExec`] planned here) as
    /// one, group `i` of each in its partition `i`; `None` if one of them
    /// is something else.
    pub fn merged(plans: &[Arc<dyn ExecutionPlan>]) -> Option<Arc<dyn ExecutionPlan>> {
        let mut parts = Vec::new();
        let mut inner = Vec::new();
        let mut groups: Groups = Some(Vec::new());
        let schema = plans.first()?.schema();
        for p in plans {
            let scan = p.downcast_ref::<TierScanExec>()?;
            let first = parts.len();
            parts.extend(scan.parts.iter().cloned());
            inner.extend(scan.planned.get()?.iter().cloned());
            groups = match (groups, &scan.groups) {
                (Some(mut all), Some(these)) => {
                    for (i, g) in these.iter().enumerate() {
                        if all.len() <= i {
                            all.push(Vec::new());
                        }
                        all[i].extend(g.iter().map(|s| Slice {
                            part: s.part + first,
                            ..s.clone()
                        }));
                    }
                    Some(all)
                }
                _ => None,
            };
        }
        Some(Arc::new(Self::planned(parts, inner, schema, groups)))
    }

    /// The scans of every part, planned here or again on this executor.
    async fn inner(
        planned: &tokio::sync::OnceCell<Vec<Arc<dyn ExecutionPlan>>>,
        replanner: Option<Arc<Replanner>>,
        parts: &[Part],
        schema: &SchemaRef,
        context: &TaskContext,
    ) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
        Ok(planned
            .get_or_try_init(|| async {
                let r = replanner.ok_or_else(|| {
                    DataFusionError::Internal("a tier scan was neither planned nor decoded".into())
                })?;
                let mut plans = Vec::with_capacity(parts.len());
                for part in parts {
                    plans.push(r.plan(part, schema, context).await?);
                }
                Ok::<_, DataFusionError>(plans)
            })
            .await?
            .clone())
    }
}

/// The most slices a tier scan lists (each a path and range in the plan
/// sent to the scheduler): a scan of more files is read whole.
const MAX_SLICES: usize = 20_000;

/// The file groups of `plan`'s one file scan, as slices of part `part`;
/// `None` if it holds no file scan or several, if its partitions are not
/// its groups, or if it has more than [`MAX_SLICES`].
fn groups_of(plan: &Arc<dyn ExecutionPlan>, part: usize) -> Groups {
    let mut found: Vec<Vec<Vec<Slice>>> = Vec::new();
    let mut other = false;
    plan.apply(|node| {
        if node.is::<DataSourceExec>() {
            match file_scan(node.as_ref()) {
                // Its partitions are not its file groups (Delta declares its
                // own for deletion vectors): read whole.
                Some(config) if config.output_partitioning.is_some() => other = true,
                Some(config) => found.push(
                    config
                        .file_groups
                        .iter()
                        .map(|g| g.iter().map(|f| Slice::of(part, f)).collect())
                        .collect(),
                ),
                None => other = true,
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })
    .ok()?;
    if other || found.len() != 1 {
        return None;
    }
    let mut groups = found.pop()?;
    // One partition a group, or the groups are not what the scan's
    // partitions read; and a plan of a bounded size (every slice travels
    // to the scheduler, and to each task that reads the scan whole).
    let slices: usize = groups.iter().map(Vec::len).sum();
    if plan.output_partitioning().partition_count() != groups.len() || slices > MAX_SLICES {
        return None;
    }
    if groups.is_empty() {
        // No files: one partition that reads nothing.
        groups.push(Vec::new());
    }
    Some(groups)
}

/// `plan` (a part's scan) reading only `slices`, of its own files: its
/// file scan left with one group of them (each file as the scan planned it,
/// its range the slice's).
fn reading(plan: &Arc<dyn ExecutionPlan>, slices: &[&Slice]) -> Result<Arc<dyn ExecutionPlan>> {
    let mut replaced = 0;
    let read =
        plan.clone()
            .transform_up(|node| {
                let Some(config) = file_scan(node.as_ref()) else {
                    return Ok(Transformed::no(node));
                };
                let by_path: HashMap<String, &PartitionedFile> = config
                    .file_groups
                    .iter()
                    .flat_map(|g| g.iter())
                    .map(|f| (f.object_meta.location.to_string(), f))
                    .collect();
                let files = slices
                    .iter()
                    .map(|s| {
                        let f = by_path.get(&s.path).ok_or_else(|| {
                            DataFusionError::Execution(format!(
                                "the tier scan names {}, which its table version does not hold \
                             (do the scheduler, executors and server see the lake at the same \
                             paths?)",
                                s.path
                            ))
                        })?;
                        let mut f = (*f).clone();
                        f.range = s.range.map(|(start, end)| {
                            datafusion::datasource::listing::FileRange { start, end }
                        });
                        Ok(f)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let config = FileScanConfigBuilder::from(config.clone())
                    .with_file_groups(vec![FileGroup::new(files)])
                    .build();
                replaced += 1;
                Ok(Transformed::yes(
                    DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
                ))
            })
            .data()?;
    // Planned again, the scan must be the one whose files were listed: one
    // file scan (else every partition would read all of it).
    if replaced != 1 || read.output_partitioning().partition_count() != 1 {
        return Err(DataFusionError::Execution(format!(
            "a tier scan planned again on this executor holds {replaced} file scans, \
             not one: it cannot read its slices"
        )));
    }
    Ok(read)
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
    // Its files split for the cluster's partitions, as DataFusion splits a
    // local file scan.
    let plan = split(plan, state);
    let groups = groups_of(&plan, 0);
    Ok(Arc::new(TierScanExec::planned(
        vec![part],
        vec![plan],
        schema,
        groups,
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
        match &self.groups {
            Some(g) => {
                let files: usize = g.iter().map(Vec::len).sum();
                write!(f, ", {} partitions of {files} file ranges", g.len())?;
            }
            None => write!(f, ", read whole")?,
        }
        if let Some(n) = self.fetch {
            write!(f, ", fetch={n}")?;
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
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        match args.partition() {
            // One partition's share is not known.
            Some(_) if self.properties.partitioning.partition_count() > 1 => {
                Ok(Arc::new(Statistics::new_unknown(&self.schema)))
            }
            _ => Ok(self.statistics.clone()),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let count = self.properties.partitioning.partition_count();
        if partition >= count {
            return Err(DataFusionError::Internal(format!(
                "TierScanExec has no partition {partition} (it has {count})"
            )));
        }
        let planned = self.planned.clone();
        let replanner = self.replanner.clone();
        let parts = self.parts.clone();
        let schema = self.schema.clone();
        let slices = self.groups.as_ref().map(|g| g[partition].clone());
        let fetch = self.fetch;
        let stream = futures::stream::once(async move {
            let inner = TierScanExec::inner(&planned, replanner, &parts, &schema, &context).await?;
            let one: Arc<dyn ExecutionPlan> = match slices {
                // This partition's files, part by part.
                Some(slices) => {
                    let mut each = Vec::new();
                    for (i, plan) in inner.iter().enumerate() {
                        let mine: Vec<&Slice> = slices.iter().filter(|s| s.part == i).collect();
                        if !mine.is_empty() {
                            each.push(reading(plan, &mine)?);
                        }
                    }
                    match each.len() {
                        0 => Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
                            schema.clone(),
                        )),
                        1 => each.remove(0),
                        _ => Arc::new(CoalescePartitionsExec::new(UnionExec::try_new(each)?)),
                    }
                }
                // Every partition of every tier, on the executor's threads.
                None => {
                    let all: Arc<dyn ExecutionPlan> = match inner.len() {
                        1 => inner[0].clone(),
                        _ => UnionExec::try_new(inner)?,
                    };
                    if all.output_partitioning().partition_count() == 1 {
                        all
                    } else {
                        Arc::new(CoalescePartitionsExec::new(all))
                    }
                }
            };
            let one: Arc<dyn ExecutionPlan> = match fetch {
                Some(n) => Arc::new(LocalLimitExec::new(one, n)),
                None => one,
            };
            one.execute(0, context)
        })
        .try_flatten();
        let read = BaselineMetrics::new(&self.metrics, partition);
        let stream = stream.inspect_ok(move |b| read.record_output(b.num_rows()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream.boxed(),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests;

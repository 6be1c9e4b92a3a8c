//! A Delta scan that travels: one tier's table at a pinned version, with
//! the projection, filters and limit the statement gave it. On the machine
//! that plans the statement it holds the scan Delta planned; decoded on an
//! executor it plans the same scan again, from the same table version and
//! the same settings, when its first partition runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::config::ConfigOptions;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;

use crate::lake::{AsOf, Lake, Tier};
use crate::schema::Catalog;

/// What an executor needs to plan a tier scan again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanSpec {
    pub table: String,
    pub tier: Tier,
    /// The Delta version the planner read.
    pub version: u64,
    pub projection: Option<Vec<usize>>,
    pub limit: Option<usize>,
    /// The scan's partitions, as planned.
    pub partitions: usize,
    /// The partitions the optimiser split the files into, if it did.
    pub repartitioned: Option<usize>,
    /// The files (and byte ranges) each partition reads, as planned: a
    /// scan planned again may group the same files otherwise, and every
    /// task of a job must read its own partition's, each file once.
    pub files: Option<Vec<Vec<FileSlice>>>,
}

/// A file, or a byte range of one, that a partition reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSlice {
    pub path: String,
    pub range: Option<(i64, i64)>,
}

/// A scan that reads no files (Delta answers a count from the log's
/// statistics) in one partition: its partitions, planned again, need not
/// split the files as the planner's did.
fn one_partition_unless_files(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.output_partitioning().partition_count() > 1 && file_groups(&plan).is_none() {
        Arc::new(datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(plan))
    } else {
        plan
    }
}

/// The file groups of the (one) file scan in `plan`.
fn file_groups(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<Vec<FileSlice>>> {
    if let Some(config) = file_scan(plan) {
        return Some(
            config
                .file_groups
                .iter()
                .map(|g| {
                    g.files()
                        .iter()
                        .map(|f| FileSlice {
                            path: f.object_meta.location.to_string(),
                            range: f.range.as_ref().map(|r| (r.start, r.end)),
                        })
                        .collect()
                })
                .collect(),
        );
    }
    plan.children().into_iter().find_map(file_groups)
}

fn file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// `plan` with its file scan reading `groups` (each file as the plan
/// found it, with the planner's byte range).
fn impose_groups(
    plan: Arc<dyn ExecutionPlan>,
    groups: &[Vec<FileSlice>],
    spec: &ScanSpec,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
    plan.transform_down(|node| {
        let Some(config) = file_scan(&node) else {
            return Ok(Transformed::no(node));
        };
        let found: HashMap<String, &PartitionedFile> = config
            .file_groups
            .iter()
            .flat_map(|g| g.files())
            .map(|f| (f.object_meta.location.to_string(), f))
            .collect();
        let mut rebuilt = Vec::with_capacity(groups.len());
        for group in groups {
            let mut files = Vec::with_capacity(group.len());
            for slice in group {
                let f = found.get(&slice.path).ok_or_else(|| {
                    DataFusionError::Execution(format!(
                        "{} ({} tier, version {}): the planner read {}, which this executor's \
                         scan does not list",
                        spec.table,
                        spec.tier.name(),
                        spec.version,
                        slice.path
                    ))
                })?;
                let mut f = (*f).clone();
                f.range = slice
                    .range
                    .map(|(start, end)| datafusion::datasource::listing::FileRange { start, end });
                files.push(f);
            }
            rebuilt.push(FileGroup::new(files));
        }
        let mut config = config.clone();
        config.file_groups = rebuilt;
        Ok(Transformed::new(
            DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>,
            true,
            datafusion::common::tree_node::TreeNodeRecursion::Jump,
        ))
    })
    .data()
}

/// Where a decoded scan finds its table: the lake of the executor's
/// configuration, and the tables it opened (by table, tier and version:
/// a version never changes, so every task of a job shares one).
#[derive(Debug)]
pub struct Replanner {
    lake: Lake,
    catalog: Arc<Catalog>,
    opened: Mutex<HashMap<(String, Tier, u64), Opened>>,
}

/// A table version an executor opened, and its provider.
type Opened = (deltalake::DeltaTable, Arc<dyn TableProvider>);

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
        let key = (spec.table.clone(), spec.tier, spec.version);
        fn delta(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
            DataFusionError::External(Box::new(e))
        }
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
            .with_session(crate::lake::session::scan_session())
            .await
            .map_err(delta)?;
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if opened.len() >= 256 {
            opened.clear();
        }
        opened.insert(key, (table, provider.clone()));
        Ok(provider)
    }

    fn cached(&self, key: &(String, Tier, u64)) -> Option<Opened> {
        let opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        opened.get(key).cloned()
    }

    /// Plan `spec` again, as the planner did.
    async fn plan(
        &self,
        spec: &ScanSpec,
        filters: &[Expr],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = SessionStateBuilder::new()
            .with_config(ctx.session_config().clone())
            .with_runtime_env(ctx.runtime_env())
            .build();
        let provider = self.provider(spec, &state).await?;
        let mut plan = provider
            .scan(&state, spec.projection.as_ref(), filters, spec.limit)
            .await?;
        match &spec.files {
            Some(groups) => plan = impose_groups(plan, groups, spec)?,
            None => plan = one_partition_unless_files(plan),
        }
        let got = plan.output_partitioning().partition_count();
        if got != spec.partitions {
            return Err(DataFusionError::Execution(format!(
                "{} ({} tier, version {}): the scan planned again has {got} partitions, the \
                 planner's had {}; the executor's settings differ from the planner's",
                spec.table,
                spec.tier.name(),
                spec.version,
                spec.partitions
            )));
        }
        Ok(plan)
    }
}

/// One tier's Delta scan, as a leaf that can travel (see the module).
#[derive(Debug)]
pub struct TierScanExec {
    spec: ScanSpec,
    filters: Vec<Expr>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    planned: Arc<tokio::sync::OnceCell<Arc<dyn ExecutionPlan>>>,
    replanner: Option<Arc<Replanner>>,
}

fn properties(schema: &SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    // No ordering is claimed: a plan above must not drop a sort for an
    // order the scan planned again need not keep.
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

impl TierScanExec {
    /// The scan Delta planned for `spec` (on the planning machine).
    fn planned(spec: ScanSpec, filters: Vec<Expr>, plan: Arc<dyn ExecutionPlan>) -> Self {
        let schema = plan.schema();
        let cell = tokio::sync::OnceCell::new_with(Some(plan));
        Self {
            properties: properties(&schema, spec.partitions),
            spec,
            filters,
            schema,
            planned: Arc::new(cell),
            replanner: None,
        }
    }

    /// A scan an executor plans again when it first runs.
    pub fn decoded(
        spec: ScanSpec,
        filters: Vec<Expr>,
        schema: SchemaRef,
        replanner: Arc<Replanner>,
    ) -> Self {
        Self {
            properties: properties(&schema, spec.partitions),
            spec,
            filters,
            schema,
            planned: Arc::new(tokio::sync::OnceCell::new()),
            replanner: Some(replanner),
        }
    }

    pub fn spec(&self) -> &ScanSpec {
        &self.spec
    }

    pub fn filters(&self) -> &[Expr] {
        &self.filters
    }
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
    let plan = one_partition_unless_files(plan);
    let spec = ScanSpec {
        table: table.to_string(),
        tier,
        version,
        projection: projection.cloned(),
        limit,
        partitions: plan.output_partitioning().partition_count(),
        repartitioned: None,
        files: file_groups(&plan),
    };
    Ok(Arc::new(TierScanExec::planned(
        spec,
        filters.to_vec(),
        plan,
    )))
}

impl DisplayAs for TierScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if matches!(t, DisplayFormatType::Verbose)
            && let Some(inner) = self.planned.get()
        {
            let shown = datafusion::physical_plan::displayable(inner.as_ref()).indent(true);
            write!(
                f,
                "TierScanExec over [{}] ",
                shown.to_string().trim().replace('\n', " / ")
            )?;
        }
        write!(
            f,
            "TierScanExec: table={}, tier={}, version={}, partitions={}",
            self.spec.table,
            self.spec.tier.name(),
            self.spec.version,
            self.spec.partitions
        )?;
        if !self.filters.is_empty() {
            let shown: Vec<String> = self.filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", filters=[{}]", shown.join(", "))?;
        }
        if let Some(l) = self.spec.limit {
            write!(f, ", limit={l}")?;
        }
        if let Some(groups) = &self.spec.files {
            let n: usize = groups.iter().map(Vec::len).sum();
            write!(f, ", files={n}")?;
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

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    /// Files split into more partitions, as Delta's scan splits them; the
    /// executor splits its own scan the same way.
    fn repartitioned(
        &self,
        target_partitions: usize,
        config: &ConfigOptions,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(inner) = self.planned.get() else {
            return Ok(None);
        };
        // Only a scan of files is split: a split is replayed on the
        // executor as the planner's file ranges.
        if self.spec.files.is_none() {
            return Ok(None);
        }
        if self.spec.repartitioned.is_some() {
            return Ok(None);
        }
        let Some(split) = inner.repartitioned(target_partitions, config)? else {
            return Ok(None);
        };
        let mut spec = self.spec.clone();
        spec.repartitioned = Some(target_partitions);
        spec.partitions = split.output_partitioning().partition_count();
        spec.files = file_groups(&split);
        Ok(Some(Arc::new(Self::planned(
            spec,
            self.filters.clone(),
            split,
        ))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let planned = self.planned.clone();
        let replanner = self.replanner.clone();
        let spec = self.spec.clone();
        let filters = self.filters.clone();
        let schema = self.schema.clone();
        let stream = futures::stream::once(async move {
            let inner = planned
                .get_or_try_init(|| async {
                    let r = replanner.ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "the scan of {} was neither planned nor decoded",
                            spec.table
                        ))
                    })?;
                    r.plan(&spec, &filters, &context).await
                })
                .await?
                .clone();
            inner.execute(partition, context)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.boxed(),
        )))
    }
}

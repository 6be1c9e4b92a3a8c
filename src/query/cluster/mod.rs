//! Statements on an Apache Ballista cluster (`server.engine = "ballista"`).
//!
//! A principal's session is built as for a local query (the same secured
//! views, masks and row filters, see [`super::secured`]); only its planner
//! differs. The statement is planned here, physically, with every Delta
//! scan as a [`TierScanExec`] (table, tier, pinned version, projection,
//! filters, limit) and every row-filtered view as its whole plan; the plan
//! then goes to the scheduler, which cuts it into stages for the executors.
//! An executor plans each tier scan again from its table version; the masks
//! and filters are plain DataFusion expressions and functions registered by
//! name in every process, so the plan an executor runs still holds them.
//! Statements that read no lake table (`SELECT 1`, the catalogs) run here.

mod carrier;
mod codec;
mod job;
mod scan;
mod whole;

use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::extension::SessionConfigExt;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::analyze::AnalyzeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};

pub use codec::ClusterCodec;
pub use scan::{Part, Replanner, ScanSpec, TierScanExec, for_session};
pub use whole::OneTaskExec;

use crate::config::Config;
use crate::lake::Lake;
use crate::lake::session::OnCluster;
use crate::schema::Catalog;
use crate::security::FencedExec;

use super::QueryError;

/// The scheduler's URL from `host:port` (or `http://host:port`,
/// `df://host:port`).
pub fn scheduler_url(address: &str) -> Result<String, QueryError> {
    let a = address.trim();
    let bare = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("df://"))
        .unwrap_or(a)
        .trim_end_matches('/');
    let ok = bare
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        return Err(QueryError::Internal(format!(
            "server.scheduler_url {address:?} is not HOST:PORT (e.g. 127.0.0.1:50050)"
        )));
    }
    Ok(format!("http://{bare}"))
}

/// `ctx` with its statements sent to the scheduler at `scheduler`: the
/// same catalog, functions and settings, Ballista's settings added.
pub fn attach(ctx: SessionContext, scheduler: &str) -> Result<SessionContext, QueryError> {
    let url = scheduler_url(scheduler)?;
    let state = ctx.state();
    let mut config = state
        .config()
        .clone()
        .upgrade_for_ballista()
        .with_extension(Arc::new(OnCluster {
            scheduler: url.clone(),
        }));
    cluster_joins(&mut config, state.config().options())?;
    let inner = state.query_planner().clone();
    // The executors read text as plain strings and cannot decode the local
    // compaction of text read as views: that rule stays here.
    let mut rules: Vec<_> = state
        .physical_optimizers()
        .iter()
        .filter(|r| r.name() != crate::lake::views::CompactViews.name())
        .cloned()
        .collect();
    // Right after the joins' sides are chosen: a broadcast side that must
    // see every row of the other side does not broadcast.
    let at = rules
        .iter()
        .position(|r| r.name() == "join_selection")
        .map_or(0, |i| i + 1);
    rules.insert(at, Arc::new(NoOuterBroadcast));
    // Nor do they read text as views (the analyzer's other rules and its
    // function rewrites, the bounded built-ins, stay).
    let mut builder = SessionStateBuilder::new_from_existing(state);
    super::text::ReadTextAsViews::leave_out(&mut builder);
    let state = builder
        .with_config(config)
        .with_physical_optimizer_rules(rules)
        .with_query_planner(Arc::new(ClusterPlanner {
            inner,
            scheduler: url,
            codec: Arc::new(ClusterCodec::sender()),
        }))
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// A hash join that collects its left side whole (a broadcast on the
/// cluster) and keeps rows of that side by what the whole right side
/// matched (left outer, semi, anti and mark joins, full joins) runs
/// partitioned by its keys instead. In one process the partitions of the
/// right side share the build side and what it matched; on the cluster
/// each task has its own copy, so each would decide for itself: a golden
/// view (a fact LEFT JOIN its links, the fact the smaller side) came back
/// as one partial answer per task.
#[derive(Debug)]
struct NoOuterBroadcast;

impl PhysicalOptimizerRule for NoOuterBroadcast {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::common::JoinType as J;
        use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
        use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
        plan.transform_up(|p| {
            let Some(j) = p.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(p));
            };
            let keeps_build_rows = matches!(
                j.join_type(),
                J::Left | J::LeftSemi | J::LeftAnti | J::LeftMark | J::Full
            );
            if *j.partition_mode() != PartitionMode::CollectLeft || !keeps_build_rows {
                return Ok(Transformed::no(p));
            }
            let partitioned = j
                .builder()
                .with_partition_mode(PartitionMode::Partitioned)
                .build()?;
            Ok(Transformed::yes(
                Arc::new(partitioned) as Arc<dyn ExecutionPlan>
            ))
        })
        .data()
    }

    fn name(&self) -> &str {
        "no_outer_broadcast"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The largest join side sent whole to every task of the other side's
/// stage (broadcast; on the planning machine, collected), by the planner's
/// estimate: 64 MiB, or where no size is estimated 1 Mi rows. A Delta
/// scan's size is its files' (compressed): a side decoded can be several
/// times that, in each task that builds it. Locally DataFusion collects a
/// side only up to 1 MB or 128 Ki rows (one build shared by the threads
/// of one process); Ballista's own bound is 128 MB. A broadcast side is
/// hashed again by each task, a repartitioned one costs writing and
/// reading every row of both sides through shuffle files: at 10 million
/// customers the policies expiring in 30 days (a few hundred thousand)
/// broadcast to the scans of 26 million source links and 10 million
/// customers took that shape from 6.5 s to 1.9 s, the other shapes
/// unchanged; at 1 million the sides now broadcast (estimated from a
/// filter's default selectivity, often larger than that) cost two shapes
/// 10–20 %.
const BROADCAST_BYTES: usize = 64 << 20;
const BROADCAST_ROWS: usize = 1 << 20;

/// `config` (Ballista's settings added) with the cluster's joins: hash
/// joins as locally (Ballista sets its sessions to sort-merge joins, which
/// spill), whose memory bound is the same per partition as in the local
/// engine; a side broadcast up to [`BROADCAST_BYTES`] or
/// [`BROADCAST_ROWS`]. The server plans the joins; the scheduler's
/// planner, which cuts a job sent as a physical plan into stages, checks
/// the broadcasts again against the same bound. (The row bound and the
/// build-partition bound are read by Ballista's adaptive planner only,
/// which such a job does not go through today; they are set so that it
/// would choose the same.)
fn cluster_joins(
    config: &mut datafusion::prelude::SessionConfig,
    local: &datafusion::config::ConfigOptions,
) -> Result<(), QueryError> {
    let hash = local.optimizer.prefer_hash_join;
    let mut settings = vec![
        ("datafusion.optimizer.prefer_hash_join", hash.to_string()),
        (
            "datafusion.optimizer.hash_join_single_partition_threshold",
            BROADCAST_BYTES.to_string(),
        ),
        (
            "datafusion.optimizer.hash_join_single_partition_threshold_rows",
            BROADCAST_ROWS.to_string(),
        ),
        (
            ballista_core::config::BALLISTA_BROADCAST_JOIN_THRESHOLD_BYTES,
            BROADCAST_BYTES.to_string(),
        ),
        (
            ballista_core::config::BALLISTA_BROADCAST_JOIN_THRESHOLD_ROWS,
            BROADCAST_ROWS.to_string(),
        ),
    ];
    if hash {
        // No hash join would turn into a sort-merge join when the adaptive
        // planner runs it (it does past a 64 MiB build partition).
        settings.push((
            ballista_core::config::BALLISTA_HASH_JOIN_MAX_BUILD_PARTITION_BYTES,
            "0".to_string(),
        ));
    }
    for (key, value) in settings {
        config
            .options_mut()
            .set(key, &value)
            .map_err(|e| QueryError::Internal(format!("the cluster's setting {key}: {e}")))?;
    }
    Ok(())
}

/// Plans as the local planner does, then sends a plan that reads the lake
/// to the cluster.
struct ClusterPlanner {
    inner: Arc<dyn QueryPlanner + Send + Sync>,
    scheduler: String,
    codec: Arc<ClusterCodec>,
}

impl std::fmt::Debug for ClusterPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPlanner")
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

/// Whether `plan` reads a lake table (a tier scan, here or in a view).
pub fn reads_lake(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.is::<TierScanExec>() {
        return true;
    }
    if let Some(f) = plan.downcast_ref::<FencedExec>() {
        return reads_lake(f.inner());
    }
    if let Some(w) = plan.downcast_ref::<OneTaskExec>() {
        return reads_lake(w.inner());
    }
    plan.children().into_iter().any(reads_lake)
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        logical: &LogicalPlan,
        state: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.create_physical_plan(logical, state).await?;
        if !reads_lake(&plan) {
            return Ok(plan);
        }
        let send = |p: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
            Ok(Arc::new(ClusterExec::new(
                whole::unions_in_one_task(p)?,
                self.scheduler.clone(),
                self.codec.clone(),
            )))
        };
        // EXPLAIN ANALYZE: the statement runs on the cluster, its analysis
        // here (the rows and time of the whole job).
        if plan.is::<AnalyzeExec>() {
            let child = plan.children()[0].clone();
            return plan.replace_children(
                vec![send(child)?],
                datafusion::physical_plan::ReplaceChildrenOptions::new(
                    datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
                ),
            );
        }
        send(plan)
    }
}

/// A plan run on the cluster as one job, its result streamed back.
#[derive(Debug)]
pub struct ClusterExec {
    plan: Arc<dyn ExecutionPlan>,
    scheduler: String,
    codec: Arc<ClusterCodec>,
    properties: Arc<PlanProperties>,
}

impl ClusterExec {
    fn new(plan: Arc<dyn ExecutionPlan>, scheduler: String, codec: Arc<ClusterCodec>) -> Self {
        let properties = scan::properties(&plan.schema());
        Self {
            plan,
            scheduler,
            codec,
            properties,
        }
    }

    /// The plan the cluster runs.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }
}

impl DisplayAs for ClusterExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The scheduler's address is not shown: its port answers anyone.
        write!(f, "ClusterExec")?;
        if matches!(t, DisplayFormatType::Verbose) {
            let shown = datafusion::physical_plan::displayable(self.plan.as_ref()).indent(false);
            write!(f, "\n{shown}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ClusterExec {
    fn name(&self) -> &str {
        "ClusterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    opaque_leaf!();

    fn execute(
        &self,
        partition: usize,
        context: Arc<datafusion::execution::TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ClusterExec has one partition, not {partition}"
            )));
        }
        let plan = self.plan.clone();
        let scheduler = self.scheduler.clone();
        let codec = self.codec.clone();
        let config = context.session_config().clone();
        let session_id = context.session_id();
        let stream = futures::stream::once(async move {
            job::run(scheduler.clone(), plan, codec, session_id, config)
                .await
                .map_err(|e| on_cluster(&scheduler, e))
        })
        .try_flatten();
        let scheduler = self.scheduler.clone();
        let stream = stream.map_err(move |e| on_cluster(&scheduler, e));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.plan.schema(),
            stream.boxed(),
        )))
    }
}

/// A failure of the cluster (the scheduler unreachable, a job failed or
/// lost an executor) says it was the cluster's, and is the warehouse's
/// fault, never the statement's, unless the job failed on the statement's
/// own values (a division by zero, a cast of text that is no number).
fn on_cluster(scheduler: &str, e: DataFusionError) -> DataFusionError {
    use crate::error::{ErrorKind, Kinded};
    let DataFusionError::Execution(m) = &e else {
        return e;
    };
    if m.starts_with("the cluster") {
        return e;
    }
    // The scheduler's address goes to the server's log, not to the user.
    tracing::warn!(scheduler, "the cluster: {m}");
    if m.starts_with("tcp connect error") {
        return Kinded::datafusion_of(
            ErrorKind::Internal,
            format!("the cluster: cannot reach the scheduler ({m})").replace(scheduler, "…"),
        );
    }
    let statements = [
        "Divide by zero",
        "DivideByZero",
        "Cast error",
        "Cannot cast",
        "Arithmetic overflow",
    ];
    let kind = if statements.iter().any(|w| m.contains(w)) {
        ErrorKind::InvalidSql
    } else {
        ErrorKind::Internal
    };
    Kinded::datafusion_of(kind, format!("the cluster: {m}").replace(scheduler, "…"))
}

/// Every function a plan may name, as the server's sessions register them
/// (DataFusion's built-ins, the bounded ones that replace some of them,
/// the validators and the lake's masks): a scheduler and its executors
/// decode a plan's calls by name.
pub fn functions(
    config: &Config,
    masks: &crate::security::Masks,
) -> ballista_core::registry::BallistaFunctionRegistry {
    let ctx = super::member_context(config, Arc::new(RuntimeEnv::default()));
    masks.register(&ctx);
    let state = ctx.state();
    let mut registry = ballista_core::registry::BallistaFunctionRegistry::default();
    for (name, f) in state.scalar_functions() {
        registry.scalar_functions.insert(name.clone(), f.clone());
    }
    for (name, f) in state.aggregate_functions() {
        registry.aggregate_functions.insert(name.clone(), f.clone());
    }
    for (name, f) in state.window_functions() {
        registry.window_functions.insert(name.clone(), f.clone());
    }
    registry
}

/// What a scheduler or executor process of a lake shares: its functions
/// and the codec that decodes custlake's plan nodes against the lake.
pub struct Member {
    pub registry: Arc<ballista_core::registry::BallistaFunctionRegistry>,
    pub codec: Arc<ClusterCodec>,
}

impl Member {
    pub async fn new(
        config: &Config,
        lake: &Lake,
        catalog: Arc<Catalog>,
    ) -> Result<Self, QueryError> {
        let masks = crate::security::lake_masks(config, lake).await?;
        let registry = Arc::new(functions(config, &masks));
        let replanner = Arc::new(Replanner::new(lake.clone(), catalog));
        Ok(Self {
            registry,
            codec: Arc::new(ClusterCodec::receiver(replanner)),
        })
    }

    /// A scheduler's session for a job: the settings the client sent, the
    /// lake's functions.
    pub fn session(&self, config: datafusion::prelude::SessionConfig) -> Result<SessionState> {
        let r = &self.registry;
        Ok(SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(Arc::new(RuntimeEnv::default()))
            .with_scalar_functions(r.scalar_functions.values().cloned().collect())
            .with_aggregate_functions(r.aggregate_functions.values().cloned().collect())
            .with_window_functions(r.window_functions.values().cloned().collect())
            .build())
    }
}

/// Run a scheduler on `bind` until the process ends. An executor that
/// sent no heartbeat for `executor_timeout_s` is taken for lost: its tasks
/// run again elsewhere (a job fails after four failed attempts of a task).
pub async fn run_scheduler(
    member: Member,
    bind: std::net::SocketAddr,
    external_host: &str,
    executor_timeout_s: u64,
) -> Result<(), QueryError> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let member = Arc::new(member);
    let session = member.clone();
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: external_host.to_string(),
        executor_timeout_seconds: executor_timeout_s.max(2),
        expire_dead_executor_interval_seconds: (executor_timeout_s / 4).max(1),
        no_executors_grace_period_seconds: executor_timeout_s.max(2),
        override_physical_codec: Some(Arc::new(member.codec.for_scheduler())),
        override_session_builder: Some(Arc::new(move |c| session.session(c))),
        override_config_producer: Some(Arc::new(|| {
            datafusion::prelude::SessionConfig::new_with_ballista()
        })),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| QueryError::Internal(format!("the scheduler: {e}")))?;
    ballista_scheduler::scheduler_process::start_server(cluster, bind, Arc::new(config))
        .await
        .map_err(|e| QueryError::Internal(format!("the scheduler: {e}")))
}

/// Where an executor listens and whom it serves.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    pub scheduler: String,
    pub bind: std::net::SocketAddr,
    pub grpc_port: u16,
    pub external_host: Option<String>,
    pub work_dir: Option<String>,
    pub concurrent_tasks: usize,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_s: u64,
}

/// Run an executor until the process ends.
pub async fn run_executor(member: Member, settings: &ExecutorSettings) -> Result<(), QueryError> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let url = scheduler_url(&settings.scheduler)?;
    let (host, port) = url
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse::<u16>().unwrap_or(50050)))
        .unwrap_or_default();
    let config = ExecutorProcessConfig {
        bind_host: settings.bind.ip().to_string(),
        port: settings.bind.port(),
        grpc_port: settings.grpc_port,
        external_host: settings.external_host.clone(),
        scheduler_host: host,
        scheduler_port: port,
        work_dir: settings.work_dir.clone(),
        vcores: settings.concurrent_tasks,
        executor_heartbeat_interval_seconds: settings.heartbeat_s.max(1),
        override_function_registry: Some(member.registry.clone()),
        override_physical_codec: Some(member.codec.clone()),
        override_config_producer: Some(Arc::new(|| {
            datafusion::prelude::SessionConfig::new_with_ballista()
        })),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| QueryError::Internal(format!("the executor: {e}")))
}

#[cfg(test)]
mod tests {
    use ballista_core::extension::SessionConfigExt;
    use datafusion::prelude::{SessionConfig, SessionContext};

    #[test]
    fn a_cluster_session_hash_joins_and_broadcasts_only_small_sides() {
        let ctx = SessionContext::new_with_config(SessionConfig::new());
        let on = super::attach(ctx, "127.0.0.1:50050").unwrap();
        let state = on.state();
        let got = &state.config().options().optimizer;
        // Ballista's own defaults would be sort-merge joins, and a 128 MB
        // broadcast.
        assert!(got.prefer_hash_join);
        assert_eq!(
            got.hash_join_single_partition_threshold,
            super::BROADCAST_BYTES
        );
        assert_eq!(
            got.hash_join_single_partition_threshold_rows,
            super::BROADCAST_ROWS
        );
        let ballista = state.config().ballista_config();
        assert_eq!(
            ballista.broadcast_join_threshold_bytes(),
            super::BROADCAST_BYTES
        );
        assert_eq!(
            ballista.broadcast_join_threshold_rows(),
            super::BROADCAST_ROWS
        );
        assert_eq!(ballista.hash_join_max_build_partition_bytes(), 0);
    }
}

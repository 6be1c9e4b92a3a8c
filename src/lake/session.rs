//! DataFusion sessions over the lake: the session settings every context
//! shares, Delta's query planner (which Delta writes and merges need), and
//! the runtime whose memory pool bounds execution. The SQL functions are
//! registered on top by `query`.

use std::sync::Arc;

use crate::config::MemoryPool;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::delta_datafusion::planner::DeltaPlanner;

/// Marks a session whose plans run on a cluster (a SessionConfig
/// extension): each Delta scan is planned as a scan the executor can plan
/// again from its table, tier and version, and a secured view's plan is
/// planned whole, for the cluster, with the statement around it.
#[derive(Debug, Clone)]
pub struct OnCluster {
    /// The scheduler, `http://host:port`.
    pub scheduler: String,
}

/// The cluster `config`'s plans run on, if any.
pub fn on_cluster(config: &SessionConfig) -> Option<Arc<OnCluster>> {
    config.get_extension::<OnCluster>()
}

/// Session settings: `target_partitions` threads (0: one per core).
pub fn session_config(target_partitions: usize) -> SessionConfig {
    let mut sc = SessionConfig::new()
        .with_information_schema(true)
        // As deltalake's own sessions: hash-join IN-list pushdown can panic on
        // dictionary-encoded join keys on this DataFusion line.
        .set_usize("datafusion.optimizer.hash_join_inlist_pushdown_max_size", 0)
        .set_usize(
            "datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values",
            0,
        );
    if target_partitions > 0 {
        sc = sc.with_target_partitions(target_partitions);
    }
    sc
}

/// A context with Delta's query planner, whose joins yield (see
/// [`YieldingJoins`]) and whose text read as views is counted at the size
/// it holds (see [`super::views`]).
pub fn delta_context(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionContext {
    SessionContext::new_with_state(delta_state(config, runtime).build())
}

/// The state of [`delta_context`], to build on: a context that reads its
/// tables otherwise adds its own analyzer rules before these.
pub fn delta_state(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionStateBuilder {
    SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_query_planner(super::subqueries::ScalarSubqueriesFirst::new(
            DeltaPlanner::new(),
        ))
        .with_physical_optimizer_rule(Arc::new(YieldingJoins))
        .with_physical_optimizer_rule(Arc::new(super::views::CompactViews))
        .with_optimizer_rule(Arc::new(ConstantScanFilters))
}

/// A scan whose pushed-down filters include a constant that is not true
/// (`NULL`, `false`) reads nothing: it becomes an empty relation.
///
/// A filter on a column a secured view masks to NULL (`WHERE gender =
/// 'M'` for an analyst) becomes `NULL = 'M'`, folded to `NULL`, once it is
/// pushed through the view into the scan. Delta's scan accepted it as an
/// exact filter without applying it, so the query answered every row (and
/// `count(*)` the table's row count from statistics) where SQL gives none.
#[derive(Debug, Default)]
pub struct ConstantScanFilters;

impl datafusion::optimizer::OptimizerRule for ConstantScanFilters {
    fn name(&self) -> &str {
        "custlake_constant_scan_filters"
    }

    fn apply_order(&self) -> Option<datafusion::optimizer::ApplyOrder> {
        Some(datafusion::optimizer::ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _config: &dyn datafusion::optimizer::OptimizerConfig,
    ) -> datafusion::error::Result<Transformed<datafusion::logical_expr::LogicalPlan>> {
        use datafusion::logical_expr::{EmptyRelation, Expr, LogicalPlan};
        use datafusion::scalar::ScalarValue;
        let LogicalPlan::TableScan(scan) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let reads_nothing = scan.filters.iter().any(|f| match f {
            Expr::Literal(v, _) => v.is_null() || *v == ScalarValue::Boolean(Some(false)),
            _ => false,
        });
        if !reads_nothing {
            return Ok(Transformed::no(plan));
        }
        Ok(Transformed::yes(LogicalPlan::EmptyRelation(
            EmptyRelation {
                produce_one_row: false,
                schema: scan.projected_schema.clone(),
            },
        )))
    }
}

/// Wrap every operator that may emit more rows than it reads (joins,
/// unnest: DataFusion says its cardinality effect is unknown) in a
/// [`CooperativeExec`], which spends one unit of the task's scheduling
/// budget per batch and yields when it is spent.
///
/// DataFusion makes the scans cooperative, but a nested-loop or cross join
/// emits batch after batch from one probe batch without reading its input
/// again, and the join above it collects them all in one poll. Nothing then
/// returns to the runtime, so a query's timeout cannot fire and a cancelled
/// query's tasks cannot stop: a 16-way join of a 61-row table ran 42 s past
/// a 2 s timeout. With the wrapper such a plan yields every 128 batches and
/// its timeout stops it. `CooperativeExec` is one of DataFusion's own plan
/// nodes, so the plan still serialises.
#[derive(Debug, Default)]
pub struct YieldingJoins;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(coop) = node.downcast_ref::<CooperativeExec>()
                && coop.input().is::<CooperativeExec>()
            {
                // Applied twice: one wrapper is enough.
                return Ok(Transformed::yes(coop.input().clone()));
            }
            let multiplies = !node.children().is_empty()
                && matches!(node.cardinality_effect(), CardinalityEffect::Unknown);
            if multiplies {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "custlake_yielding_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A runtime whose memory pool holds `memory_limit_mb` (operators spill to
/// disk beyond it); one per process is shared by every query, with its
/// cache of Parquet footers and page indexes (`metadata_cache_mb`).
pub fn runtime(
    memory_limit_mb: u64,
    metadata_cache_mb: u64,
) -> Result<Arc<RuntimeEnv>, datafusion::error::DataFusionError> {
    runtime_with(MemoryPool::Fair, memory_limit_mb, metadata_cache_mb)
}

/// A runtime whose pool of `memory_limit_mb` shares it as `pool` says (an exhausted
/// pool's error names its five largest consumers).
pub fn runtime_with(
    pool: MemoryPool,
    memory_limit_mb: u64,
    metadata_cache_mb: u64,
) -> Result<Arc<RuntimeEnv>, datafusion::error::DataFusionError> {
    use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
    let bytes = (memory_limit_mb as usize).saturating_mul(1024 * 1024);
    let top = std::num::NonZeroUsize::new(5).expect("five");
    let pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool> = match pool {
        MemoryPool::Fair => Arc::new(FairSpillPool::new(bytes)),
        MemoryPool::Greedy => Arc::new(TrackConsumersPool::new(GreedyMemoryPool::new(bytes), top)),
    };
    RuntimeEnvBuilder::new()
        .with_memory_pool(pool)
        .with_metadata_cache_limit((metadata_cache_mb as usize).saturating_mul(1024 * 1024))
        .build_arc()
}

/// How a table's scans read text columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Text {
    /// Plain `Utf8`, copied wherever a row is taken: what a statement's
    /// reader (HTTP, CLI, PostgreSQL and Flight clients, the cluster's
    /// executors) receives, so every query context reads text this way.
    #[default]
    Plain,
    /// `Utf8View`: a join, filter or aggregate takes a 16-byte view, not
    /// the string, and keys of up to twelve bytes (customer and source
    /// ids, codes) live in the view itself. For the whole-book jobs that
    /// write their own tables (scores, lists: a score over a million
    /// customers 12.85 -> 11.9 s) and the quality rules (a tenth of their
    /// CPU was strings copied through three joins). What the memory pool
    /// counts for such rows stays what they hold: see [`super::views`].
    Views,
}

/// The session whose settings Delta scans take: strings read as `text`.
pub fn scan_session(text: Text) -> Arc<datafusion::execution::SessionState> {
    type Once = std::sync::OnceLock<Arc<datafusion::execution::SessionState>>;
    static PLAIN: Once = std::sync::OnceLock::new();
    static VIEWS: Once = std::sync::OnceLock::new();
    let once = match text {
        Text::Plain => &PLAIN,
        Text::Views => &VIEWS,
    };
    once.get_or_init(|| {
        let mut config = session_config(0);
        config
            .options_mut()
            .execution
            .parquet
            .schema_force_view_types = text == Text::Views;
        Arc::new(SessionStateBuilder::new().with_config(config).build())
    })
    .clone()
}

/// The context writers use (staging reads, appends, merges, deletes).
pub fn write_context() -> SessionContext {
    delta_context(session_config(0), Arc::new(RuntimeEnv::default()))
}

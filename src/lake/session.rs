//! DataFusion sessions over the lake: the session settings every context
//! shares, Delta's query planner (which Delta writes and merges need), and
//! the runtime whose memory pool bounds execution. The SQL functions are
//! registered on top by `query`.

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::delta_datafusion::planner::DeltaPlanner;

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

/// A context with Delta's query planner.
pub fn delta_context(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_query_planner(DeltaPlanner::new())
        .build();
    SessionContext::new_with_state(state)
}

/// A runtime whose memory pool holds `memory_limit_mb` (operators spill to
/// disk beyond it); one per process is shared by every query, with its
/// cache of Parquet footers and page indexes (`metadata_cache_mb`).
pub fn runtime(
    memory_limit_mb: u64,
    metadata_cache_mb: u64,
) -> Result<Arc<RuntimeEnv>, datafusion::error::DataFusionError> {
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(
            (memory_limit_mb as usize).saturating_mul(1024 * 1024),
        )))
        .with_metadata_cache_limit((metadata_cache_mb as usize).saturating_mul(1024 * 1024))
        .build_arc()
}

/// The session whose settings Delta scans take: strings read as plain
/// `Utf8`, not views. Rows a hash join takes from its build side as views
/// point into the build side's whole string buffers, and sorts and
/// aggregates count those buffers once per batch against the memory pool:
/// a whole-book job (scores, lists) then ran out of a 4 GB pool while
/// holding 1.5 GB. Plain strings are copied where taken.
pub fn scan_session() -> Arc<datafusion::execution::SessionState> {
    static SESSION: std::sync::OnceLock<Arc<datafusion::execution::SessionState>> =
        std::sync::OnceLock::new();
    SESSION
        .get_or_init(|| {
            let mut config = session_config(0);
            config
                .options_mut()
                .execution
                .parquet
                .schema_force_view_types = false;
            Arc::new(SessionStateBuilder::new().with_config(config).build())
        })
        .clone()
}

/// The context writers use (staging reads, appends, merges, deletes).
pub fn write_context() -> SessionContext {
    delta_context(session_config(0), Arc::new(RuntimeEnv::default()))
}

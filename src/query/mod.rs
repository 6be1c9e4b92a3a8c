//! The query layer: a DataFusion `SessionContext` with every lake table
//! registered, the domain validators as SQL functions, and a read-only guard.

pub mod named;
pub mod tiered;
mod udf;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement;
use deltalake::delta_datafusion::planner::DeltaPlanner;

use crate::config::Config;
use crate::lake::{Lake, LakeError};
use crate::schema::{Catalog, TableDef};
use deltalake::DeltaTable;

pub use udf::register_udfs;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("SQL: {0}")]
    Sql(String),
    #[error(
        "only read-only statements are allowed (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE); got {0}"
    )]
    NotReadOnly(String),
    #[error(transparent)]
    Lake(Box<LakeError>),
    #[error("{0}")]
    Execution(Box<datafusion::error::DataFusionError>),
}

impl From<LakeError> for QueryError {
    fn from(e: LakeError) -> Self {
        Self::Lake(Box::new(e))
    }
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Self::Execution(Box::new(e))
    }
}

fn session_config(target_partitions: usize) -> SessionConfig {
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

/// A context with Delta's query planner (needed for Delta writes and merges).
fn delta_context(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_query_planner(DeltaPlanner::new())
        .build();
    let ctx = SessionContext::new_with_state(state);
    register_udfs(&ctx);
    ctx
}

/// The runtime queries share: memory bounded by the configured pool
/// (operators spill to disk beyond it) and the cache of Parquet footers.
pub fn runtime(config: &Config) -> Result<Arc<RuntimeEnv>, QueryError> {
    Ok(RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(
            (config.query.memory_limit_mb as usize).saturating_mul(1024 * 1024),
        )))
        .build_arc()?)
}

/// A context for queries over the lake, on a runtime of its own.
pub fn context(config: &Config) -> Result<SessionContext, QueryError> {
    Ok(context_on(config, runtime(config)?))
}

/// A context for one query on a shared runtime (the server's: one memory
/// pool for every running query, Parquet footers read once).
pub fn context_on(config: &Config, runtime: Arc<RuntimeEnv>) -> SessionContext {
    delta_context(session_config(config.query.target_partitions), runtime)
}

/// The context writers use (staging reads, appends, merges).
pub fn write_context() -> SessionContext {
    delta_context(session_config(0), Arc::new(RuntimeEnv::default()))
}

/// Register every table that exists in the lake under its name. Returns the
/// names registered.
pub async fn register_lake(
    ctx: &SessionContext,
    lake: &Lake,
    catalog: &Catalog,
) -> Result<Vec<String>, QueryError> {
    register_lake_cached(ctx, lake, catalog, &TableCache::default()).await
}

/// Register every table as it was at a version or time (Delta time
/// travel; tiered tables also take their watermarks as of that time).
/// Tables that did not exist then are left out.
pub async fn register_lake_as_of(
    ctx: &SessionContext,
    lake: &Lake,
    catalog: &Catalog,
    as_of: &crate::lake::AsOf,
) -> Result<Vec<String>, QueryError> {
    let mut names = Vec::new();
    for def in &catalog.tables {
        let registered = if has_moved(lake, def, as_of.time()).await? {
            match tiered_table(lake, def, Some(as_of)).await? {
                Some(t) => {
                    ctx.register_table(def.name.as_str(), Arc::new(t))?;
                    true
                }
                None => false,
            }
        } else if let Some(t) = lake
            .open_at(def, crate::lake::Tier::Hot, Some(as_of))
            .await?
        {
            t.update_datafusion_session(&ctx.state())
                .map_err(|e| QueryError::Sql(e.to_string()))?;
            let provider = t
                .table_provider()
                .await
                .map_err(|e| QueryError::Sql(format!("table {}: {e}", def.name)))?;
            ctx.register_table(def.name.as_str(), provider)?;
            true
        } else {
            false
        };
        if registered {
            names.push(def.name.clone());
        }
    }
    register_golden_views(ctx, &names).await?;
    Ok(names)
}

/// Whether a tiered table's rows have started to move (as of `at`): until
/// then its hot part is the whole table, registered as a plain Delta table.
async fn has_moved(
    lake: &Lake,
    def: &TableDef,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<bool, QueryError> {
    Ok(def.tiered
        && def.partition.is_some()
        && !crate::lake::catalog::watermarks(lake, &def.name, at)
            .await?
            .value
            .all_hot())
}

/// The provider of a tiered table whose rows have started to move.
async fn tiered_table(
    lake: &Lake,
    def: &TableDef,
    as_of: Option<&crate::lake::AsOf>,
) -> Result<Option<tiered::TieredTable>, QueryError> {
    // Every load creates the hot part first; without it there is nothing.
    let Some(hot) = lake.open_at(def, crate::lake::Tier::Hot, as_of).await? else {
        return Ok(None);
    };
    let schema = hot
        .table_provider()
        .await
        .map_err(|e| QueryError::Sql(format!("table {}: {e}", def.name)))?
        .schema();
    Ok(tiered::TieredTable::new(
        lake.clone(),
        def.clone(),
        schema,
        as_of.cloned(),
    ))
}

/// [`register_lake`] through a [`TableCache`].
pub async fn register_lake_cached(
    ctx: &SessionContext,
    lake: &Lake,
    catalog: &Catalog,
    cache: &TableCache,
) -> Result<Vec<String>, QueryError> {
    let mut names = Vec::new();
    for def in &catalog.tables {
        if cache.register(ctx, lake, def).await? {
            names.push(def.name.clone());
        }
    }
    register_golden_views(ctx, &names).await?;
    Ok(names)
}

/// Delta tables and their providers kept between queries, for a long-lived
/// process (the server). A query then checks each table's log for a newer
/// commit instead of replaying the whole log, and reuses the provider while
/// the version is unchanged; a newer commit is applied incrementally, so new
/// data is visible to the next query.
#[derive(Default)]
pub struct TableCache {
    tables: tokio::sync::Mutex<HashMap<String, CachedTable>>,
    tiered: tokio::sync::Mutex<HashMap<String, Arc<tiered::TieredTable>>>,
}

struct CachedTable {
    table: DeltaTable,
    provider: Arc<dyn TableProvider>,
}

impl CachedTable {
    async fn new(table: DeltaTable, name: &str) -> Result<Self, QueryError> {
        let provider = table
            .table_provider()
            .await
            .map_err(|e| QueryError::Sql(format!("table {name}: {e}")))?;
        Ok(Self { table, provider })
    }
}

impl TableCache {
    /// Register the current version of a table in `ctx`; `false` if the
    /// table does not exist.
    async fn register(
        &self,
        ctx: &SessionContext,
        lake: &Lake,
        def: &TableDef,
    ) -> Result<bool, QueryError> {
        if has_moved(lake, def, None).await? {
            let mut tiered = self.tiered.lock().await;
            if let Some(t) = tiered.get(&def.name) {
                ctx.register_table(def.name.as_str(), t.clone())?;
                return Ok(true);
            }
            let Some(t) = tiered_table(lake, def, None).await? else {
                return Ok(false);
            };
            let t = Arc::new(t);
            tiered.insert(def.name.clone(), t.clone());
            ctx.register_table(def.name.as_str(), t)?;
            return Ok(true);
        }
        // Untiered, or tiered with every row still hot: one Delta table.
        let mut tables = self.tables.lock().await;
        if let Some(cached) = tables.get_mut(&def.name) {
            let loaded = cached.table.version();
            match cached.table.get_latest_version().await {
                Ok(latest) if Some(latest) == loaded => {}
                Ok(latest) if loaded.is_some_and(|v| latest > v) => {
                    let mut table = cached.table.clone();
                    table
                        .update_incremental(None)
                        .await
                        .map_err(|e| QueryError::Sql(format!("table {}: {e}", def.name)))?;
                    *cached = CachedTable::new(table, &def.name).await?;
                }
                // Gone, or replaced by an older log: open it afresh.
                _ => {
                    tables.remove(&def.name);
                }
            }
        }
        if !tables.contains_key(&def.name) {
            let Some(table) = lake.open(def).await? else {
                return Ok(false);
            };
            let cached = CachedTable::new(table, &def.name).await?;
            tables.insert(def.name.clone(), cached);
        }
        let Some(cached) = tables.get(&def.name) else {
            return Ok(false);
        };
        cached
            .table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| QueryError::Sql(e.to_string()))?;
        ctx.register_table(def.name.as_str(), cached.provider.clone())?;
        Ok(true)
    }
}

/// The fact tables that reference source customers, and the views that
/// give each row its golden `customer_id` through `customer_xref`.
pub const GOLDEN_VIEWS: [(&str, &str); 5] = [
    ("customer_policy", "policy"),
    ("customer_claim", "claim"),
    ("customer_payment", "payment"),
    ("customer_interaction", "interaction"),
    ("customer_consent", "consent"),
];

/// `customer_<fact>`: every row of the fact with the golden customer id of
/// its source customer, so merges and splits show in every fact without
/// rewriting it.
async fn register_golden_views(ctx: &SessionContext, names: &[String]) -> Result<(), QueryError> {
    if !names.iter().any(|n| n == "customer_xref") {
        return Ok(());
    }
    for (view, fact) in GOLDEN_VIEWS {
        if !names.iter().any(|n| n == fact) {
            continue;
        }
        let df = ctx
            .sql(&format!(
                "SELECT x.customer_id, f.* FROM {fact} f LEFT JOIN customer_xref x \
                 ON x.source_system = f.source_system AND x.source_id = f.source_customer_id"
            ))
            .await?;
        ctx.register_table(view, df.into_view())?;
    }
    Ok(())
}

/// Refuse anything but a single read-only statement. DataFusion's own
/// parser is used, so its extensions (`CREATE EXTERNAL TABLE`, `COPY`) are
/// recognised; an `EXPLAIN` is checked for what it explains, since
/// `EXPLAIN ANALYZE` runs it.
pub fn check_read_only(sql: &str) -> Result<(), QueryError> {
    let statements = DFParser::parse_sql(sql).map_err(|e| QueryError::Sql(e.to_string()))?;
    if statements.len() != 1 {
        return Err(QueryError::Sql(format!(
            "expected exactly one statement, got {}",
            statements.len()
        )));
    }
    read_only(&statements[0])
}

fn refuse(text: String) -> QueryError {
    let word = text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    QueryError::NotReadOnly(word)
}

fn read_only(statement: &DFStatement) -> Result<(), QueryError> {
    match statement {
        DFStatement::Explain(e) => read_only(&e.statement),
        DFStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_)
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowVariable { .. }
            | Statement::ExplainTable { .. } => Ok(()),
            Statement::Explain { statement, .. } => {
                read_only(&DFStatement::Statement(statement.clone()))
            }
            other => Err(refuse(other.to_string())),
        },
        other => Err(refuse(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_pass_the_guard() {
        for ok in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
        ] {
            check_read_only(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "DROP TABLE policy",
            "INSERT INTO policy VALUES (1)",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "COPY policy TO '/tmp/x.csv'",
            "SELECT 1; DROP TABLE policy",
            "EXPLAIN ANALYZE INSERT INTO policy SELECT * FROM policy",
            "CREATE TABLE t AS SELECT 1",
        ] {
            assert!(check_read_only(bad).is_err(), "{bad}");
        }
    }
}

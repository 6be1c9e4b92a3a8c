//! The query layer: a DataFusion `SessionContext` with every lake table
//! registered, the domain validators as SQL functions, and a read-only guard.

/// The methods of a leaf that holds its own plan or rows: no children shown to
/// an optimiser, none replaced, no expressions offered.
macro_rules! opaque_leaf {
    () => {
        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            Vec::new()
        }

        fn apply_expressions(
            &self,
            _: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_plan::PhysicalExpr>,
            ) -> datafusion::common::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }

        fn with_new_children(
            self: std::sync::Arc<Self>,
            _: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
        ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
        {
            Ok(self)
        }
    };
}

mod bounded;
pub mod cluster;
mod current;
mod fallback;
mod guard;
mod keyindex;
pub mod named;
mod named_calls;
mod rowcache;
pub mod sandbox;
mod secured;
mod text;
pub mod tiered;
mod udf;

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionContext;

use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::lake::session::Text;
use crate::lake::{AsOf, Lake, LakeError, Layout};
use crate::schema::{Catalog, TableDef};

pub use current::TableCache;
pub use guard::{
    Checked, WireChecked, WireKind, check_read_only, check_size, check_wire, on_parse_stack,
    plan_read_only, read_only_options, wire_read_only,
};
pub use named_calls::{
    named_calls_only, named_calls_only_sql, register_named_calls, register_named_calls_in_memory,
};
pub use secured::{Secured, Tables, secured};
pub use udf::register_udfs;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The text is not SQL.
    #[error("SQL: {0}")]
    Syntax(#[source] Box<DataFusionError>),
    #[error("expected exactly one statement, got {0}")]
    Statements(usize),
    #[error(
        "only read-only statements are allowed (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE); got {0}"
    )]
    NotReadOnly(String),
    /// Over the size or depth limits.
    #[error("{0}")]
    TooComplex(String),
    /// Who may read what.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// Ran past its deadline.
    #[error("{0}")]
    Timeout(String),
    /// The query layer's own fault.
    #[error("{0}")]
    Internal(String),
    /// Opening or reading the lake's tables.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// Planning or running the statement.
    #[error(transparent)]
    DataFusion(Box<DataFusionError>),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        Self::DataFusion(Box::new(e))
    }
}

impl Classify for QueryError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Syntax(_) | Self::Statements(_) => ErrorKind::InvalidSql,
            Self::NotReadOnly(_) => ErrorKind::NotReadOnly,
            Self::TooComplex(_) => ErrorKind::TooComplex,
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::Internal(_) => ErrorKind::Internal,
            Self::Security(e) => e.kind(),
            Self::Lake(e) => e.kind(),
            Self::DataFusion(e) => crate::error::datafusion_kind(e),
        }
    }
}

/// The lake tables a plan reads (its scans, views inlined), sorted.
pub fn tables_read(plan: &datafusion::logical_expr::LogicalPlan) -> Vec<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let mut out = std::collections::BTreeSet::new();
    let _ = plan.apply_with_subqueries(|p| {
        if let LogicalPlan::TableScan(scan) = p {
            out.insert(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out.into_iter().collect()
}

/// Whether an expression anywhere in `plan`, its subqueries included,
/// satisfies `found`.
pub fn any_expr(
    plan: &datafusion::logical_expr::LogicalPlan,
    mut found: impl FnMut(&datafusion::logical_expr::Expr) -> bool,
) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut hit = false;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                hit = found(e);
                Ok(if hit {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })
    });
    hit
}

/// A context for queries over the lake, on a runtime of its own, with
/// the SQL functions registered.
pub fn context(config: &Config) -> Result<SessionContext, QueryError> {
    Ok(context_on(config, runtime(config)?))
}

/// The runtime queries share (see [`crate::lake::session::runtime`]).
pub fn runtime(config: &Config) -> Result<Arc<RuntimeEnv>, QueryError> {
    Ok(crate::lake::session::runtime(
        config.query.memory_limit_mb,
        config.query.metadata_cache_mb,
    )?)
}

/// An executed plan with each operator's rows and times, as `EXPLAIN
/// ANALYZE` shows them (what a job logs at debug level for a slow step).
pub fn plan_with_metrics(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> String {
    datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan)
        .indent(true)
        .to_string()
}

/// A context for one query on a shared runtime (the server's: one memory
/// pool for every running query, Parquet footers read once).
pub fn context_on(config: &Config, runtime: Arc<RuntimeEnv>) -> SessionContext {
    let mut session = crate::lake::session::session_config(config.query.target_partitions);
    if config.query.key_index_mb > 0 {
        session = session.with_extension(keyindex::KeyIndexes::shared(config.query.key_index_mb));
        if config.query.row_cache_mb > 0 {
            session = session.with_extension(rowcache::RowCache::shared(config.query.row_cache_mb));
        }
    }
    // A statement reads text as views and answers as planned (see `text`).
    let analyzer = std::iter::once(Arc::new(text::ReadTextAsViews) as Arc<_>)
        .chain(datafusion::optimizer::Analyzer::new().rules)
        .collect();
    let mut state =
        crate::lake::session::delta_state(session, runtime).with_analyzer_rules(analyzer);
    // What reads views runs again as planned if it runs out of memory.
    if let Some(inner) = state.query_planner().take() {
        state = state.with_query_planner(fallback::Planner::new(inner));
    }
    let ctx = SessionContext::new_with_state(state.build());
    // The bounded built-ins first: a later built-in named like one of
    // ours cannot replace ours.
    bounded::register_bounded(&ctx, config.query.max_value_mb);
    register_udfs(&ctx);
    ctx
}

/// A context with every function a statement may call, as a cluster
/// member decodes them (no planning budget for constants: see
/// `bounded::register_bounded_with`).
pub fn member_context(config: &Config, runtime: Arc<RuntimeEnv>) -> SessionContext {
    let ctx = crate::lake::session::delta_context(
        crate::lake::session::session_config(config.query.target_partitions),
        runtime,
    );
    bounded::register_bounded_with(&ctx, config.query.max_value_mb, false);
    register_udfs(&ctx);
    ctx
}

/// Give `ctx` a fresh planning budget for the size-making functions (a
/// context that plans several statements in turn, as `custlake sql --runs`
/// does, starts each one with the whole budget).
pub fn fresh_budget(ctx: &SessionContext) {
    bounded::reset_budget(ctx);
}

/// Register every table that exists in the lake under its name, as it
/// is now or (`as_of`) as it was then (Delta time travel; tiered tables
/// also take their watermarks as of that time; tables that did not exist
/// then are left out). Returns the names registered.
pub async fn register_lake(
    ctx: &SessionContext,
    lake: &Lake,
    catalog: &Catalog,
    as_of: Option<&AsOf>,
) -> Result<Vec<String>, QueryError> {
    let names = register_tables(ctx, lake, catalog, as_of, Text::Plain, None).await?;
    register_golden_views(ctx, &names).await?;
    Ok(names)
}

/// The lake's tables alone (no golden views), as [`register_lake`].
pub(crate) async fn register_tables(
    ctx: &SessionContext,
    lake: &Lake,
    catalog: &Catalog,
    as_of: Option<&AsOf>,
    text: Text,
    only: Option<&[&str]>,
) -> Result<Vec<String>, QueryError> {
    let wanted = |def: &&TableDef| only.is_none_or(|o| o.contains(&def.name.as_str()));
    // Each table's log is read at the same time as the others' (a
    // context names about twenty tables; one after another they took a
    // quarter of a second on local disk, longer on an object store).
    // Every open runs to its end even when another fails: one dropped
    // half way leaves the Delta kernel's log reading on a blocking thread,
    // which panics when the process ends under it.
    let opened = futures::future::join_all(catalog.tables.iter().filter(wanted).map(async |def| {
        if built_table(def)?.is_some() {
            return Ok::<_, QueryError>(None);
        }
        let layout = lake.layout(def, as_of).await?;
        let provider = provider(lake, def, &layout, text).await?;
        Ok(provider.map(|p| (layout, p)))
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    let mut names = Vec::new();
    for (def, opened) in catalog.tables.iter().filter(wanted).zip(opened) {
        if let Some(built) = built_table(def)? {
            ctx.register_table(def.name.as_str(), built)?;
            names.push(def.name.clone());
        } else if let Some((layout, provider)) = opened {
            register_table(ctx, def, &layout, provider)?;
            names.push(def.name.clone());
        }
    }
    Ok(names)
}

/// Register one declared table as it is now (empty when the lake holds
/// none yet).
pub async fn register_one(
    ctx: &SessionContext,
    lake: &Lake,
    def: &crate::schema::TableDef,
) -> Result<(), QueryError> {
    let layout = lake.layout(def, None).await?;
    match provider(lake, def, &layout, Text::Plain).await? {
        Some(p) => register_table(ctx, def, &layout, p)?,
        None => register_empty(ctx, def)?,
    }
    Ok(())
}

/// Register `def` as an empty table (a declared table the lake does not
/// hold yet reads as empty, not as "not found").
pub fn register_empty(
    ctx: &SessionContext,
    def: &crate::schema::TableDef,
) -> Result<(), QueryError> {
    ctx.register_table(def.name.as_str(), empty_table(def)?)?;
    Ok(())
}

/// A table with `def`'s columns and no rows.
fn empty_table(def: &crate::schema::TableDef) -> Result<Arc<dyn TableProvider>, QueryError> {
    Ok(Arc::new(datafusion::datasource::MemTable::try_new(
        def.arrow_schema(),
        vec![vec![]],
    )?))
}

/// Every declared table: the lake's as they are now (`as_of` `None`) or
/// were then, and those the lake does not hold yet as empty ones (for
/// the rules of analytics and quality: no steward decision, no roster).
pub async fn register_declared(
    ctx: &SessionContext,
    lake: &Lake,
    catalog: &Catalog,
    as_of: Option<&AsOf>,
) -> Result<(), QueryError> {
    register_declared_as(ctx, lake, catalog, as_of, Text::Plain, None).await
}

/// [`register_declared`] with the scans reading text as `text`, and
/// (`only`) for the declared tables named there alone: a job that knows
/// what it reads does not replay the logs of the others (the lists', the
/// audit log's and the quality tables' grow with every run). A name in
/// `only` that is not declared is refused.
pub async fn register_declared_as(
    ctx: &SessionContext,
    lake: &Lake,
    catalog: &Catalog,
    as_of: Option<&AsOf>,
    text: Text,
    only: Option<&[&str]>,
) -> Result<(), QueryError> {
    for name in only.unwrap_or_default() {
        catalog
            .table(name)
            .map_err(|e| QueryError::Internal(e.to_string()))?;
    }
    let names = register_tables(ctx, lake, catalog, as_of, text, only).await?;
    for def in catalog
        .tables
        .iter()
        .filter(|d| only.is_none_or(|o| o.contains(&d.name.as_str())) && !names.contains(&d.name))
    {
        register_empty(ctx, def)?;
    }
    Ok(())
}

/// The provider of a table built from the declarations rather than
/// stored (`code_list`: the standard codes and their labels).
fn built_table(def: &TableDef) -> Result<Option<Arc<dyn TableProvider>>, QueryError> {
    use datafusion::arrow::array::{RecordBatch, StringArray};
    static CODES: std::sync::OnceLock<Result<RecordBatch, String>> = std::sync::OnceLock::new();
    if !crate::schema::BUILT_TABLES.contains(&def.name.as_str()) {
        return Ok(None);
    }
    let batch = CODES
        .get_or_init(|| {
            let catalog = Catalog::embedded().map_err(|e| e.to_string())?;
            let mut cols: [Vec<String>; 4] = Default::default();
            for (set, codes) in &catalog.codes {
                for code in codes {
                    let (zh, en) = catalog.labels[set][code].clone();
                    for (c, v) in cols.iter_mut().zip([set.clone(), code.clone(), zh, en]) {
                        c.push(v);
                    }
                }
            }
            RecordBatch::try_new(
                def.arrow_schema(),
                cols.into_iter()
                    .map(|c| Arc::new(StringArray::from(c)) as _)
                    .collect(),
            )
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(QueryError::Internal)?;
    let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    Ok(Some(Arc::new(table)))
}

/// The provider of a table's layout (`None`: the table is missing).
async fn provider(
    lake: &Lake,
    def: &TableDef,
    layout: &Layout,
    text: Text,
) -> Result<Option<Arc<dyn TableProvider>>, QueryError> {
    let on = |e: DataFusionError| LakeError::query(&def.name, e);
    let delta = |table: &deltalake::DeltaTable, text: Text| {
        table
            .table_provider()
            .with_session(crate::lake::session::scan_session(text))
    };
    Ok(match layout {
        Layout::Missing => None,
        Layout::Single(table) => {
            let one = |inner| tiered::OneTier::new(def, table.version(), inner);
            let read = one(delta(table, text).await.map_err(on)?);
            // A table read as plain text carries its twin read as views:
            // a statement's plan reads that one and casts its answer back
            // (see `text`).
            Some(Arc::new(match text {
                Text::Plain => read.with_views(one(delta(table, Text::Views).await.map_err(on)?)),
                Text::Views => read,
            }))
        }
        Layout::Tiered { hot, as_of } => {
            let tiered = |text| async move {
                let schema = delta(hot, text).await.map_err(on)?.schema();
                Ok::<_, QueryError>(tiered::TieredTable::new(
                    lake.clone(),
                    def.clone(),
                    schema,
                    as_of.clone(),
                    text,
                ))
            };
            let read = tiered(text).await?;
            match (read, text) {
                (Some(read), Text::Plain) => match tiered(Text::Views).await? {
                    Some(views) => Some(read.with_views(views)),
                    None => Some(read),
                },
                (read, _) => read,
            }
            .map(|t| Arc::new(t) as Arc<dyn TableProvider>)
        }
    })
}

/// The one way a table enters a context: its provider under its name,
/// and its store known to the context's runtime.
fn register_table(
    ctx: &SessionContext,
    def: &TableDef,
    layout: &Layout,
    provider: Arc<dyn TableProvider>,
) -> Result<(), QueryError> {
    if let Layout::Single(table) = layout {
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| LakeError::Delta {
                table: def.name.clone(),
                source: Box::new(e),
            })?;
    }
    ctx.register_table(def.name.as_str(), provider)?;
    Ok(())
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
    register_golden_views_where(ctx, names, |_| true).await?;
    Ok(())
}

/// The golden views `wanted` names, over the tables `names` holds;
/// returns the views registered.
pub(crate) async fn register_golden_views_where(
    ctx: &SessionContext,
    names: &[String],
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<String>, QueryError> {
    let mut out = Vec::new();
    if !names.iter().any(|n| n == "customer_xref") {
        return Ok(out);
    }
    for (view, fact) in GOLDEN_VIEWS {
        if !names.iter().any(|n| n == fact) || !wanted(view) {
            continue;
        }
        let df = ctx
            .sql(&format!(
                "SELECT x.customer_id, f.* FROM {fact} f LEFT JOIN customer_xref x \
                 ON x.source_key = f.source_key"
            ))
            .await?;
        ctx.register_table(view, df.into_view())?;
        out.push(view.to_string());
    }
    Ok(out)
}

/// What an EXPLAIN would show of where the lake keeps its files: each
/// tier root's path as its object store names a file under it (a local
/// root's path without its leading `/`, an S3 root's key prefix), and the
/// tier's name that replaces it.
pub fn plan_path_prefixes(lake: &Lake) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = crate::lake::Tier::ALL
        .iter()
        .map(|&t| {
            let path = lake.root(t).path().trim_matches('/');
            (format!("{path}/"), format!("{}/", t.name()))
        })
        .filter(|(path, _)| path != "/")
        .collect();
    // The longest first: a root inside another is replaced as itself.
    out.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    out
}

/// An EXPLAIN's rows with the lake's paths replaced by tier names
/// (`hot/customer/part-….parquet`): a plan tells what is read, never where
/// the server keeps it.
pub fn redact_plan_paths(
    batch: &datafusion::arrow::array::RecordBatch,
    prefixes: &[(String, String)],
) -> Result<datafusion::arrow::array::RecordBatch, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
    use datafusion::arrow::datatypes::DataType;
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8 => {
                let strings: StringArray = c
                    .as_string::<i32>()
                    .iter()
                    .map(|v| {
                        v.map(|s| {
                            prefixes
                                .iter()
                                .fold(s.to_string(), |s, (path, tier)| s.replace(path, tier))
                        })
                    })
                    .collect();
                Arc::new(strings) as ArrayRef
            }
            _ => c.clone(),
        })
        .collect::<Vec<_>>();
    datafusion::arrow::array::RecordBatch::try_new(batch.schema(), columns)
}

/// [`redact_plan_paths`] over a stream of an EXPLAIN's rows.
pub fn redacted_plan(
    stream: datafusion::execution::SendableRecordBatchStream,
    prefixes: Vec<(String, String)>,
) -> datafusion::execution::SendableRecordBatchStream {
    use futures::StreamExt;
    let schema = stream.schema();
    Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            stream.map(move |b| {
                b.and_then(|b| redact_plan_paths(&b, &prefixes).map_err(DataFusionError::from))
            }),
        ),
    )
}

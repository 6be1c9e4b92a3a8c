//! Secured views: for one principal, each table it may read as a view
//! over the raw table with its row filter and masks inside the view's
//! plan, registered under the table's own name in a context that holds
//! nothing else. No SQL run in that context can reach a raw column or a
//! filtered row: the raw tables are not in it.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::Column;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::prelude::{Expr, SessionContext, col};

use crate::config::Access;
use crate::schema::{Catalog, FieldType, Level, Mask, TableDef};

use super::mask::Masks;
use super::policy::Role;
use super::{Principal, SecurityError};

/// What one column of a secured view shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnAccess {
    pub name: String,
    pub access: Access,
}

/// The columns of `def` a role sees and how (absent ones left out); the
/// columns of the stored table that `def` does not declare are L4.
pub fn columns(role: &Role, def: &TableDef, stored: &[String]) -> Vec<ColumnAccess> {
    stored
        .iter()
        .filter_map(|name| {
            let level = def.field(name).map_or(Level::L4, |f| f.level);
            let access = role.access(&def.name, name, level);
            (access != Access::Absent).then(|| ColumnAccess {
                name: name.clone(),
                access,
            })
        })
        .collect()
}

/// A secured view: `SELECT <masked columns> FROM <table> AS t WHERE
/// <row filter>` over the raw table registered in `base`.
async fn view(
    base: &SessionContext,
    def: &TableDef,
    principal: &Principal,
    role: &Role,
    masks: &Masks,
) -> Result<Option<Arc<dyn TableProvider>>, SecurityError> {
    let name = &def.name;
    let filter = role.row_filter(name).map(|f| principal.render(f));
    let sql = match &filter {
        Some(f) => format!("SELECT * FROM {name} AS t WHERE {f}"),
        None => format!("SELECT * FROM {name} AS t"),
    };
    let df = base.sql(&sql).await.map_err(|e| {
        SecurityError::Config(format!("roles.{}.row_filters for {name}: {e}", role.name))
    })?;
    let schema = df.schema().clone();
    let stored: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let visible = columns(role, def, &stored);
    if visible.is_empty() {
        return Ok(None);
    }
    let exprs: Vec<Expr> = visible
        .iter()
        .map(|c| {
            let column = col(Column::new(Some("t"), c.name.as_str()));
            let e = match c.access {
                Access::Clear | Access::Absent => column,
                Access::Masked => {
                    let arrow = schema
                        .field_with_unqualified_name(&c.name)
                        .map(|f| f.data_type().clone())
                        .unwrap_or(DataType::Utf8);
                    match def.field(&c.name) {
                        Some(f) => masks.apply(&f.mask, &f.ty, column, &arrow),
                        None => masks.apply(&Mask::Null, &FieldType::String, column, &arrow),
                    }
                }
            };
            e.alias(c.name.as_str())
        })
        .collect();
    let view = df.select(exprs)?;
    if filter.is_none() {
        // No rows to hide: a plain view, so the statement's predicates are
        // pushed into the scan (they see only masked values).
        return Ok(Some(Arc::new(AsTable(view.into_view()))));
    }
    Ok(Some(Arc::new(Fenced::new(view.into_unoptimized_plan()))))
}

/// A view with a row filter, as a table the optimiser cannot see into:
/// the statement's own predicates stay above it, so they only ever run on
/// rows the filter let through. (Inlined, a predicate would be pushed below
/// the filter, into the raw scan or under a semi-join, and an error it
/// raises on a hidden row — `1/0` when a hidden customer's id matches —
/// would tell that the row exists.)
#[derive(Debug)]
pub(super) struct Fenced {
    plan: LogicalPlan,
    schema: SchemaRef,
}

impl Fenced {
    fn new(plan: LogicalPlan) -> Self {
        let schema = Arc::new(plan.schema().as_arrow().clone());
        Self { plan, schema }
    }
}

#[async_trait::async_trait]
impl TableProvider for Fenced {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// To the principal it is the table itself (`\dt` lists it).
    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let plan = match projection {
            Some(p) => {
                let cols: Vec<Expr> = p
                    .iter()
                    .map(|i| col(Column::from_name(self.schema.field(*i).name())))
                    .collect();
                LogicalPlanBuilder::from(self.plan.clone())
                    .project(cols)?
                    .build()?
            }
            None => self.plan.clone(),
        };
        // Planned and optimised as a whole here; the outer plan's
        // optimiser sees a leaf (re-optimising an optimised join would trip
        // over its dynamic filters, and must not move predicates in).
        let inner = match (
            crate::lake::session::on_cluster(state.config()),
            state
                .as_any()
                .downcast_ref::<datafusion::execution::SessionState>(),
        ) {
            // On a cluster the session's planner sends whole statements to
            // the scheduler: the view is planned here, as part of the
            // statement it is in, and travels inside it.
            // It is one partition there: Ballista cuts a stage's leaves
            // down to each task's partitions only for leaves it knows, so
            // one task reads the whole view (its partitions on the
            // executor's threads).
            (Some(_), Some(session)) => {
                use datafusion::physical_plan::ExecutionPlanProperties;
                use datafusion::physical_planner::PhysicalPlanner;
                let optimized = session.optimize(&plan)?;
                let inner = datafusion::physical_planner::DefaultPhysicalPlanner::default()
                    .create_physical_plan(&optimized, session)
                    .await?;
                if inner.output_partitioning().partition_count() > 1 {
                    Arc::new(
                        datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(
                            inner,
                        ),
                    )
                } else {
                    inner
                }
            }
            _ => state.create_physical_plan(&plan).await?,
        };
        Ok(Arc::new(FencedExec { inner }))
    }
}

/// A lake table's secured view as the principal sees it: the table itself
/// (catalogs such as `information_schema` and `pg_catalog` list it as a
/// table; the golden views stay views). Everything else is the view's.
#[derive(Debug)]
struct AsTable(Arc<dyn TableProvider>);

#[async_trait::async_trait]
impl TableProvider for AsTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&'_ self) -> Option<std::borrow::Cow<'_, LogicalPlan>> {
        self.0.get_logical_plan()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.0.scan(state, projection, filters, limit).await
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: datafusion::catalog::ScanArgs<'a>,
    ) -> datafusion::error::Result<datafusion::catalog::ScanResult> {
        self.0.scan_with_args(state, args).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        self.0.supports_filters_pushdown(filters)
    }
}

/// The physical side of [`Fenced`]: its plan, as a leaf. A cluster's codec
/// carries it whole (its plan, row filter and masks included) to the
/// executors.
#[derive(Debug)]
pub struct FencedExec {
    inner: Arc<dyn ExecutionPlan>,
}

impl FencedExec {
    /// The view's plan as a leaf (as a codec decodes it).
    pub fn new(inner: Arc<dyn ExecutionPlan>) -> Self {
        Self { inner }
    }

    /// The view's plan.
    pub fn inner(&self) -> &Arc<dyn ExecutionPlan> {
        &self.inner
    }
}

impl DisplayAs for FencedExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecuredViewExec")
    }
}

impl ExecutionPlan for FencedExec {
    fn name(&self) -> &str {
        "SecuredViewExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> datafusion::error::Result<
            datafusion::common::tree_node::TreeNodeRecursion,
        >,
    ) -> datafusion::error::Result<datafusion::common::tree_node::TreeNodeRecursion> {
        // A leaf to the outer plan: none of its expressions are offered.
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn statistics_from_inputs(
        &self,
        _: &[Arc<datafusion::common::Statistics>],
        args: &datafusion::physical_plan::statistics::StatisticsArgs,
    ) -> datafusion::error::Result<Arc<datafusion::common::Statistics>> {
        // The view's own estimates (its masks and row filter applied), for
        // the join choices of the plan around it.
        datafusion::physical_plan::statistics::StatisticsContext::new()
            .compute(self.inner.as_ref(), args)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }
}

/// The principal's schema: the secured view of each table its role reads
/// (and the golden views over them), built when a statement first names
/// it, so a statement pays only for the tables it reads. It replaces the
/// default schema of the principal's context; the raw tables stay in
/// `base`, which the principal's context does not hold.
pub struct SecuredSchema {
    base: SessionContext,
    tables: Vec<TableDef>,
    /// `customer_<fact>` views: (view, fact).
    golden: Vec<(String, String)>,
    principal: Principal,
    role: Role,
    masks: Masks,
    built: tokio::sync::Mutex<HashMap<String, Option<Arc<dyn TableProvider>>>>,
}

impl std::fmt::Debug for SecuredSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecuredSchema")
            .field("principal", &self.principal.user)
            .field("role", &self.role.name)
            .field("tables", &self.table_names())
            .finish_non_exhaustive()
    }
}

impl SecuredSchema {
    /// The schema of `principal` over the tables of `raw` (each registered
    /// in `base`) that its role reads, and the golden views `golden`
    /// names ((view, fact) pairs, each over its fact and `customer_xref`).
    pub fn new(
        base: SessionContext,
        catalog: &Catalog,
        raw: &[String],
        golden: &[(&str, &str)],
        principal: &Principal,
        role: &Role,
        masks: &Masks,
    ) -> Self {
        let tables: Vec<TableDef> = catalog
            .tables
            .iter()
            .filter(|d| role.reads(&d.name) && raw.contains(&d.name))
            .cloned()
            .collect();
        let has = |n: &str| tables.iter().any(|d| d.name == n);
        let golden = golden
            .iter()
            .filter(|(view, fact)| role.reads(view) && has(fact) && has("customer_xref"))
            .map(|(v, f)| (v.to_string(), f.to_string()))
            .collect();
        Self {
            base,
            tables,
            golden,
            principal: principal.clone(),
            role: role.clone(),
            masks: masks.clone(),
            built: Default::default(),
        }
    }

    async fn build(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, SecurityError> {
        if let Some(def) = self.tables.iter().find(|d| d.name == name) {
            return view(&self.base, def, &self.principal, &self.role, &self.masks).await;
        }
        let Some((_, fact)) = self.golden.iter().find(|(v, _)| v == name) else {
            return Ok(None);
        };
        // Over the secured fact and the secured cross-reference, so the
        // golden view is masked and filtered as they are.
        let (Some(f), Some(x)) = (
            Box::pin(self.secured(fact)).await?,
            Box::pin(self.secured("customer_xref")).await?,
        ) else {
            return Ok(None);
        };
        // Joined with the DataFrame API over the two providers: nothing is
        // registered anywhere, so golden views never collide.
        let x = self.base.read_table(x)?.select(vec![
            col("customer_id").alias("__customer_id"),
            col("source_key").alias("__x_key"),
        ])?;
        let f = self.base.read_table(f)?;
        let fact_cols: Vec<Expr> = f
            .schema()
            .fields()
            .iter()
            .map(|c| col(Column::from_name(c.name())))
            .collect();
        let mut out = vec![col("__customer_id").alias("customer_id")];
        out.extend(fact_cols);
        let df = f
            .join(
                x,
                datafusion::common::JoinType::Left,
                &["source_key"],
                &["__x_key"],
                None,
            )?
            .select(out)?;
        Ok(Some(df.into_view()))
    }

    /// The secured view of `name` (built once per session).
    async fn secured(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, SecurityError> {
        let mut built = self.built.lock().await;
        if let Some(t) = built.get(name) {
            return Ok(t.clone());
        }
        drop(built);
        let t = self.build(name).await?;
        built = self.built.lock().await;
        built.insert(name.to_string(), t.clone());
        Ok(t)
    }
}

#[async_trait::async_trait]
impl SchemaProvider for SecuredSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|d| d.name.clone())
            .chain(self.golden.iter().map(|(v, _)| v.clone()))
            .collect()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        self.secured(name)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|d| d.name == name) || self.golden.iter().any(|(v, _)| v == name)
    }
}

//! A statement reads text as views and answers it as plain strings.
//!
//! The lake's tables are declared to statements with text as `Utf8`: what
//! every reader (HTTP, PostgreSQL, Flight SQL, the CLI, exports) receives
//! and what `information_schema` and `pg_catalog` show. Read that way,
//! every join, filter and aggregate copies each string it takes; read as
//! views (`Utf8View`, see [`crate::lake::session::Text::Views`]) it takes
//! a 16-byte view, and keys of up to twelve bytes (customer and source ids,
//! codes) live in the view itself.
//!
//! [`ReadTextAsViews`], the first analyzer rule of a statement's session,
//! gives both: each scan of a lake table reads its twin that reads text as
//! views, the plan is typed again (type coercion casts what meets a view:
//! a literal, a `VALUES` row, a function taking `Utf8`), and the
//! statement's answer is cast back to the types it was planned with. Only the rows answered are copied, once.
//!
//! - Only a statement that joins, groups, windows or removes duplicates is
//!   changed: one that filters and projects rows (a lookup, an export)
//!   would copy every string it answers all the same.
//! - What a statement writes (`COPY`) gets the types it was planned with.
//! - A statement it changes keeps its plan as planned beside the one
//!   reading views, and runs it if reading views runs out of memory before
//!   the first row (see [`super::fallback`]): views are larger than short
//!   plain strings, and a hash join's build side cannot spill.
//! - A cluster's sessions leave the rule out: their executors read plain
//!   strings.
//! - The physical plan counts view columns at the size they hold (see
//!   [`crate::lake::views`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, Result};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, TableScan, TableScanBuilder, cast};
use datafusion::optimizer::AnalyzerRule;
use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;

use super::fallback::ViewsElsePlanned;
use super::tiered::{OneTier, TieredTable};

/// See the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct ReadTextAsViews;

impl ReadTextAsViews {
    pub(crate) const NAME: &'static str = "custlake_read_text_as_views";

    /// `builder`'s analyzer without this rule (its other rules and function
    /// rewrites stay): statements of the session it builds read plain
    /// strings.
    pub(crate) fn leave_out(builder: &mut SessionStateBuilder) {
        if let Some(analyzer) = builder.analyzer() {
            analyzer.rules.retain(|r| r.name() != Self::NAME);
        }
    }
}

impl AnalyzerRule for ReadTextAsViews {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        // Analysed already (a client that optimises a statement, then has
        // it planned, which analyses it again).
        if super::fallback::holds_node(&plan) {
            return Ok(plan);
        }
        match plan {
            // What a statement writes gets the types it was planned with.
            LogicalPlan::Copy(mut copy) => {
                copy.input = Arc::new(answered(Arc::unwrap_or_clone(copy.input), config)?);
                Ok(LogicalPlan::Copy(copy))
            }
            LogicalPlan::Dml(mut dml) => {
                dml.input = Arc::new(answered(Arc::unwrap_or_clone(dml.input), config)?);
                Ok(LogicalPlan::Dml(dml))
            }
            // Definitions and session statements read nothing.
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) | LogicalPlan::DescribeTable(_) => {
                Ok(plan)
            }
            // Run as views first, as planned if that runs out of memory
            // (see `super::fallback`).
            plan => match answered(plan.clone(), config)? {
                views if views == plan => Ok(plan),
                views => Ok(ViewsElsePlanned::plan(views, plan)),
            },
        }
    }
}

/// `plan` reading views, typed, its answer cast back to `plan`'s own types.
fn answered(plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
    if !worth_reading_views(&plan) {
        return Ok(plan);
    }
    let planned = plan.schema().clone();
    // Typed here, so that the answer's types are known before they are
    // cast back (a `UNION` or `CASE` whose first branch is a literal, a
    // list of texts, may come out as views only once typed); the session's
    // own type coercion, after this rule, then finds nothing to change.
    let read = read_views(plan)?;
    if !read.transformed {
        return Ok(read.data);
    }
    let read = TypeCoercion::new().analyze(read.data, config)?;
    let same = read.schema().fields().len() == planned.fields().len()
        && read
            .schema()
            .fields()
            .iter()
            .zip(planned.fields().iter())
            .all(|(now, was)| now.data_type() == was.data_type());
    if same {
        return Ok(read);
    }
    cast_back(read, &planned)
}

/// `plan` with every scan of a lake table that has a views twin reading
/// the twin (type coercion then types every node above it again).
fn read_views(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    plan.transform_up_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = &node
            && let Some(swapped) = twin(scan)?
        {
            return Ok(Transformed::yes(LogicalPlan::TableScan(swapped)));
        }
        Ok(Transformed::no(node))
    })
}

/// `scan` reading its table's views twin, if its table has one and the
/// scan reads text (a scan of numbers and dates alone reads the same
/// either way, and left as it is the statement keeps one plan: see
/// `super::fallback`).
fn twin(scan: &TableScan) -> Result<Option<TableScan>> {
    let reads_text = scan.projected_schema.fields().iter().any(|f| {
        matches!(
            f.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
        )
    });
    if !reads_text {
        return Ok(None);
    }
    let Ok(provider) = source_as_provider(&scan.source) else {
        return Ok(None);
    };
    let views = if let Some(t) = provider.downcast_ref::<OneTier>() {
        t.views()
    } else if let Some(t) = provider.downcast_ref::<TieredTable>() {
        t.views()
    } else {
        None
    };
    let Some(views) = views else {
        return Ok(None);
    };
    TableScanBuilder::new(scan.table_name.clone(), provider_as_source(views))
        .with_projection(scan.projection.clone())
        .with_filters(scan.filters.clone())
        .with_fetch(scan.fetch)
        .with_statistics_requests(scan.statistics_requests.clone())
        .build()
        .map(Some)
}

/// `plan`'s answer with each column cast to its type in `planned` (the
/// same columns, in order, under the same names). A column planned as
/// `Null` (a parameter bound after planning heads a `UNION`: its type is
/// known only once typed) gets the type it has now, views as plain.
fn cast_back(plan: LogicalPlan, planned: &DFSchemaRef) -> Result<LogicalPlan> {
    let exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .zip(planned.iter())
        .map(|((q, now), (pq, was))| {
            let column = Expr::Column(datafusion::common::Column::from((q, now)));
            let wanted = match (was.data_type(), now.data_type()) {
                (DataType::Null, DataType::Utf8View) => DataType::Utf8,
                (DataType::Null, DataType::BinaryView) => DataType::Binary,
                (DataType::Null, now) => now.clone(),
                (was, _) => was.clone(),
            };
            if now.data_type() == &wanted {
                column
            } else {
                cast(column, wanted).alias_qualified(pq.cloned(), was.name().as_str())
            }
        })
        .collect();
    Projection::try_new(exprs, Arc::new(plan)).map(LogicalPlan::Projection)
}

/// Whether `plan` joins, groups, windows or removes duplicates, where
/// views save copying, and reading views keeps its types coherent:
///
/// - A statement that only filters and projects rows (a lookup, an
///   export) reads plain strings as planned: read as views they would be
///   copied all the same when cast back.
/// - A recursive query's work table keeps the types it was planned with,
///   and a correlated subquery's references to the outer row carry theirs:
///   neither would follow the scans' new types, so such plans read plain
///   strings.
fn worth_reading_views(plan: &LogicalPlan) -> bool {
    let (mut combines, mut recursive) = (false, false);
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Join(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Window(_)
            | LogicalPlan::Distinct(_) => combines = true,
            LogicalPlan::RecursiveQuery(_) => recursive = true,
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    combines
        && !recursive
        && !super::any_expr(plan, |e| matches!(e, Expr::OuterReferenceColumn(..)))
}

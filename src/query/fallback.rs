//! A statement that runs out of memory reading text as views runs again
//! as planned, reading plain strings.
//!
//! A view takes 16 bytes a value where a short plain string takes four and
//! its length, and a hash join's build side cannot spill: at 10 million
//! customers the build sides of "counts by type × province × product
//! line" (33 million policies' keys) fit the shipped 4 GiB read as plain
//! strings and not as views. Views are the faster reading whenever they
//! fit, so a statement first runs reading them (see [`super::text`]); if
//! that run fails for memory before it has answered a row, it runs again
//! as planned. Once a row is answered the error is the client's, as
//! before.
//!
//! - [`ViewsElsePlanned`], the logical node [`super::text::ReadTextAsViews`]
//!   puts at the root of a statement it changes, holds both plans as
//!   inputs, so both are typed, optimised and given a prepared
//!   statement's parameters with the statement.
//! - [`Planner`] plans the views input and wraps it in
//!   [`PlannedAgainExec`], which keeps the other input (optimised, not yet
//!   planned: a statement that fits pays nothing for it) and plans it only
//!   if it is needed. Elsewhere (inside `EXPLAIN`) the node is its views
//!   input.
//! - The failed run's streams are dropped before the second run starts:
//!   its tasks stop as they next send, and what they held returns to the
//!   pool (waited for: see [`settle`]). What a plan's nodes keep while the
//!   plan lives (a broadcast join's build side, small by design) stays
//!   while the caller keeps the executed plan.
//! - The second run is planned in the session without the rule, so a
//!   statement whose scalar subqueries are answered first (and the
//!   statement optimised again) reads plain strings all through.
//! - The node answers one partition (the views plan's merged): a
//!   statement's answer is read as one stream anyway, and a secured view
//!   that joins is repartitioned by the statement around it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{CardinalityEffect, PlanProperties};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    execute_stream,
};
use futures::{StreamExt, TryStreamExt};

use crate::error::{ErrorKind, datafusion_kind};

/// A statement read as views (the first input) and as planned (the
/// second), with the views input's answer (the same types: see
/// [`super::text`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Hash)]
pub(crate) struct ViewsElsePlanned {
    views: LogicalPlan,
    planned: LogicalPlan,
}

impl ViewsElsePlanned {
    pub(crate) fn plan(views: LogicalPlan, planned: LogicalPlan) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(Self { views, planned }),
        })
    }

    fn of(plan: &LogicalPlan) -> Option<&Self> {
        match plan {
            LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<Self>(),
            _ => None,
        }
    }
}

impl UserDefinedLogicalNodeCore for ViewsElsePlanned {
    fn name(&self) -> &str {
        "ViewsElsePlanned"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.views, &self.planned]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.views.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ViewsElsePlanned: runs the first input (text read as views), \
             the second (as planned) if the first runs out of memory before its first row"
        )
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let Ok([views, planned]) = <[LogicalPlan; 2]>::try_from(inputs) else {
            return Err(DataFusionError::Internal(
                "ViewsElsePlanned takes two inputs".into(),
            ));
        };
        if !exprs.is_empty() {
            return Err(DataFusionError::Internal(
                "ViewsElsePlanned takes no expressions".into(),
            ));
        }
        Ok(Self { views, planned })
    }
}

/// The session's query planner around `inner`: see the module.
#[derive(Debug)]
pub(crate) struct Planner {
    inner: Arc<dyn QueryPlanner + Send + Sync>,
}

impl Planner {
    pub(crate) fn new(inner: Arc<dyn QueryPlanner + Send + Sync>) -> Arc<Self> {
        Arc::new(Self { inner })
    }
}

#[async_trait]
impl QueryPlanner for Planner {
    async fn create_physical_plan(
        &self,
        logical: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(node) = ViewsElsePlanned::of(logical) {
            let views = self
                .inner
                .create_physical_plan(&node.views, session)
                .await?;
            let Some(state) = session.as_any().downcast_ref::<SessionState>() else {
                return Ok(views);
            };
            return Ok(Arc::new(PlannedAgainExec::new(
                views,
                node.planned.clone(),
                Arc::new(state.clone()),
                Arc::clone(&self.inner),
            )));
        }
        if !holds_node(logical) {
            return self.inner.create_physical_plan(logical, session).await;
        }
        // Inside `EXPLAIN`: the plan that runs first.
        let views = logical
            .clone()
            .transform_down(|node| match ViewsElsePlanned::of(&node) {
                Some(n) => Ok(Transformed::yes(n.views.clone())),
                None => Ok(Transformed::no(node)),
            })?
            .data;
        self.inner.create_physical_plan(&views, session).await
    }
}

/// Whether `plan` holds a [`ViewsElsePlanned`] (not looking into its
/// subqueries: the node is only ever put at a statement's root).
pub(crate) fn holds_node(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found = ViewsElsePlanned::of(node).is_some();
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Runs `views`; if it fails for memory before its first row, plans
/// `planned` and runs that instead. One partition (the views plan's
/// partitions merged, its order kept when it has one partition).
pub(crate) struct PlannedAgainExec {
    views: Arc<dyn ExecutionPlan>,
    planned: LogicalPlan,
    state: Arc<SessionState>,
    planner: Arc<dyn QueryPlanner + Send + Sync>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for PlannedAgainExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlannedAgainExec")
            .field("views", &self.views)
            .finish_non_exhaustive()
    }
}

impl PlannedAgainExec {
    fn new(
        views: Arc<dyn ExecutionPlan>,
        planned: LogicalPlan,
        state: Arc<SessionState>,
        planner: Arc<dyn QueryPlanner + Send + Sync>,
    ) -> Self {
        let one = views.output_partitioning().partition_count() == 1;
        let equivalences = if one {
            views.equivalence_properties().clone()
        } else {
            EquivalenceProperties::new(views.schema())
        };
        let properties = PlanProperties::new(
            equivalences,
            Partitioning::UnknownPartitioning(1),
            views.pipeline_behavior(),
            views.boundedness(),
        );
        Self {
            views,
            planned,
            state,
            planner,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for PlannedAgainExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PlannedAgainExec: planned again with plain strings if this runs out of memory before its first row"
        )
    }
}

impl ExecutionPlan for PlannedAgainExec {
    fn name(&self) -> &str {
        "PlannedAgainExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.views]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![self.views.output_partitioning().partition_count() == 1]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Ok([views]) = <[Arc<dyn ExecutionPlan>; 1]>::try_from(children) else {
            return Err(DataFusionError::Internal(
                "PlannedAgainExec takes one child".into(),
            ));
        };
        Ok(Arc::new(Self::new(
            views,
            self.planned.clone(),
            Arc::clone(&self.state),
            Arc::clone(&self.planner),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "PlannedAgainExec has one partition, not {}",
                partition + 1
            )));
        }
        let views = Arc::clone(&self.views);
        let planned = self.planned.clone();
        let state = Arc::clone(&self.state);
        let planner = Arc::clone(&self.planner);
        let again = MetricBuilder::new(&self.metrics).counter("planned_again", 0);
        let schema = self.views.schema();
        let before = context.memory_pool().reserved();
        let answer = futures::stream::once(async move {
            let mut first = execute_stream(views, Arc::clone(&context))?;
            let exhausted = loop {
                match first.next().await {
                    // A leading empty batch answers no row: the run may
                    // still fail and go again.
                    Some(Ok(b)) if b.num_rows() == 0 => continue,
                    Some(Ok(b)) => {
                        return Ok(futures::stream::once(async { Ok(b) }).chain(first).boxed());
                    }
                    None => return Ok(futures::stream::empty().boxed()),
                    Some(Err(e)) if datafusion_kind(&e) == ErrorKind::ResourcesExhausted => {
                        break e;
                    }
                    Some(Err(e)) => return Err(e),
                }
            };
            drop(first);
            tracing::info!(
                error = %exhausted,
                "the statement ran out of memory reading text as views: running it again as planned"
            );
            again.add(1);
            settle(&context, before).await;
            // Planned in a session without the rule: the inner planner
            // optimises again once it has answered the statement's scalar
            // subqueries, and the rule would read views again.
            let plain = as_planned(state.as_ref());
            let plan = planner.create_physical_plan(&planned, &plain).await?;
            Ok(execute_stream(plan, context)?.boxed())
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, answer)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
}

/// Waits, two seconds at most, until the memory pool holds no more than
/// it did before the failed run (other statements share it), or its
/// reservations stop falling for 200 ms: the failed run's tasks stop, and
/// drop what they hold, as the runtime gets to them.
async fn settle(context: &TaskContext, before: usize) {
    let pool = context.memory_pool();
    let (mut held, mut still) = (pool.reserved(), 0);
    for _ in 0..100 {
        if held <= before || still >= 10 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = pool.reserved();
        still = if now < held { 0 } else { still + 1 };
        held = now;
    }
}

/// `state` without [`super::text::ReadTextAsViews`].
fn as_planned(state: &SessionState) -> SessionState {
    let mut builder = SessionStateBuilder::new_from_existing(state.clone());
    super::text::ReadTextAsViews::leave_out(&mut builder);
    builder.build()
}

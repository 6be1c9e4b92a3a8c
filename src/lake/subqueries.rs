//! Uncorrelated scalar subqueries answered before their statement is
//! planned.
//!
//! `WHERE as_of = (SELECT max(as_of) FROM customer_score WHERE as_of <= $d)`
//! is how the analytics queries pick a score run. DataFusion plans such a
//! subquery to run when the statement starts, so the statement's scan is
//! planned without knowing the value: it cannot skip the files of other
//! runs, and it splits the bytes of all of them between the cores. At a
//! million customers one core then read the run asked for while the other
//! read nothing (the other run's row groups, skipped by their statistics).
//!
//! This planner runs each such subquery first (in the same session, so
//! under the same secured views, memory pool and deadline), puts its value
//! in the statement as a constant, optimises the statement again and plans
//! it: the value then prunes files by their statistics and partitions like
//! any constant filter. `EXPLAIN` (without `ANALYZE`) and sessions marked
//! [`PlanOnly`] run nothing and are planned as before.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan, Subquery};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

/// Marks a session whose statements are planned and never run (a
/// SessionConfig extension): its planner answers no subquery.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOnly;

/// A query planner that answers a statement's uncorrelated scalar
/// subqueries, then hands the statement to `inner`.
#[derive(Debug)]
pub(super) struct ScalarSubqueriesFirst {
    inner: Arc<dyn QueryPlanner + Send + Sync>,
}

impl ScalarSubqueriesFirst {
    pub(super) fn new(inner: Arc<dyn QueryPlanner + Send + Sync>) -> Arc<Self> {
        Arc::new(Self { inner })
    }
}

#[async_trait]
impl QueryPlanner for ScalarSubqueriesFirst {
    async fn create_physical_plan(
        &self,
        logical: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let subqueries = uncorrelated(logical);
        let state = session.as_any().downcast_ref::<SessionState>();
        let plan_only = session.config().get_extension::<PlanOnly>().is_some();
        let Some(state) = state.filter(|_| {
            !subqueries.is_empty() && !plan_only && !matches!(logical, LogicalPlan::Explain(_))
        }) else {
            return self.inner.create_physical_plan(logical, session).await;
        };
        // All at once, as DataFusion would run them; each planned through
        // the session, so its own subqueries are answered first in turn.
        let answers = futures::future::try_join_all(subqueries.iter().map(async |sq| {
            let plan = session.create_physical_plan(&sq.subquery).await?;
            single_value(plan, session.task_ctx()).await
        }))
        .await?;
        let values: HashMap<Subquery, ScalarValue> = subqueries.into_iter().zip(answers).collect();
        let rewritten = with_values(logical, &values)?;
        // Optimised again, not analysed again: the statement was analysed
        // when it was planned, and the session's analyzer rules are not
        // all idempotent (reading text as views wraps a statement it
        // changes in a node only the session's own planner plans, which
        // `inner` is not).
        let optimized = state.optimizer().optimize(rewritten, state, |_, _| {})?;
        self.inner.create_physical_plan(&optimized, session).await
    }
}

/// The uncorrelated scalar subqueries in the expressions of `plan`'s own
/// nodes (not in those of its subqueries: planning a subquery answers
/// them), in the order they appear, each once.
fn uncorrelated(plan: &LogicalPlan) -> Vec<Subquery> {
    let mut found: Vec<Subquery> = Vec::new();
    let _ = plan.apply(|node| {
        for expr in node.expressions() {
            let _ = expr.apply(|e| {
                if let Expr::ScalarSubquery(sq) = e
                    && sq.outer_ref_columns.is_empty()
                    && !found.contains(sq)
                {
                    found.push(sq.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The one value a scalar subquery gives: NULL of its type for no row, an
/// error for more than one (as DataFusion answers at run time).
async fn single_value(plan: Arc<dyn ExecutionPlan>, ctx: Arc<TaskContext>) -> Result<ScalarValue> {
    let schema = plan.schema();
    if schema.fields().len() != 1 {
        return Err(DataFusionError::Plan(format!(
            "a scalar subquery must return one column, not {}",
            schema.fields().len()
        )));
    }
    let mut stream = execute_stream(plan, ctx)?;
    let mut value = None;
    while let Some(batch) = stream.next().await.transpose()? {
        if batch.num_rows() == 0 {
            continue;
        }
        if value.is_some() || batch.num_rows() > 1 {
            return Err(DataFusionError::Execution(
                "Scalar subquery returned more than one row".into(),
            ));
        }
        value = Some(ScalarValue::try_from_array(batch.column(0), 0)?);
    }
    match value {
        Some(v) => Ok(v),
        None => ScalarValue::try_from(schema.field(0).data_type()),
    }
}

/// `plan` with each answered subquery replaced by its value, under the
/// name the subquery had where a name shows (a projection's column).
fn with_values(plan: &LogicalPlan, values: &HashMap<Subquery, ScalarValue>) -> Result<LogicalPlan> {
    plan.clone()
        .transform_up(|node| {
            let names = NamePreserver::new(&node);
            let node = node.map_expressions(|expr| {
                let saved = names.save(&expr);
                let replaced = expr.transform_up(|e| match e {
                    Expr::ScalarSubquery(sq) if values.contains_key(&sq) => {
                        Ok(Transformed::yes(Expr::Literal(values[&sq].clone(), None)))
                    }
                    e => Ok(Transformed::no(e)),
                })?;
                Ok(if replaced.transformed {
                    Transformed::yes(saved.restore(replaced.data))
                } else {
                    replaced
                })
            })?;
            if node.transformed {
                Ok(Transformed::yes(node.data.recompute_schema()?))
            } else {
                Ok(node)
            }
        })
        .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    fn ctx() -> SessionContext {
        let ctx = crate::lake::session::write_context();
        let schema = Arc::new(Schema::new(vec![
            Field::new("run", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let batch = |runs: Vec<i64>, names: Vec<&str>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(runs)),
                    Arc::new(StringArray::from(names)),
                ],
            )
            .unwrap()
        };
        // Two partitions, as two files would be.
        let t = MemTable::try_new(
            schema.clone(),
            vec![
                vec![batch(vec![1, 1, 2], vec!["a", "b", "c"])],
                vec![batch(vec![2, 3], vec!["d", "e"])],
            ],
        )
        .unwrap();
        ctx.register_table("t", Arc::new(t)).unwrap();
        ctx
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Result<String, String> {
        let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
        let batches = df.collect().await.map_err(|e| e.to_string())?;
        Ok(pretty_format_batches(&batches).unwrap().to_string())
    }

    async fn physical(ctx: &SessionContext, sql: &str) -> String {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string()
    }

    #[tokio::test]
    async fn a_subquery_becomes_its_value_before_the_scan_is_planned() {
        let ctx = ctx();
        let sql =
            "SELECT name FROM t WHERE run = (SELECT max(run) FROM t WHERE run <= 2) ORDER BY name";
        let plan = physical(&ctx, sql).await;
        assert!(!plan.contains("ScalarSubqueryExec"), "{plan}");
        assert!(plan.contains("run@0 = 2"), "{plan}");
        assert_eq!(
            rows(&ctx, sql).await.unwrap(),
            "+------+\n| name |\n+------+\n| c    |\n| d    |\n+------+"
        );
    }

    #[tokio::test]
    async fn a_projected_subquery_keeps_its_column_name_and_no_row_gives_null() {
        let ctx = ctx();
        let direct = "SELECT (SELECT max(run) FROM t WHERE run > 5) AS top, count(*) AS n FROM t";
        assert_eq!(
            rows(&ctx, direct).await.unwrap(),
            "+-----+---+\n| top | n |\n+-----+---+\n|     | 5 |\n+-----+---+"
        );
        // Unaliased: the same name DataFusion gives the subquery itself.
        let df = ctx
            .sql("SELECT (SELECT min(run) FROM t) FROM t LIMIT 1")
            .await
            .unwrap();
        let logical_name = df.schema().field(0).name().clone();
        let batches = df.collect().await.unwrap();
        assert_eq!(batches[0].schema().field(0).name(), &logical_name);
        assert_eq!(
            batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            1
        );
    }

    #[tokio::test]
    async fn nested_and_repeated_subqueries_and_more_than_one_row() {
        let ctx = ctx();
        let nested = "SELECT count(*) AS n FROM t WHERE run = (SELECT max(run) FROM t WHERE run < (SELECT max(run) FROM t)) \
                      OR run = (SELECT max(run) FROM t WHERE run < (SELECT max(run) FROM t))";
        assert_eq!(
            rows(&ctx, nested).await.unwrap(),
            "+---+\n| n |\n+---+\n| 2 |\n+---+"
        );
        let err = rows(&ctx, "SELECT name FROM t WHERE run = (SELECT run FROM t)")
            .await
            .unwrap_err();
        assert!(err.contains("more than one row"), "{err}");
        // A correlated subquery is left to DataFusion (it becomes a join).
        let correlated = "SELECT count(*) AS n FROM t o WHERE run = (SELECT max(run) FROM t i WHERE i.name = o.name)";
        assert_eq!(
            rows(&ctx, correlated).await.unwrap(),
            "+---+\n| n |\n+---+\n| 5 |\n+---+"
        );
    }

    #[tokio::test]
    async fn a_plan_only_session_runs_no_subquery() {
        let ctx = ctx();
        ctx.state_ref()
            .write()
            .config_mut()
            .set_extension(Arc::new(super::PlanOnly));
        // The subquery would fail if it ran.
        let plan = physical(&ctx, "SELECT name FROM t WHERE run = (SELECT run FROM t)").await;
        assert!(plan.contains("ScalarSubqueryExec"), "{plan}");
    }

    #[tokio::test]
    async fn explain_runs_nothing_and_explain_analyze_shows_the_value() {
        let ctx = ctx();
        // The subquery would fail if it ran; EXPLAIN must not run it.
        let explained = rows(
            &ctx,
            "EXPLAIN SELECT name FROM t WHERE run = (SELECT run FROM t)",
        )
        .await
        .unwrap();
        assert!(explained.contains("ScalarSubqueryExec"), "{explained}");
        let analyzed = rows(
            &ctx,
            "EXPLAIN ANALYZE SELECT name FROM t WHERE run = (SELECT max(run) FROM t)",
        )
        .await
        .unwrap();
        assert!(analyzed.contains("run@0 = 3"), "{analyzed}");
    }
}

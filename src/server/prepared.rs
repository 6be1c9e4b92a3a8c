//! custlake's own statements (named queries, lists) planned once per
//! principal and kept while the lake has not changed: a lookup repeats the
//! same statement with another key, and parsing it, resolving its tables,
//! building the principal's secured views and optimising the plan took
//! most of its time.
//!
//! - What is kept is the statement's plan with its row limit, optimised
//!   with its parameters still open, and the principal's session it was
//!   planned in. Each run binds its own values and plans the execution
//!   afresh, so a value still prunes files, row groups and pages (the key
//!   indexes see it).
//! - A statement whose plan reads the clock (`now()`, `current_date`, as a
//!   row filter of "the last 90 days" does) or calls a volatile function
//!   is optimised again on every run; so is a run whose value's type is not
//!   the type the plan gave its parameter. Those runs bind into the plan as
//!   parsed and optimise it, as an unkept statement is.
//! - The key is the statement's text, the row limit and the principal
//!   (user, role, teams, regions, agent: its masks and row filters follow
//!   from them).
//! - A plan holds the tables as they were when it was planned. Each run
//!   first checks the tables it reads, and those the principal's row
//!   filters read, for newer commits, as any statement does; a plan of an
//!   older version is planned again. A tiered table whose rows have
//!   started to move keeps its plans: its scans read each tier's commits
//!   as they run. A plan is kept only if none of those
//!   tables changed while it was planned, and for at most [`TTL`] (a role's
//!   settings may change under a running server).
//! - At most [`MAX_PLANS`] are kept; the oldest goes first when it is full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};

use super::SharedState;
use super::auth::Caller;
use super::error::ApiError;
use crate::security::Principal;

/// Plans kept at most.
const MAX_PLANS: usize = 256;
/// The longest a plan is kept.
const TTL: Duration = Duration::from_secs(60);

/// A statement planned for a principal.
struct Plan {
    at: Instant,
    /// The session it was planned in (the principal's secured views).
    session: SessionState,
    /// As parsed, with the row limit, parameters open.
    parsed: LogicalPlan,
    /// Optimised, parameters open, and each parameter's type in it; `None`
    /// for a plan that reads the clock or calls a volatile function.
    optimized: Option<(LogicalPlan, HashMap<String, Option<DataType>>)>,
    /// The parameters it names (`$id`).
    wanted: Vec<String>,
    /// The tables it reads, for the audit record.
    touched: Vec<String>,
    /// The tables its answer depends on (those it reads and those the
    /// principal's row filters read).
    depends: Vec<String>,
    /// The table cache's change count before it was planned: the plan is
    /// current while none of `depends` was opened or brought to a newer
    /// version since (a tiered table counts as unchanged while its rows
    /// keep moving: its scans read the tiers' commits as they run).
    stamp: u64,
}

#[derive(Default)]
pub(crate) struct Prepared {
    held: Mutex<HashMap<String, Arc<Plan>>>,
}

fn key(sql: &str, limit: usize, p: &Principal) -> String {
    format!("{sql}\u{1f}{limit}\u{1f}{}", super::answers::whose(p))
}

impl Prepared {
    /// Start `sql` in the caller's secured session with `params` bound,
    /// cut one row past `limit`: from a kept plan when the tables it
    /// depends on have no newer commit, otherwise planned now (and kept).
    pub(crate) async fn start(
        &self,
        state: &SharedState,
        caller: &Caller,
        sql: &str,
        params: &[(String, ScalarValue)],
        limit: usize,
    ) -> Result<SendableRecordBatchStream, ApiError> {
        let key = key(sql, limit, &caller.principal);
        let kept = match self.get(&key) {
            Some(kept) if self.current(state, &kept).await? => {
                metrics::counter!("custlake_plan_cache_hits_total").increment(1);
                kept
            }
            _ => self.prepare(state, caller, sql, params, limit, key).await?,
        };
        caller
            .note
            .set(|n| n.tables = (!kept.touched.is_empty()).then(|| kept.touched.join(",")));
        let physical = match &kept.optimized {
            Some((optimized, types))
                if params.iter().all(|(k, v)| {
                    types
                        .get(&format!("${k}"))
                        .is_none_or(|t| t.as_ref() == Some(&v.data_type()))
                }) =>
            {
                let bound = super::query::bind(optimized.clone(), kept.wanted.iter(), params)?;
                // The bound values folded (`normalize_phone('138…')` to
                // the literal the key indexes look for).
                let bound = simplify(&kept.session, bound).map_err(super::query::df_error)?;
                kept.session
                    .query_planner()
                    .create_physical_plan(&bound, &kept.session)
                    .await
            }
            _ => {
                let bound = super::query::bind(kept.parsed.clone(), kept.wanted.iter(), params)?;
                kept.session.create_physical_plan(&bound).await
            }
        }
        .map_err(super::query::df_error)?;
        datafusion::physical_plan::execute_stream(physical, kept.session.task_ctx())
            .map_err(super::query::df_error)
    }

    async fn prepare(
        &self,
        state: &SharedState,
        caller: &Caller,
        sql: &str,
        params: &[(String, ScalarValue)],
        limit: usize,
        key: String,
    ) -> Result<Arc<Plan>, ApiError> {
        let before = state.tables.changes();
        let ctx = super::query::session(state, caller).await?;
        let df = crate::query::plan_read_only(&ctx, sql)
            .await
            .map_err(super::query::query_error)?
            .limit(0, Some(limit.saturating_add(1)))
            .map_err(super::query::df_error)?;
        let (session, parsed) = df.into_parts();
        let touched = crate::query::tables_read(&parsed);
        let depends = super::answers::depends_on(
            state,
            &caller.principal,
            &touched.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let wanted: Vec<String> = parsed
            .get_parameter_names()
            .map_err(super::query::df_error)?
            .into_iter()
            .collect();
        // Typed by the values; a statement that does not plan so (a date
        // parameter plus an interval is typed only once bound) is bound
        // into the plan as parsed on every run.
        let (parsed, optimized) = match optimize(&session, typed(parsed.clone(), params)) {
            Ok((typed, optimized)) => (typed, optimized),
            Err(_) => (parsed, None),
        };
        let planned = Arc::new(Plan {
            at: Instant::now(),
            session,
            parsed,
            optimized,
            wanted,
            touched,
            depends,
            stamp: before,
        });
        if !state.tables.changed_since(&planned.depends, before).await {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if held.len() >= MAX_PLANS {
                held.retain(|_, p| p.at.elapsed() < TTL);
            }
            if held.len() >= MAX_PLANS
                && let Some(oldest) = held
                    .iter()
                    .min_by_key(|(_, p)| p.at)
                    .map(|(k, _)| k.clone())
            {
                held.remove(&oldest);
            }
            held.insert(key, planned.clone());
        }
        Ok(planned)
    }

    fn get(&self, key: &str) -> Option<Arc<Plan>> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(key).filter(|p| p.at.elapsed() < TTL).cloned()
    }

    /// Whether every table `kept` depends on is still at the version it
    /// was planned on, after checking each for newer commits.
    async fn current(&self, state: &SharedState, kept: &Plan) -> Result<bool, ApiError> {
        let catalog = &state.warehouse.catalog;
        let defs: Vec<_> = kept
            .depends
            .iter()
            .filter_map(|t| catalog.table(t).ok())
            .collect();
        state
            .tables
            .refresh(&state.warehouse.lake, &defs, Instant::now())
            .await
            .map_err(super::query::query_error)?;
        Ok(!state.tables.changed_since(&kept.depends, kept.stamp).await)
    }
}

/// `plan` (its parameters typed) and, unless it reads the clock or calls a
/// volatile function, `plan` optimised with the types of its parameters.
#[allow(clippy::type_complexity)]
fn optimize(
    session: &SessionState,
    plan: datafusion::error::Result<LogicalPlan>,
) -> datafusion::error::Result<(
    LogicalPlan,
    Option<(LogicalPlan, HashMap<String, Option<DataType>>)>,
)> {
    let plan = plan?;
    let analyzed =
        session
            .analyzer()
            .execute_and_check(plan.clone(), session.config_options(), |_, _| {})?;
    if changes_between_runs(&analyzed) {
        return Ok((plan, None));
    }
    let optimized = session.optimize(&plan)?;
    let types = placeholder_types(&optimized);
    Ok((plan, Some((optimized, types))))
}

/// Whether `plan` (analysed: views inlined) calls a function whose value
/// is not fixed by its arguments: a volatile one, or one that reads the
/// clock (`now()`, `current_date`: no arguments, yet not immutable), which
/// optimising turns into the time of planning.
fn changes_between_runs(plan: &LogicalPlan) -> bool {
    crate::query::any_expr(plan, |e| {
        matches!(e, Expr::ScalarFunction(f) if match f.func.signature().volatility {
            Volatility::Immutable => false,
            Volatility::Stable => f.args.is_empty(),
            Volatility::Volatile => true,
        })
    })
}

/// `plan`'s expressions simplified, as the optimiser does: constants
/// folded, the functions of bound values evaluated.
fn simplify(session: &SessionState, plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
    use datafusion::optimizer::{Optimizer, OptimizerContext};
    let rules: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> =
        vec![Arc::new(SimplifyExpressions::new())];
    let config = OptimizerContext::new_with_config_options(session.config_options().clone())
        .with_max_passes(1);
    Optimizer::with_rules(rules).optimize(plan, &config, |_, _| {})
}

/// `plan` with each parameter the SQL leaves untyped (one passed to a
/// function: `normalize_phone($phone)`) given the type of its value in
/// `params`, as a prepared statement's declared types are: the optimised
/// plan then has it right, and later runs with values of that type bind
/// into it.
fn typed(
    plan: LogicalPlan,
    params: &[(String, ScalarValue)],
) -> datafusion::error::Result<LogicalPlan> {
    use datafusion::arrow::datatypes::Field;
    use datafusion::logical_expr::expr::Placeholder;
    plan.transform_up_with_subqueries(|node| {
        let t = node.map_expressions(|e| {
            e.transform(|e| match e {
                Expr::Placeholder(Placeholder { id, field: None }) => {
                    match params
                        .iter()
                        .find(|(k, _)| id.strip_prefix('$') == Some(k.as_str()))
                    {
                        Some((_, v)) => {
                            let field = Arc::new(Field::new(
                                id.trim_start_matches('$'),
                                v.data_type(),
                                true,
                            ));
                            Ok(Transformed::yes(Expr::Placeholder(Placeholder {
                                id,
                                field: Some(field),
                            })))
                        }
                        None => Ok(Transformed::no(Expr::Placeholder(Placeholder {
                            id,
                            field: None,
                        }))),
                    }
                }
                e => Ok(Transformed::no(e)),
            })
        })?;
        // A typed parameter may type the node's output.
        if t.transformed {
            t.map_data(|p| p.recompute_schema())
        } else {
            Ok(t)
        }
    })
    .map(|t| t.data)
}

/// The type `plan` gives each of its parameters (`$id`), where it has one.
fn placeholder_types(plan: &LogicalPlan) -> HashMap<String, Option<DataType>> {
    let mut out = HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::Placeholder(p) = e {
                    let t = p.field.as_ref().map(|f| f.data_type().clone());
                    // A parameter used with two types is bound as parsed.
                    out.entry(p.id.clone())
                        .and_modify(|seen: &mut Option<DataType>| {
                            if *seen != t {
                                *seen = None;
                            }
                        })
                        .or_insert(t);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    out
}

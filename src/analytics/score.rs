//! `custlake score`: every golden customer's lifecycle stage, value score
//! and tier, churn risk, segment and product lines as of a date
//! (`sql/analytics/score.sql`), written to `customer_score` so trends can
//! be queried. Rerunning a date replaces that date's rows in one commit.
//!
//! A book larger than `analytics.score_pass_customers` is scored in passes
//! of consecutive customer ids (the rule's `whole`, `from_id` and `to_id`):
//! each pass's joins hold only its customers, and its rows stream into the
//! one write while the next pass runs, so neither the query memory nor the
//! process holds the whole book. The passes' rows are exactly a whole run's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::{AnalyticsError, bind, bind_own, rule};
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::lake::Lake;
use crate::progress::{Progress, Task, Unit};
use crate::schema::Catalog;

/// What a score run wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scored {
    pub as_of: chrono::NaiveDate,
    pub customers: u64,
    /// Customers per lifecycle stage.
    pub stages: BTreeMap<String, u64>,
    /// Customers per value tier.
    pub tiers: BTreeMap<String, u64>,
    /// The passes the customers were scored in (1: all at once).
    pub passes: usize,
    /// The customer_score version the run committed.
    pub version: i64,
}

/// The customers of one pass: golden ids `first..=last`, or everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    Whole,
    Ids { first: String, last: String },
}

impl Pass {
    /// The customers of the pass, for a log line.
    fn describe(&self) -> String {
        match self {
            Self::Whole => "every customer".into(),
            Self::Ids { first, last } => format!("customers {first} to {last}"),
        }
    }
}

/// One score run: what its passes share.
struct Scoring<'a> {
    config: &'a Config,
    ctx: &'a SessionContext,
    catalog: &'a Catalog,
    as_of: chrono::NaiveDate,
    /// The stamp of every row (microseconds, UTC).
    scored_at: i64,
}

impl Scoring<'_> {
    /// The score rule's plan for `as_of` and one pass, in `customer_score`'s
    /// columns, every row stamped `scored_at`.
    async fn plan(&self, pass: &Pass) -> Result<DataFrame, AnalyticsError> {
        let Self {
            config,
            ctx,
            catalog,
            as_of,
            scored_at,
        } = *self;
        let mut given = HashMap::from([("as_of".to_string(), as_of.to_string())]);
        if let Pass::Ids { first, last } = pass {
            given.insert("whole".into(), "false".into());
            given.insert("from_id".into(), first.clone());
            given.insert("to_id".into(), last.clone());
        }
        let df = rule_frame(config, ctx, &given).await?;
        let def = catalog.table("customer_score")?;
        let month = as_of.format("%Y-%m").to_string();
        let exprs = def
            .fields
            .iter()
            .map(|f| {
                let e = match f.name.as_str() {
                    "scored_at" => lit(ScalarValue::TimestampMicrosecond(
                        Some(scored_at),
                        Some("UTC".into()),
                    )),
                    "as_of_month" => lit(month.clone()),
                    n => col(n),
                };
                cast(e, f.ty.arrow()).alias(&f.name)
            })
            .collect::<Vec<_>>();
        Ok(df.select(exprs)?)
    }
}

/// The tables a pass computes before the score rule runs and holds for
/// its joins (`sql/analytics/pass_xref.sql`, `pass_policies.sql`).
const PASS_TABLES: [&str; 2] = ["pass_xref", "pass_policies"];

/// The lake tables the score rule reads, its pass tables' included.
pub fn tables_read() -> Result<Vec<String>, AnalyticsError> {
    let mut reads = Vec::new();
    for name in std::iter::once("score").chain(PASS_TABLES) {
        reads.extend(super::tables_read(&rule(name)?.sql)?);
    }
    reads.retain(|t| !PASS_TABLES.contains(&t.as_str()));
    reads.sort();
    reads.dedup();
    Ok(reads)
}

/// The score rule (`sql/analytics/score.sql`) in `ctx` with `given`
/// parameters (as text; the rest from the config and the header). With
/// `whole=false` (one pass), the pass's source records and then their
/// policies are computed first and held in memory as `pass_xref` and
/// `pass_policies`, which the rule's pass branches read several times; a
/// whole run gets them as views it never reads.
pub async fn rule_frame(
    config: &Config,
    ctx: &SessionContext,
    given: &HashMap<String, String>,
) -> Result<DataFrame, AnalyticsError> {
    let q = rule("score")?;
    let params = bind(config, &q, given)?;
    let whole = !params
        .iter()
        .any(|(k, v)| k == "whole" && *v == ScalarValue::Boolean(Some(false)));
    let ctx = if whole {
        ctx.clone()
    } else {
        // A pass's joins are planned in the order the rule writes them,
        // its few rows first and held in memory: by their estimates the
        // planner would hold a whole table instead (the payments, to find
        // the first premium of a pass's policies), as large at any pass
        // size as the book.
        let mut state = ctx.state();
        state.config_mut().options_mut().optimizer.join_reordering = false;
        SessionContext::new_with_state(state)
    };
    for name in PASS_TABLES {
        let t = rule(name)?;
        let df = ctx
            .sql(&t.sql)
            .await?
            .with_param_values(bind_own(config, &t, given)?)?;
        ctx.deregister_table(name)?;
        if whole {
            ctx.register_table(name, df.into_view())?;
        } else {
            let schema = Arc::new(df.schema().as_arrow().clone());
            let parts = df.collect_partitioned().await?;
            ctx.register_table(name, Arc::new(MemTable::try_new(schema, parts)?))?;
        }
    }
    Ok(ctx.sql(&q.sql).await?.with_param_values(params)?)
}

/// The held tables of the pass just run, let go with its plan.
fn forget_pass_tables(ctx: &SessionContext) -> Result<(), AnalyticsError> {
    for name in PASS_TABLES {
        ctx.deregister_table(name)?;
    }
    Ok(())
}

/// The active golden customers of `pass`, their ids only.
async fn active_ids(ctx: &SessionContext, pass: &Pass) -> Result<DataFrame, AnalyticsError> {
    let mut df = ctx
        .table("customer")
        .await?
        .filter(col("status").eq(lit("active")))?;
    if let Pass::Ids { first, last } = pass {
        df = df.filter(col("customer_id").between(lit(first.as_str()), lit(last.as_str())))?;
    }
    Ok(df.select(vec![col("customer_id")])?)
}

/// The passes that score the active golden customers at most `per_pass`
/// at a time: runs of consecutive ids (in id order) of equal size, or one
/// pass of everyone when they fit. Also returns how many there are.
pub async fn passes(
    ctx: &SessionContext,
    per_pass: u64,
) -> Result<(Vec<Pass>, u64), AnalyticsError> {
    let total = active_ids(ctx, &Pass::Whole).await?.count().await? as u64;
    let per_pass = per_pass.max(1);
    if total <= per_pass {
        return Ok((vec![Pass::Whole], total));
    }
    let out = split(ctx, &Pass::Whole, total, total.div_ceil(per_pass)).await?;
    Ok((out, total))
}

/// `pass`'s `total` customers cut into `parts` runs of consecutive ids of
/// equal size, in id order.
async fn split(
    ctx: &SessionContext,
    pass: &Pass,
    total: u64,
    parts: u64,
) -> Result<Vec<Pass>, AnalyticsError> {
    let size = total.div_ceil(parts.max(1)).max(1);
    let mut ids = active_ids(ctx, pass)
        .await?
        .sort(vec![col("customer_id").sort(true, false)])?
        .execute_stream()
        .await?;
    let (mut out, mut first, mut at) = (Vec::new(), None::<String>, 0u64);
    while let Some(batch) = ids.next().await {
        let ids = datafusion::arrow::compute::cast(
            batch?.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )?;
        let c = ids.as_string::<i32>();
        for i in 0..c.len() {
            if c.is_null(i) {
                continue;
            }
            if at % size == 0 {
                first = Some(c.value(i).to_string());
            }
            at += 1;
            if (at % size == 0 || at == total)
                && let Some(first) = first.take()
            {
                out.push(Pass::Ids {
                    first,
                    last: c.value(i).to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// `pass` cut in two halves, when it has at least two customers.
async fn halves(ctx: &SessionContext, pass: &Pass) -> Result<Vec<Pass>, AnalyticsError> {
    let total = active_ids(ctx, pass).await?.count().await? as u64;
    if total < 2 {
        return Ok(Vec::new());
    }
    split(ctx, pass, total, 2).await
}

/// What the passes produced, counted as their rows stream by.
#[derive(Debug, Default)]
struct Tally {
    customers: u64,
    /// The passes run, halves of a pass that ran out of memory included.
    passes: usize,
    stages: BTreeMap<String, u64>,
    tiers: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, b: &RecordBatch) {
        self.customers += b.num_rows() as u64;
        for (name, counts) in [
            ("lifecycle_stage", &mut self.stages),
            ("value_tier", &mut self.tiers),
        ] {
            let Some(c) = b.column_by_name(name) else {
                continue;
            };
            let c = c.as_string::<i32>();
            // A handful of distinct values over a million rows: counted
            // without making a String of each.
            for v in c.iter().flatten() {
                match counts.get_mut(v) {
                    Some(n) => *n += 1,
                    None => {
                        counts.insert(v.to_string(), 1);
                    }
                }
            }
        }
    }
}

/// How many times a pass that ran out of memory is cut in two before the
/// run gives up: a sixteenth of it.
const MAX_HALVINGS: u32 = 4;

impl Scoring<'_> {
    /// Run the passes in order, sending their rows to the write.
    ///
    /// A pass that runs out of query memory before it sent a row (its joins
    /// hold their build sides before the first row comes out) is scored again
    /// as two halves, and a half that does too as two quarters, down to a
    /// sixteenth of the planned pass: the default pass size is an estimate
    /// (`analytics.score_pass_customers`), and a memory limit it overshoots
    /// costs a retry, not the run. Memory that even a sixteenth of a pass
    /// cannot fit in is not a matter of pass size (the plan's fixed needs
    /// exceed the limit): the run fails then, as it does when a pass fails
    /// after its first rows went to the write. A failed run commits nothing.
    async fn produce(
        &self,
        passes: &[Pass],
        task: &dyn Task,
        tx: &Rows,
    ) -> Result<Tally, AnalyticsError> {
        let mut tally = Tally::default();
        // Each pass with the halvings that made it.
        let mut queue: std::collections::VecDeque<(Pass, u32)> =
            passes.iter().map(|p| (p.clone(), 0)).collect();
        while let Some((pass, halved)) = queue.pop_front() {
            if tally.passes > 0 || !queue.is_empty() {
                task.set_message(&format!(
                    "pass {} of {}",
                    tally.passes + 1,
                    tally.passes + 1 + queue.len()
                ));
            }
            let sent = tally.customers;
            match self.run_pass(&pass, &mut tally, task, tx).await {
                Ok(true) => {}
                // The write stopped; it says why.
                Ok(false) => return Ok(tally),
                Err(e)
                    if e.kind() == ErrorKind::ResourcesExhausted
                        && tally.customers == sent
                        && halved < MAX_HALVINGS =>
                {
                    let halves = halves(self.ctx, &pass).await?;
                    if halves.len() < 2 {
                        return Err(e);
                    }
                    tracing::warn!(
                        "a scoring pass ({}) ran out of query memory (query.memory_limit_mb = {}) \
                     before its first row; scoring it as two passes",
                        pass.describe(),
                        self.config.query.memory_limit_mb
                    );
                    tracing::debug!("the pass's error: {e}");
                    for half in halves.into_iter().rev() {
                        queue.push_front((half, halved + 1));
                    }
                }
                Err(e) => {
                    if e.kind() == ErrorKind::ResourcesExhausted && halved == MAX_HALVINGS {
                        tracing::warn!(
                            "a scoring pass ({}) cut in two {MAX_HALVINGS} times still ran out of \
                         query memory: the plan needs more than query.memory_limit_mb = {} \
                         whatever the pass size; raise it",
                            pass.describe(),
                            self.config.query.memory_limit_mb
                        );
                    }
                    return Err(e);
                }
            }
        }
        Ok(tally)
    }

    /// Run one pass, sending its rows to the write: false when the write
    /// stopped taking them.
    async fn run_pass(
        &self,
        pass: &Pass,
        tally: &mut Tally,
        task: &dyn Task,
        tx: &Rows,
    ) -> Result<bool, AnalyticsError> {
        let ran = self.stream_pass(pass, tally, task, tx).await;
        // The pass's held tables go with its plan, whether it ran or not
        // (a pass cut in halves computes its own).
        forget_pass_tables(self.ctx)?;
        ran
    }

    async fn stream_pass(
        &self,
        pass: &Pass,
        tally: &mut Tally,
        task: &dyn Task,
        tx: &Rows,
    ) -> Result<bool, AnalyticsError> {
        let df = self.plan(pass).await?;
        let physical = df.create_physical_plan().await?;
        // Kept for the debug log only: a plan held to the end of its pass
        // holds its joins' tables (0.5 GB more at a million customers).
        let shown = tracing::enabled!(tracing::Level::DEBUG).then(|| physical.clone());
        let mut rows = datafusion::physical_plan::execute_stream(physical, self.ctx.task_ctx())?;
        while let Some(batch) = rows.next().await {
            if crate::lake::failpoint_fails("score.pass_memory") {
                return Err(datafusion::error::DataFusionError::ResourcesExhausted(
                    "the failpoint score.pass_memory".into(),
                )
                .into());
            }
            let batch = batch?;
            tally.add(&batch);
            task.set_position(tally.customers);
            if tx.send(Ok(batch)).await.is_err() {
                return Ok(false);
            }
        }
        tally.passes += 1;
        if let Some(physical) = shown {
            let shown = crate::query::plan_with_metrics(physical.as_ref());
            tracing::debug!("pass {}'s plan, with its metrics:\n{shown}", tally.passes);
        }
        crate::lake::failpoint("score.after_pass");
        Ok(true)
    }
}

/// Where a run's rows go: the write.
type Rows = tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>;

/// Score every golden customer as of `as_of` and replace that date's rows
/// of `customer_score`.
pub async fn run(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    as_of: chrono::NaiveDate,
    progress: &dyn Progress,
) -> Result<Scored, AnalyticsError> {
    // The tables the rule reads, and the customers counted for the passes.
    let mut reads = tables_read()?;
    reads.push("customer".into());
    let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
    let ctx = super::context_reading(config, lake, catalog, None, Some(&reads)).await?;
    let per_pass = config.analytics.score_pass(config.query.memory_limit_mb);
    let (passes, total) = passes(&ctx, per_pass).await?;
    let task = progress.task("scoring", Some(total), Unit::Items("customers"));
    let result = async {
        let def = catalog.table("customer_score")?;
        let write_ctx = crate::lake::session::write_context();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let source = crate::lake::channel_source(&write_ctx, def.arrow_schema(), rx)?;
        // The passes run while their rows are written, in this task: a
        // pass that fails sends its error down the channel, which aborts
        // the write, and a panic takes the write with it, so nothing is
        // committed unless every pass ended.
        let producing = async {
            let scoring = Scoring {
                config,
                ctx: &ctx,
                catalog,
                as_of,
                scored_at: chrono::Utc::now().timestamp_micros(),
            };
            let tally = scoring.produce(&passes, task.as_ref(), &tx).await;
            if let Err(e) = &tally {
                let _ = tx
                    .send(Err(datafusion::error::DataFusionError::Execution(format!(
                        "scoring stopped: {e}"
                    ))))
                    .await;
            }
            drop(tx);
            tally
        };
        let days = crate::domain::days_since_epoch(as_of);
        let partition = as_of.format("%Y-%m").to_string();
        let writing = crate::lake::replace_where(
            lake,
            &write_ctx,
            def,
            source,
            crate::lake::Replace {
                column: "as_of",
                value: ScalarValue::Date32(Some(days)),
                partition: &partition,
            },
            vec![
                ("operation".into(), "score".into()),
                ("as_of".into(), as_of.to_string().into()),
                // As planned: a pass that ran out of memory and was
                // scored in halves is counted once here (the run's
                // summary counts the passes that ran).
                ("passes_planned".into(), passes.len().into()),
            ],
        );
        let (tally, written) = tokio::join!(producing, writing);
        let tally = tally?;
        let outcome = written?;
        Ok::<_, AnalyticsError>(Scored {
            as_of,
            customers: tally.customers,
            stages: tally.stages,
            tiers: tally.tiers,
            passes: tally.passes,
            version: outcome.version,
        })
    }
    .await;
    match &result {
        Ok(_) => task.finish(),
        Err(_) => task.fail("failed"),
    }
    result
}

//! Data quality: rules generated from the schemas and written in SQL
//! ([`rules`]), evaluated per record ([`run`]) into scores per table,
//! field, dimension, source system and owning team (`quality_metric`) and
//! rectification work orders (`quality_issue`), carried from run to run.
//!
//! A run checks the sensitivity levels that are due (`[quality.sampling]`:
//! L4 daily in full, L3 weekly on 20 %, …) on a deterministic sample whose
//! seed is stored with the run; `--full` checks every level on every
//! record. A later run closes the work orders whose record now passes.

pub mod rules;
pub mod run;
mod sql_rules;
pub mod udf;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;

use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::lake::{Lake, LakeError};
use crate::progress::Progress;
use crate::query::QueryError;
use crate::schema::{Catalog, Level, SchemaError, TableDef};
use crate::security::SecurityError;

pub use rules::{Check, TablePlan};
pub use run::{Evaluation, Failure, Metric};

/// A hash map with a fast hasher (foldhash), for maps of many text keys.
type FastMap<K, V> = datafusion::common::HashMap<K, V>;

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("{0}")]
    Invalid(String),
    #[error("quality rule {0}: {1}")]
    Rule(String, String),
}

impl Classify for QualityError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Query(e) => e.kind(),
            Self::Lake(e) => e.kind(),
            Self::Schema(e) => e.kind(),
            Self::Security(e) => e.kind(),
            Self::Invalid(_) => ErrorKind::InvalidParameter,
            Self::Rule(..) => ErrorKind::Internal,
        }
    }
}

impl From<datafusion::error::DataFusionError> for QualityError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Self::Query(QueryError::from(e))
    }
}

impl From<datafusion::arrow::error::ArrowError> for QualityError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Self::from(datafusion::error::DataFusionError::from(e))
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Every level on every record, whatever is due.
    pub full: bool,
    /// The date the rules apply as of (birth dates, ages).
    pub as_of: NaiveDate,
    /// The sample's seed (`None`: drawn from the run id).
    pub seed: Option<i64>,
}

/// What a run found and stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub as_of: NaiveDate,
    pub full: bool,
    pub seed: i64,
    /// The levels checked and the share of records sampled.
    pub levels: BTreeMap<String, f64>,
    /// Records read (a record of several rules' tables counts per table).
    pub records: u64,
    /// The overall score of everything checked.
    pub score: Option<f64>,
    /// Overall score per owning team.
    pub teams: BTreeMap<String, f64>,
    /// Failing record fields in this run; of them first found now.
    pub open: u64,
    pub new: u64,
    /// Work orders closed: failing before, passing now.
    pub fixed: u64,
    /// Records scoring below the threshold (rectification work orders).
    pub work_orders: u64,
    pub metrics: u64,
}

/// Which levels a run checks and on what share of the records.
#[derive(Debug, Clone)]
pub struct Scope {
    pub rates: BTreeMap<Level, f64>,
    pub seed: i64,
}

impl Scope {
    /// Every level on every record.
    pub fn full(seed: i64) -> Self {
        Self {
            rates: Level::ALL.into_iter().map(|l| (l, 1.0)).collect(),
            seed,
        }
    }

    pub fn includes(&self, level: Level) -> bool {
        self.rates.contains_key(&level)
    }

    /// Is the record in the sample of `level`?
    pub fn samples(&self, level: Level, record_key: &str) -> bool {
        self.rates
            .get(&level)
            .is_some_and(|r| *r >= 1.0 || udf::sample(record_key, self.seed) < *r)
    }
}

/// The run's scope: levels due (or all, for a full run) and their rates.
pub async fn scope(
    config: &Config,
    ctx: &SessionContext,
    opts: &RunOptions,
    seed: i64,
) -> Result<Scope, QualityError> {
    if opts.full {
        return Ok(Scope::full(seed));
    }
    // The as-of dates each level was last checked on.
    let batches = ctx
        .sql("SELECT DISTINCT level, as_of FROM quality_metric WHERE rule <> 'overall' AND level IS NOT NULL AND as_of IS NOT NULL")
        .await?
        .collect()
        .await?;
    let mut checked: HashMap<String, Vec<NaiveDate>> = HashMap::new();
    for b in &batches {
        let l = datafusion::arrow::compute::cast(
            b.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )?;
        let l = l.as_string::<i32>();
        let d = b
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        for i in 0..b.num_rows() {
            if l.is_valid(i)
                && d.is_valid(i)
                && let Some(day) = crate::domain::date_from_days(d.value(i))
            {
                checked.entry(l.value(i).to_string()).or_default().push(day);
            }
        }
    }
    let mut rates = BTreeMap::new();
    for level in Level::ALL {
        let name = format!("{level:?}");
        let Some(s) = config.quality.sampling.get(&name) else {
            continue;
        };
        let done = checked
            .get(&name)
            .is_some_and(|ds| ds.iter().any(|d| same_period(&s.every, *d, opts.as_of)));
        if !done {
            rates.insert(level, s.rate);
        }
    }
    Ok(Scope { rates, seed })
}

/// Do two dates fall in the same day, ISO week, month or quarter?
pub fn same_period(every: &str, a: NaiveDate, b: NaiveDate) -> bool {
    match every {
        "day" => a == b,
        "week" => a.iso_week() == b.iso_week(),
        "month" => (a.year(), a.month()) == (b.year(), b.month()),
        "quarter" => (a.year(), a.month0() / 3) == (b.year(), b.month0() / 3),
        _ => false,
    }
}

/// A context with the lake's tables and the rules' functions.
pub async fn context(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    masks: &crate::security::Masks,
    as_of: NaiveDate,
) -> Result<SessionContext, QualityError> {
    let ctx = crate::query::context(config)?;
    // Records stream through the rules' joins to their tally: text as
    // views is not copied at each join.
    crate::query::register_declared_as(
        &ctx,
        lake,
        catalog,
        None,
        crate::lake::session::Text::Views,
        None,
    )
    .await?;
    run::prepare(&ctx, masks, as_of);
    Ok(ctx)
}

/// The work orders still open before this run (the latest row of each
/// record field and rule among completed runs, where it is open).
///
/// Every run appends a row for each failure it finds and each work order
/// it closes, so `quality_issue` grows by a run's failures every run. Only
/// the recent rows can be the latest: a run that checks a rule on every
/// record (a full run, or a level sampled at rate 1) writes a row for each
/// of that rule's work orders (open again, or fixed), so older rows of that
/// rule are never the latest. When every rule of the stored metrics (the
/// rows with a sample rate, not the overall scores) has had such a run,
/// rows before the oldest of those runs are not read at all (their files
/// are skipped by their `run_at` statistics); a rule only ever sampled
/// keeps the whole history in play.
struct OpenOrders {
    /// Per batch read, its columns.
    cols: Vec<OpenColumns>,
    /// [`issue_key`] → (batch, row).
    index: FastMap<String, (usize, usize)>,
}

struct OpenColumns {
    table: StringArray,
    record: StringArray,
    field: StringArray,
    rule: StringArray,
    value: StringArray,
    dimension: StringArray,
    level: StringArray,
    source_system: StringArray,
    owning_team: StringArray,
    agent_id: StringArray,
    first_seen_run: StringArray,
    first_seen_at: Option<datafusion::arrow::array::Int64Array>,
}

/// A work order's identity (table, record, field, rule) as one string,
/// written into `buf`.
fn issue_key(buf: &mut String, table: &str, record: &str, field: &str, rule: &str) {
    buf.clear();
    for (i, part) in [table, record, field, rule].into_iter().enumerate() {
        if i > 0 {
            buf.push('\u{1f}');
        }
        buf.push_str(part);
    }
}

async fn open_issues(ctx: &SessionContext) -> Result<OpenOrders, QualityError> {
    let since = match issues_floor(ctx).await? {
        Some(us) => format!(
            "WHERE i.run_at >= arrow_cast(arrow_cast({us}, 'Int64'), 'Timestamp(Microsecond, Some(\"UTC\"))')"
        ),
        None => String::new(),
    };
    // Every row since the floor; the latest of each work order is kept
    // below, where the rows are indexed anyway (a window ranking them
    // sorted them on four text columns first).
    let sql = format!(
        "SELECT i.table_name, i.record_key, i.field, i.rule, i.value, i.dimension, i.level, i.source_system, \
         i.owning_team, i.agent_id, i.first_seen_run, CAST(i.first_seen_at AS BIGINT) AS first_seen_at, \
         CAST(i.run_at AS BIGINT) AS run_at, i.status = 'open' AS open \
         FROM (SELECT DISTINCT run_id FROM quality_metric) r JOIN quality_issue i ON i.run_id = r.run_id {since}"
    );
    let mut out = OpenOrders {
        cols: Vec::new(),
        index: FastMap::default(),
    };
    // Per work order: its latest row (batch, row, run time, open).
    let mut latest: FastMap<String, (usize, usize, i64, bool)> = FastMap::default();
    let mut key = String::new();
    for b in ctx.sql(&sql).await?.collect().await? {
        let s = |n: &str| -> Result<StringArray, QualityError> {
            let c = b
                .column_by_name(n)
                .ok_or_else(|| QualityError::Rule("quality_issue".into(), format!("no {n}")))?;
            Ok(datafusion::arrow::compute::cast(c, &DataType::Utf8)?
                .as_string::<i32>()
                .clone())
        };
        let c = OpenColumns {
            table: s("table_name")?,
            record: s("record_key")?,
            field: s("field")?,
            rule: s("rule")?,
            value: s("value")?,
            dimension: s("dimension")?,
            level: s("level")?,
            source_system: s("source_system")?,
            owning_team: s("owning_team")?,
            agent_id: s("agent_id")?,
            first_seen_run: s("first_seen_run")?,
            first_seen_at: b
                .column_by_name("first_seen_at")
                .map(|c| c.as_primitive::<Int64Type>().clone()),
        };
        let (run_at, open) = match (b.column_by_name("run_at"), b.column_by_name("open")) {
            (Some(r), Some(o)) => (
                r.as_primitive::<Int64Type>().clone(),
                o.as_boolean().clone(),
            ),
            _ => {
                return Err(QualityError::Rule(
                    "quality_issue".into(),
                    "no run_at or status".into(),
                ));
            }
        };
        let n = out.cols.len();
        latest.reserve(b.num_rows());
        for i in 0..b.num_rows() {
            issue_key(
                &mut key,
                c.table.value(i),
                c.record.value(i),
                c.field.value(i),
                c.rule.value(i),
            );
            let row = (n, i, run_at.value(i), open.is_valid(i) && open.value(i));
            match latest.get_mut(key.as_str()) {
                Some(seen) if seen.2 >= row.2 => {}
                Some(seen) => *seen = row,
                None => {
                    latest.insert(key.clone(), row);
                }
            }
        }
        out.cols.push(c);
    }
    out.index = latest
        .into_iter()
        .filter(|(_, (_, _, _, open))| *open)
        .map(|(k, (b, i, _, _))| (k, (b, i)))
        .collect();
    Ok(out)
}

/// The oldest of the latest runs that checked each rule on every record
/// (microseconds), if every rule of the stored metrics has had one: no
/// `quality_issue` row before it can be the latest of its work order.
async fn issues_floor(ctx: &SessionContext) -> Result<Option<i64>, QualityError> {
    let sql = "SELECT min(cut) AS floor, count(*) - count(cut) AS uncut FROM (
      SELECT table_name, field, rule, CAST(max(CASE WHEN sample_rate >= 1.0 THEN run_at END) AS BIGINT) AS cut
      FROM quality_metric WHERE sample_rate IS NOT NULL GROUP BY table_name, field, rule
    ) t";
    let batches = ctx.sql(sql).await?.collect().await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let floor = datafusion::arrow::compute::cast(b.column(0), &DataType::Int64)?;
    let uncut = datafusion::arrow::compute::cast(b.column(1), &DataType::Int64)?;
    let (floor, uncut) = (
        floor.as_primitive::<Int64Type>(),
        uncut.as_primitive::<Int64Type>(),
    );
    Ok((floor.is_valid(0) && uncut.is_valid(0) && uncut.value(0) == 0).then(|| floor.value(0)))
}

/// The run a stored row belongs to.
struct Stamp<'a> {
    run_id: &'a str,
    at_us: i64,
    month: &'a str,
}

/// A text column of `items`.
fn text<'a, T>(items: &'a [T], f: impl Fn(&'a T) -> Option<&'a str>) -> ArrayRef {
    Arc::new(items.iter().map(f).collect::<StringArray>())
}

/// Append `n` rows to `def` in one commit: the run's columns, then `cols`
/// by name, cast to the declared types (undeclared ones null).
async fn store(
    lake: &Lake,
    def: &TableDef,
    stamp: &Stamp<'_>,
    n: usize,
    cols: Vec<(&str, ArrayRef)>,
) -> Result<(), QualityError> {
    if n == 0 {
        return Ok(());
    }
    let mut cols: HashMap<&str, ArrayRef> = cols.into_iter().collect();
    cols.insert("run_id", Arc::new(StringArray::from(vec![stamp.run_id; n])));
    cols.insert(
        "run_at",
        Arc::new(TimestampMicrosecondArray::from(vec![stamp.at_us; n]).with_timezone("UTC")),
    );
    cols.insert(
        "run_month",
        Arc::new(StringArray::from(vec![stamp.month; n])),
    );
    let schema = def.arrow_schema();
    let arrays = schema
        .fields()
        .iter()
        .map(|f| match cols.get(f.name().as_str()) {
            Some(a) => Ok(datafusion::arrow::compute::cast(a, f.data_type())?),
            None => Ok(datafusion::arrow::array::new_null_array(f.data_type(), n)),
        })
        .collect::<Result<Vec<_>, QualityError>>()?;
    let batch = RecordBatch::try_new(schema, arrays)?;
    let ctx = crate::lake::session::write_context();
    // Every key holds this run's fresh id: no row can be in the table yet,
    // so nothing is looked up among the earlier runs' rows.
    crate::lake::append_new(
        lake,
        &ctx,
        def,
        ctx.read_batch(batch)?,
        vec![
            ("operation".to_string(), "quality".into()),
            ("run_id".to_string(), stamp.run_id.into()),
        ],
    )
    .await?;
    Ok(())
}

/// Run the rules in scope and store what they found.
pub async fn run_quality(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    masks: &crate::security::Masks,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<RunSummary, QualityError> {
    let run_at = chrono::Utc::now();
    let run_id = format!("QR{}", &crate::security::audit::fresh_id()[..20]);
    let seed = opts
        .seed
        .unwrap_or_else(|| (udf::sample(&run_id, 0) * (1u64 << 53) as f64) as i64);
    // Tables an older release declared differently, still empty, take
    // their current declaration before anything reads them.
    for name in ["quality_metric", "quality_issue"] {
        lake.open_or_create(catalog.table(name)?).await?;
    }
    let ctx = context(config, lake, catalog, masks, opts.as_of).await?;
    let scope = scope(config, &ctx, opts, seed).await?;
    let plans = rules::plans(config, catalog)?;
    // The open work orders are read while the rules run (the two only
    // meet once both are done).
    let started = std::time::Instant::now();
    let before = tokio::spawn({
        let ctx = ctx.clone();
        async move { open_issues(&ctx).await }
    });
    let eval = run::evaluate(config, &ctx, catalog, &plans, &scope, progress).await;
    let before = before
        .await
        .map_err(|e| QualityError::Rule("quality_issue".into(), e.to_string()))??;
    let eval = eval?;
    let checked = started.elapsed();
    let threshold = config.quality.threshold;

    // This run's failures, each keeping the run that first found it.
    let now_us = run_at.timestamp_micros();
    let month = run_at.format("%Y-%m").to_string();
    let mut summary = RunSummary {
        run_id: run_id.clone(),
        as_of: opts.as_of,
        full: opts.full,
        seed,
        levels: scope
            .rates
            .iter()
            .map(|(l, r)| (format!("{l:?}"), *r))
            .collect(),
        records: eval.records,
        score: None,
        teams: BTreeMap::new(),
        open: 0,
        new: 0,
        fixed: 0,
        work_orders: 0,
        metrics: eval.metrics.len() as u64,
    };
    struct Row<'a> {
        f: Failure,
        status: &'static str,
        record_score: Option<f64>,
        first_run: &'a str,
        first_at: i64,
    }
    let OpenOrders {
        cols: open_cols,
        index: mut open,
    } = before;
    let mut rows: Vec<Row> = Vec::with_capacity(eval.failures.len());
    let mut below = std::collections::HashSet::new();
    let mut key = String::new();
    for f in eval.failures {
        issue_key(&mut key, &f.table, &f.record_key, &f.field, &f.rule);
        // Found again: no longer a candidate for closing.
        let (first_run, first_at) = match open.remove(key.as_str()) {
            Some((b, i)) => {
                let c = &open_cols[b];
                (
                    c.first_seen_run.value(i),
                    c.first_seen_at.as_ref().map_or(0, |a| a.value(i)),
                )
            }
            None => {
                summary.new += 1;
                (run_id.as_str(), now_us)
            }
        };
        if f.record_score < threshold {
            below.insert((f.table.clone(), f.record_key.clone()));
        }
        rows.push(Row {
            record_score: Some(f.record_score),
            f,
            status: "open",
            first_run,
            first_at,
        });
    }
    summary.open = rows.len() as u64;
    summary.work_orders = below.len() as u64;
    // Work orders this run looked at again and found passing are fixed.
    let evaluated: std::collections::HashSet<(&str, &str, &str)> = eval
        .evaluated
        .iter()
        .map(|(t, r, f, _)| (t.as_str(), r.as_str(), f.as_str()))
        .collect();
    for &(b, i) in open.values() {
        let c = &open_cols[b];
        let (table, record, field, rule) = (
            c.table.value(i),
            c.record.value(i),
            c.field.value(i),
            c.rule.value(i),
        );
        if !evaluated.contains(&(table, rule, field)) {
            continue;
        }
        let get = |a: &StringArray| a.is_valid(i).then(|| a.value(i).to_string());
        let level = get(&c.level)
            .and_then(|l| l.parse().ok())
            .unwrap_or(Level::L4);
        if !scope.samples(level, record) {
            continue;
        }
        summary.fixed += 1;
        rows.push(Row {
            f: Failure {
                table: table.to_string(),
                record_key: record.to_string(),
                field: field.to_string(),
                rule: rule.to_string(),
                dimension: get(&c.dimension).unwrap_or_default(),
                level,
                value: get(&c.value),
                source_system: get(&c.source_system).unwrap_or_default(),
                owning_team: get(&c.owning_team).unwrap_or_default(),
                agent_id: get(&c.agent_id),
                record_score: 0.0,
            },
            status: "fixed",
            record_score: None,
            first_run: if c.first_seen_run.is_valid(i) {
                c.first_seen_run.value(i)
            } else {
                ""
            },
            first_at: c.first_seen_at.as_ref().map_or(0, |a| a.value(i)),
        });
    }
    for m in &eval.metrics {
        if m.rule == "overall" && m.table == "*" && m.source_system == "*" {
            if m.owning_team == "*" {
                summary.score = Some(m.score);
            } else {
                summary.teams.insert(m.owning_team.clone(), m.score);
            }
        }
    }

    let stamp = Stamp {
        run_id: &run_id,
        at_us: now_us,
        month: &month,
    };
    // Issues first, metrics last: a run is complete once its metrics are
    // stored, and a run without them is ignored by the next.
    store(
        lake,
        catalog.table("quality_issue")?,
        &stamp,
        rows.len(),
        vec![
            ("table_name", text(&rows, |r| Some(r.f.table.as_str()))),
            ("record_key", text(&rows, |r| Some(r.f.record_key.as_str()))),
            ("field", text(&rows, |r| Some(r.f.field.as_str()))),
            ("rule", text(&rows, |r| Some(r.f.rule.as_str()))),
            ("dimension", text(&rows, |r| Some(r.f.dimension.as_str()))),
            ("level", text(&rows, |r| Some(r.f.level.name()))),
            ("value", text(&rows, |r| r.f.value.as_deref())),
            (
                "source_system",
                text(&rows, |r| Some(r.f.source_system.as_str())),
            ),
            (
                "owning_team",
                text(&rows, |r| Some(r.f.owning_team.as_str())),
            ),
            ("agent_id", text(&rows, |r| r.f.agent_id.as_deref())),
            (
                "record_score",
                Arc::new(
                    rows.iter()
                        .map(|r| r.record_score)
                        .collect::<Float64Array>(),
                ),
            ),
            ("status", text(&rows, |r| Some(r.status))),
            ("first_seen_run", text(&rows, |r| Some(r.first_run))),
            (
                "first_seen_at",
                Arc::new(
                    rows.iter()
                        .map(|r| Some(r.first_at))
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone("UTC"),
                ),
            ),
        ],
    )
    .await?;
    let issues_stored = started.elapsed();
    let ms = &eval.metrics;
    let n = ms.len();
    store(
        lake,
        catalog.table("quality_metric")?,
        &stamp,
        n,
        vec![
            (
                "as_of",
                Arc::new(Date32Array::from(vec![
                    crate::domain::days_since_epoch(
                        opts.as_of
                    );
                    n
                ])),
            ),
            ("table_name", text(ms, |m| Some(m.table.as_str()))),
            ("field", text(ms, |m| Some(m.field.as_str()))),
            ("rule", text(ms, |m| Some(m.rule.as_str()))),
            ("level", text(ms, |m| m.level.map(Level::name))),
            ("dimension", text(ms, |m| Some(m.dimension.as_str()))),
            (
                "source_system",
                text(ms, |m| Some(m.source_system.as_str())),
            ),
            ("owning_team", text(ms, |m| Some(m.owning_team.as_str()))),
            (
                "checked",
                Arc::new(ms.iter().map(|m| Some(m.checked)).collect::<Int64Array>()),
            ),
            (
                "passed",
                Arc::new(ms.iter().map(|m| Some(m.passed)).collect::<Int64Array>()),
            ),
            (
                "score",
                Arc::new(ms.iter().map(|m| Some(m.score)).collect::<Float64Array>()),
            ),
            (
                "sample_rate",
                Arc::new(
                    ms.iter()
                        .map(|m| m.level.and_then(|l| scope.rates.get(&l).copied()))
                        .collect::<Float64Array>(),
                ),
            ),
            ("sample_seed", Arc::new(Int64Array::from(vec![seed; n]))),
            ("full", Arc::new(BooleanArray::from(vec![opts.full; n]))),
        ],
    )
    .await?;
    tracing::info!(
        run_id = %run_id,
        checked_ms = checked.as_millis() as u64,
        issues_ms = (issues_stored - checked).as_millis() as u64,
        metrics_ms = (started.elapsed() - issues_stored).as_millis() as u64,
        issues = summary.open + summary.fixed,
        "quality run stored"
    );
    Ok(summary)
}

//! A quality run: evaluate the rules in scope, score records, tables,
//! sources and teams, carry the open work orders forward (closing those
//! whose record now passes) and store `quality_metric` and
//! `quality_issue`.

use std::collections::{BTreeMap, HashMap, HashSet};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::Scope;
use super::rules::{Lookups, TablePlan};
use super::udf::Texts;
use super::{FastMap, QualityError};
use crate::config::Config;
use crate::schema::{Catalog, Level};

/// One metric row: a rule's result for a table, field, source and team
/// (or an overall score, rule `overall`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metric {
    pub table: String,
    pub field: String,
    pub rule: String,
    pub dimension: String,
    pub level: Option<Level>,
    pub source_system: String,
    pub owning_team: String,
    pub checked: i64,
    pub passed: i64,
    pub score: f64,
}

/// One failing record field.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub table: String,
    pub record_key: String,
    pub field: String,
    pub rule: String,
    pub dimension: String,
    pub level: Level,
    pub value: Option<String>,
    pub source_system: String,
    pub owning_team: String,
    pub agent_id: Option<String>,
    pub record_score: f64,
}

/// What the rules found.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub metrics: Vec<Metric>,
    pub failures: Vec<Failure>,
    /// Rules evaluated, as (table, rule, field, level).
    pub evaluated: Vec<(String, String, String, Level)>,
    pub records: u64,
}

/// (table, field, rule, dimension, level, source, team) of a metric.
type MetricKey = (String, String, String, String, Level, String, String);

#[derive(Default, Clone, Copy)]
struct Tally {
    checked: i64,
    passed: i64,
}

/// Weighted score of per-dimension tallies (`None` when nothing weighted
/// was checked).
fn weighted(weights: &BTreeMap<String, f64>, dims: &BTreeMap<&str, Tally>) -> Option<f64> {
    let (mut sum, mut total) = (0.0, 0.0);
    for (d, t) in dims {
        let w = weights.get(*d).copied().unwrap_or(0.0);
        if t.checked > 0 && w > 0.0 {
            sum += w * (t.passed as f64 / t.checked as f64 * 100.0);
            total += w;
        }
    }
    (total > 0.0).then(|| sum / total)
}

/// A column of the rules' query as text, read as it came (stored text is
/// not copied; other types are cast).
fn texts(b: &RecordBatch, name: &str) -> Result<Texts, QualityError> {
    let c = b
        .column_by_name(name)
        .cloned()
        .unwrap_or_else(|| new_null_array(&DataType::Utf8, b.num_rows()));
    Ok(Texts::of_array(&c)?)
}

/// Stops a spawned task when dropped (an error ends a run early).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the plan's lookups find (see [`Lookups`]), from `ctx`.
pub async fn lookups(ctx: &SessionContext, plan: &TablePlan) -> Result<Lookups, QualityError> {
    let failed = |e: datafusion::error::DataFusionError| {
        QualityError::Rule(plan.table.clone(), format!("{e}"))
    };
    let (duplicates, first_loads) = plan.lookup_queries();
    let mut found = Lookups {
        duplicates: true,
        first_loads: None,
        records_smaller: false,
    };
    if let Some(other) = plan.first_lookup() {
        // Counts the tables' logs answer (no scan).
        let q = format!(
            "SELECT (SELECT count(*) FROM {}) AS records, (SELECT count(*) FROM {other}) AS lookup",
            plan.table
        );
        let b = ctx.sql(&q).await.map_err(failed)?.collect().await?;
        let count = |c: &str| {
            b.first()
                .and_then(|b| b.column_by_name(c))
                .and_then(|a| a.as_primitive_opt::<Int64Type>().map(|a| a.value(0)))
        };
        found.records_smaller =
            matches!((count("records"), count("lookup")), (Some(r), Some(l)) if r <= l);
    }
    if let Some(q) = duplicates {
        let count = async |q: &str| {
            let b = ctx.sql(q).await.map_err(failed)?.collect().await?;
            Ok::<_, QualityError>(
                b.first()
                    .and_then(|b| {
                        b.column(0)
                            .as_primitive_opt::<Int64Type>()
                            .map(|a| a.value(0))
                    })
                    .unwrap_or(1),
            )
        };
        // Integers grouped first; the text only when two hashes meet.
        found.duplicates = count(&q.hashed).await? > 0 && count(&q.exact).await? > 0;
    }
    if let Some(q) = first_loads {
        // Each source's first load as a constant of the column's own type:
        // its raw value cast back (`arrow_cast`), exact to the microsecond.
        let q = format!(
            "SELECT CAST(source_system AS VARCHAR) AS s, CAST(first_loaded AS BIGINT) AS v, \
             arrow_typeof(first_loaded) AS ty FROM ({q}) WHERE first_loaded IS NOT NULL"
        );
        let mut loads = Vec::new();
        for b in ctx.sql(&q).await.map_err(failed)?.collect().await? {
            let (s, ty) = (texts(&b, "s")?, texts(&b, "ty")?);
            let v = b
                .column_by_name("v")
                .and_then(|a| a.as_primitive_opt::<Int64Type>().cloned())
                .ok_or_else(|| QualityError::Rule(plan.table.clone(), "first loads".into()))?;
            for r in 0..b.num_rows() {
                let (Some(s), Some(ty)) = (s.get(r), ty.get(r)) else {
                    continue;
                };
                loads.push((
                    s.to_string(),
                    format!("arrow_cast({}, '{}')", v.value(r), ty.replace('\'', "''")),
                ));
            }
        }
        found.first_loads = Some(loads);
    }
    Ok(found)
}

/// What tallying a table's rules' query needs to know of its checks.
struct Shape {
    table: String,
    key_len: usize,
    checks: Vec<super::rules::Check>,
    /// Per check: its dimension's index in [`crate::config::DIMENSIONS`].
    dim_of: Vec<usize>,
    weights: BTreeMap<String, f64>,
    /// Records tallied so far by every partition (for the progress line).
    seen: std::sync::atomic::AtomicU64,
}

/// One partition's tallies: per (source, team) group and check, and per
/// check naming its own team (teams and sources interned in `names`).
struct Part {
    records: u64,
    names: Vec<String>,
    groups: Vec<((u32, u32), Vec<Tally>)>,
    own_team: FastMap<(usize, u32, u32), Tally>,
    failures: Vec<Failure>,
}

/// Tally one partition of a table's rules' query: each check's passed and
/// checked per (source, team), and every failing record field.
async fn tally(
    mut stream: datafusion::execution::SendableRecordBatchStream,
    shape: std::sync::Arc<Shape>,
) -> Result<Part, QualityError> {
    let Shape {
        table,
        key_len,
        checks,
        dim_of,
        weights,
        seen,
    } = shape.as_ref();
    let mut records = 0;
    let mut names: Vec<String> = Vec::new();
    let mut ids: FastMap<String, u32> = FastMap::default();
    let mut intern = |s: &str| -> u32 {
        if let Some(i) = ids.get(s) {
            return *i;
        }
        let i = names.len() as u32;
        names.push(s.to_string());
        ids.insert(s.to_string(), i);
        i
    };
    // The group of the row before is reused without a lookup.
    let mut groups: Vec<((u32, u32), Vec<Tally>)> = Vec::new();
    let mut group_of: FastMap<(u32, u32), usize> = FastMap::default();
    let mut last_group: Option<((u32, u32), usize)> = None;
    let mut own_team: FastMap<(usize, u32, u32), Tally> = FastMap::default();
    let mut failures = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b?;
        seen.fetch_add(b.num_rows() as u64, std::sync::atomic::Ordering::Relaxed);
        let keys = (0..*key_len)
            .map(|i| texts(&b, &format!("k{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let record_key = |r: usize| -> String {
            // `concat_ws('|', …)`: the filled parts joined.
            let parts: Vec<&str> = keys.iter().filter_map(|k| k.get(r)).collect();
            parts.join("|")
        };
        let sources = texts(&b, "source_system")?;
        let teams = texts(&b, "owning_team")?;
        let agents = texts(&b, "agent_id")?;
        let mut cs: Vec<BooleanArray> = Vec::with_capacity(checks.len());
        let mut vs: Vec<Texts> = Vec::with_capacity(checks.len());
        let mut ts: Vec<Option<Texts>> = Vec::with_capacity(checks.len());
        for (n, c) in checks.iter().enumerate() {
            let a: ArrayRef = b
                .column_by_name(&format!("c{n}"))
                .cloned()
                .ok_or_else(|| QualityError::Rule(table.clone(), format!("no c{n}")))?;
            cs.push(a.as_boolean().clone());
            vs.push(texts(&b, &format!("v{n}"))?);
            ts.push(if c.team.is_some() {
                Some(texts(&b, &format!("t{n}"))?)
            } else {
                None
            });
        }
        // Neighbouring rows mostly share their source and team: each is
        // hashed only when it differs from the row before.
        let mut last_source: Option<(&str, u32)> = None;
        let mut last_team: Option<(&str, u32)> = None;
        for r in 0..b.num_rows() {
            records += 1;
            let source = sources.get(r).unwrap_or("unknown");
            let team = teams.get(r).unwrap_or("unassigned");
            let sid = match last_source {
                Some((s, id)) if s == source => id,
                _ => {
                    let id = intern(source);
                    last_source = Some((source, id));
                    id
                }
            };
            let tid = match last_team {
                Some((t, id)) if t == team => id,
                _ => {
                    let id = intern(team);
                    last_team = Some((team, id));
                    id
                }
            };
            let g = match last_group {
                Some((k, g)) if k == (sid, tid) => g,
                _ => {
                    let g = *group_of.entry((sid, tid)).or_insert_with(|| {
                        groups.push(((sid, tid), vec![Tally::default(); checks.len()]));
                        groups.len() - 1
                    });
                    last_group = Some(((sid, tid), g));
                    g
                }
            };
            let group = &mut groups[g].1;
            let mut dims = [Tally::default(); 6];
            let mut failed = false;
            for n in 0..checks.len() {
                if cs[n].is_null(r) {
                    continue;
                }
                let ok = i64::from(cs[n].value(r));
                let d = &mut dims[dim_of[n]];
                d.checked += 1;
                d.passed += ok;
                failed |= ok == 0;
                match ts[n].as_ref().and_then(|a| a.get(r)) {
                    Some(own) => {
                        let t = own_team.entry((n, sid, intern(own))).or_default();
                        t.checked += 1;
                        t.passed += ok;
                    }
                    None => {
                        group[n].checked += 1;
                        group[n].passed += ok;
                    }
                }
            }
            if !failed {
                continue;
            }
            let by_dim: BTreeMap<&str, Tally> = crate::config::DIMENSIONS
                .iter()
                .zip(dims)
                .map(|(d, t)| (*d, t))
                .collect();
            let record_score = weighted(weights, &by_dim).unwrap_or(0.0);
            let key = record_key(r);
            for (n, c) in checks.iter().enumerate() {
                if cs[n].is_null(r) || cs[n].value(r) {
                    continue;
                }
                let team = ts[n].as_ref().and_then(|a| a.get(r)).unwrap_or(team);
                failures.push(Failure {
                    table: table.clone(),
                    record_key: key.clone(),
                    field: c.field.clone(),
                    rule: c.rule.clone(),
                    dimension: c.dimension.clone(),
                    level: c.level,
                    value: vs[n].get(r).map(str::to_string),
                    source_system: source.to_string(),
                    owning_team: team.to_string(),
                    agent_id: agents.get(r).map(str::to_string),
                    record_score,
                });
            }
        }
    }
    Ok(Part {
        records,
        names,
        groups,
        own_team,
        failures,
    })
}

/// Evaluate the plans' checks in `scope` over `ctx` (the lake's tables,
/// the mask and quality functions registered).
pub async fn evaluate(
    config: &Config,
    ctx: &SessionContext,
    catalog: &Catalog,
    plans: &[TablePlan],
    scope: &Scope,
    progress: &dyn crate::progress::Progress,
) -> Result<Evaluation, QualityError> {
    let weights = &config.quality.weights;
    let mut eval = Evaluation::default();
    let mut tallies: BTreeMap<MetricKey, Tally> = BTreeMap::new();
    let task = progress.task(
        "checking",
        Some(plans.len() as u64),
        crate::progress::Unit::Items("tables"),
    );
    // Each table's lookups are found while the table before it is checked
    // (one ahead): they are small queries a core is often free for.
    let due: Vec<TablePlan> = plans
        .iter()
        .filter(|p| p.checks.iter().any(|c| scope.includes(c.level)))
        .cloned()
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let ahead = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            for plan in &due {
                let found = lookups(&ctx, plan).await;
                if tx.send(found).await.is_err() {
                    return;
                }
            }
        }
    });
    let _stop = AbortOnDrop(ahead);
    for plan in plans {
        if !plan.checks.iter().any(|c| scope.includes(c.level)) {
            task.inc(1);
            continue;
        }
        let found = rx.recv().await.ok_or_else(|| {
            QualityError::Rule(plan.table.clone(), "the lookups stopped".into())
        })??;
        let Some(compiled) = plan.compile(scope, &found) else {
            task.inc(1);
            continue;
        };
        task.set_message(&plan.table);
        let started = std::time::Instant::now();
        let records_before = eval.records;
        let checks: Vec<_> = compiled.checks.iter().map(|i| &plan.checks[*i]).collect();
        for c in &checks {
            eval.evaluated
                .push((plan.table.clone(), c.rule.clone(), c.field.clone(), c.level));
        }
        let df = ctx
            .sql(&compiled.sql)
            .await
            .map_err(|e| QualityError::Rule(plan.table.clone(), format!("{e}")))?;
        let physical = df.create_physical_plan().await?;
        // Each of the plan's partitions is tallied by its own task: one
        // reader of the whole output was the slowest step of a wide table
        // (a core idle while the other tallied).
        let shape = std::sync::Arc::new(Shape {
            table: plan.table.clone(),
            key_len: plan.key_len(),
            dim_of: checks
                .iter()
                .map(|c| {
                    crate::config::DIMENSIONS
                        .iter()
                        .position(|d| *d == c.dimension)
                        .unwrap_or(0)
                })
                .collect(),
            checks: checks.iter().map(|c| (*c).clone()).collect(),
            weights: weights.clone(),
            seen: Default::default(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for p in 0..physical
            .properties()
            .output_partitioning()
            .partition_count()
        {
            let stream = physical.execute(p, ctx.task_ctx())?;
            tasks.spawn(tally(stream, shape.clone()));
        }
        let mut parts = Vec::new();
        let ticks = std::time::Duration::from_millis(250);
        loop {
            let Ok(next) = tokio::time::timeout(ticks, tasks.join_next()).await else {
                let seen = shape.seen.load(std::sync::atomic::Ordering::Relaxed);
                task.set_message(&format!("{}: {seen} records", plan.table));
                continue;
            };
            let Some(part) = next else { break };
            let part =
                part.map_err(|e| QualityError::Rule(plan.table.clone(), e.to_string()))??;
            eval.records += part.records;
            parts.push(part);
        }
        for part in parts {
            eval.failures.extend(part.failures);
            let mut add = |n: usize, sid: u32, tid: u32, t: Tally| {
                if t.checked == 0 {
                    return;
                }
                let c = checks[n];
                let m = tallies
                    .entry((
                        plan.table.clone(),
                        c.field.clone(),
                        c.rule.clone(),
                        c.dimension.clone(),
                        c.level,
                        part.names[sid as usize].clone(),
                        part.names[tid as usize].clone(),
                    ))
                    .or_default();
                m.checked += t.checked;
                m.passed += t.passed;
            };
            for ((sid, tid), group) in &part.groups {
                for (n, t) in group.iter().enumerate() {
                    add(n, *sid, *tid, *t);
                }
            }
            for ((n, sid, tid), t) in &part.own_team {
                add(*n, *sid, *tid, *t);
            }
        }
        let checked_at = started.elapsed();
        // Where a slow table's time went: its plan with each operator's
        // rows and times (CUSTLAKE_LOG=custlake::quality=debug).
        if tracing::enabled!(tracing::Level::DEBUG) {
            let shown = crate::query::plan_with_metrics(physical.as_ref());
            tracing::debug!(table = %plan.table, "the rules' plan, with its metrics:\n{shown}");
        }
        quarantined(ctx, catalog, plan, scope, &mut tallies).await?;
        tracing::info!(
            table = %plan.table,
            records = eval.records - records_before,
            rules_ms = checked_at.as_millis() as u64,
            quarantine_ms = (started.elapsed() - checked_at).as_millis() as u64,
            "quality rules checked"
        );
        task.inc(1);
    }
    task.finish();
    for ((table, field, rule, dimension, level, source, team), t) in &tallies {
        eval.metrics.push(Metric {
            table: table.clone(),
            field: field.clone(),
            rule: rule.clone(),
            dimension: dimension.clone(),
            level: Some(*level),
            source_system: source.clone(),
            owning_team: team.clone(),
            checked: t.checked,
            passed: t.passed,
            score: if t.checked > 0 {
                t.passed as f64 / t.checked as f64 * 100.0
            } else {
                100.0
            },
        });
    }
    eval.metrics.extend(overall(weights, &eval.metrics));
    Ok(eval)
}

/// Overall scores: per table, source and team; per table; per source; per
/// team; and for everything: the dimensions' scores (passed / checked of
/// every rule of the dimension in the group) weighted.
fn overall(weights: &BTreeMap<String, f64>, metrics: &[Metric]) -> Vec<Metric> {
    type Group = (String, String, String);
    let mut groups: BTreeMap<Group, BTreeMap<&str, Tally>> = BTreeMap::new();
    let all = "*".to_string();
    for m in metrics {
        for g in [
            (
                m.table.clone(),
                m.source_system.clone(),
                m.owning_team.clone(),
            ),
            (m.table.clone(), all.clone(), all.clone()),
            (all.clone(), m.source_system.clone(), all.clone()),
            (all.clone(), all.clone(), m.owning_team.clone()),
            (all.clone(), all.clone(), all.clone()),
        ] {
            let t = groups
                .entry(g)
                .or_default()
                .entry(m.dimension.as_str())
                .or_default();
            t.checked += m.checked;
            t.passed += m.passed;
        }
    }
    groups
        .into_iter()
        .filter_map(|((table, source, team), dims)| {
            let score = weighted(weights, &dims)?;
            let (checked, passed) = dims
                .values()
                .fold((0, 0), |(c, p), t| (c + t.checked, p + t.passed));
            Some(Metric {
                table,
                field: "*".into(),
                rule: "overall".into(),
                dimension: "overall".into(),
                level: None,
                source_system: source,
                owning_team: team,
                checked,
                passed,
                score,
            })
        })
        .collect()
}

/// Rows of `plan`'s table that ingest quarantined count in the metrics of
/// the fields that failed: a missing required value against completeness,
/// any other field reason against validity (they are not in the table, so
/// they are counted here and listed in `quarantine`, not as issues).
async fn quarantined(
    ctx: &SessionContext,
    catalog: &Catalog,
    plan: &TablePlan,
    scope: &Scope,
    tallies: &mut BTreeMap<MetricKey, Tally>,
) -> Result<(), QualityError> {
    let by_field: HashMap<(&str, &str), Level> = plan
        .checks
        .iter()
        .filter(|c| (c.rule == "valid" || c.rule == "complete") && scope.includes(c.level))
        .map(|c| ((c.rule.as_str(), c.field.as_str()), c.level))
        .collect();
    if by_field.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT batch_id, line, source_system, entity, reasons, raw FROM quarantine WHERE table_name = '{}'",
        plan.table.replace('\'', "''")
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    for b in &batches {
        let (batch, lines, sources, entities, reasons, raws) = (
            texts(b, "batch_id")?,
            texts(b, "line")?,
            texts(b, "source_system")?,
            texts(b, "entity")?,
            texts(b, "reasons")?,
            texts(b, "raw")?,
        );
        for r in 0..b.num_rows() {
            let key = format!(
                "quarantine|{}|{}",
                batch.get(r).unwrap_or_default(),
                lines.get(r).unwrap_or_default()
            );
            let source = sources.get(r).unwrap_or("unknown").to_string();
            let team = team_of(catalog, &source, entities.get(r), raws.get(r));
            let mut seen = HashSet::new();
            for reason in reasons.get(r).unwrap_or_default().split(';') {
                let Some((code, field)) = reason.trim().split_once(':') else {
                    continue;
                };
                let rule = if code == "MISSING_REQUIRED" {
                    "complete"
                } else {
                    "valid"
                };
                let Some(level) = by_field.get(&(rule, field)) else {
                    continue;
                };
                if !scope.samples(*level, &key) || !seen.insert((rule, field.to_string())) {
                    continue;
                }
                let dimension = if rule == "complete" {
                    "completeness"
                } else {
                    "validity"
                };
                tallies
                    .entry((
                        plan.table.clone(),
                        field.to_string(),
                        rule.to_string(),
                        dimension.to_string(),
                        *level,
                        source.clone(),
                        team.clone(),
                    ))
                    .or_default()
                    .checked += 1;
            }
        }
    }
    Ok(())
}

/// The owning team of a quarantined row: its source column for
/// `owning_team` in the raw row, where the mapping has one.
fn team_of(catalog: &Catalog, source: &str, entity: Option<&str>, raw: Option<&str>) -> String {
    let column = entity
        .and_then(|e| catalog.entity(source, e).ok())
        .and_then(|m| m.columns.get("owning_team").cloned());
    let value = column.and_then(|c| {
        let row: serde_json::Value = serde_json::from_str(raw?).ok()?;
        row.get(&c)?
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    });
    value.unwrap_or_else(|| "unassigned".into())
}

/// Partitions of a table's rules' query per thread the context has.
const SPLIT: usize = 4;

/// Make `ctx` (the lake's tables) a context for the rules: the mask
/// functions, the quality functions as of `as_of`, and joins that build
/// their left side as written, without repartitioning either side. A
/// table's query writes each lookup left of a `RIGHT JOIN` with the
/// table's records: the planner would otherwise pick the side whose files
/// are smaller, though the records carry every checked column and the
/// lookup only a few (a million payments were hashed to look up two
/// million source records' teams), and would reshuffle every record
/// between threads for each join.
pub fn prepare(ctx: &SessionContext, masks: &crate::security::Masks, as_of: chrono::NaiveDate) {
    masks.register(ctx);
    super::udf::register(ctx, as_of);
    let state = ctx.state_ref();
    let mut state = state.write();
    let optimizer = &mut state.config_mut().options_mut().optimizer;
    optimizer.join_reordering = false;
    optimizer.repartition_joins = false;
    // Four partitions a thread: the threads take the next partition as
    // they finish one, so one that reads slower data (a wide source's
    // records, the end of a large file) no longer leaves a core idle at a
    // table's end. Measured at a million customers on two threads: 12.6 s
    // with two partitions, 11.9 s with eight.
    let execution = &mut state.config_mut().options_mut().execution;
    execution.target_partitions = execution.target_partitions.max(1) * SPLIT;
    // Whole tables are read: a page index only costs its reading.
    state
        .config_mut()
        .options_mut()
        .execution
        .parquet
        .enable_page_index = false;
}

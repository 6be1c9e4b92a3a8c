//! The renewal, cross-sell and churn lists: candidates by the rules of
//! `sql/analytics/` (`renewals.sql`, `cross_sell.sql`, `churn.sql`, all
//! over `reachable.sql`), put in priority order and assigned to agents by
//! `assign.sql`, then stored as a run (`list_run`) with its lines
//! (`list_line`), so the same run reads back the same lines later and can
//! be recomputed from the table versions it read ([`verify`]).
//!
//! A list is computed over the whole lake (assignment needs every line of
//! a team); who sees which lines, and which fields in clear, is the
//! principal's secured view of `list_line` ([`LINES_SQL`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Date32Type, TimestampMicrosecondType};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;

use super::{AnalyticsError, bind_own, context, parse_date, rule};
use crate::config::Config;
use crate::lake::{AsOf, Lake, Tier};
use crate::schema::Catalog;

/// The columns of a list line as a principal reads them, in order.
pub const LINE_COLUMNS: &str = "line, customer_id, name, phone, policies, earliest_expiry, \
     total_premium, value_score, value_tier, churn_risk, lifecycle_stage, detail, team, region, agent_id";

/// A run's lines as the principal may see them (`$run_id`).
pub const LINES_SQL: &str = "SELECT line, customer_id, name, phone, policies, earliest_expiry, \
     total_premium, value_score, value_tier, churn_risk, lifecycle_stage, detail, team, region, agent_id \
     FROM list_line WHERE run_id = $run_id ORDER BY line";

/// The tables a list reads: their versions are kept with the run, and a
/// list is computed in a context holding these alone.
const READS: [&str; 9] = [
    "customer",
    "customer_xref",
    "policy",
    "consent",
    "lifecycle_event",
    "customer_score",
    "agent",
    "source_customer",
    "code_list",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListKind {
    Renewals,
    CrossSell,
    Churn,
}

impl ListKind {
    pub const ALL: [ListKind; 3] = [Self::Renewals, Self::CrossSell, Self::Churn];

    /// The name in paths and `list_run.kind`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Renewals => "renewals",
            Self::CrossSell => "cross-sell",
            Self::Churn => "churn",
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Self::Renewals => "renewals",
            Self::CrossSell => "cross_sell",
            Self::Churn => "churn",
        }
    }

    pub fn parse(s: &str) -> Result<Self, AnalyticsError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                AnalyticsError::Invalid(format!(
                    "no list {s:?}: the lists are renewals, cross-sell and churn"
                ))
            })
    }
}

/// What a list is asked for (each option as given; `None`: the default).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// The list's date D (YYYY-MM-DD; default today).
    pub as_of: Option<String>,
    /// Renewals only: policies expiring in [D, D + within_days] (default 30).
    pub within_days: Option<u32>,
    /// Only this product line (renewals: the expiring policies' line;
    /// cross-sell: the line offered; churn: customers holding it).
    pub product_line: Option<String>,
    /// Only customers of this owning team.
    pub team: Option<String>,
    /// Only customers of this region.
    pub region: Option<String>,
}

/// A stored list run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListRun {
    pub run_id: String,
    pub kind: ListKind,
    /// The parameters as applied (JSON object of text values).
    pub parameters: serde_json::Value,
    pub as_of: chrono::NaiveDate,
    pub scores_as_of: Option<chrono::NaiveDate>,
    pub versions: serde_json::Value,
    pub principal: String,
    pub role: String,
    pub row_count: i64,
    pub assigned: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Check a request against the rules and give the rule's parameters as
/// text, with D.
pub fn parameters(
    config: &Config,
    catalog: &Catalog,
    kind: ListKind,
    req: &ListRequest,
) -> Result<(chrono::NaiveDate, BTreeMap<String, String>), AnalyticsError> {
    let as_of = parse_date("as_of", req.as_of.as_deref().unwrap_or("today"))?;
    let mut p = BTreeMap::new();
    p.insert("as_of".to_string(), as_of.to_string());
    match (kind, req.within_days) {
        (ListKind::Renewals, days) => {
            let days = days.unwrap_or(30);
            let max = config.analytics.max_within_days;
            if days > max {
                return Err(AnalyticsError::Invalid(format!(
                    "within_days {days}: at most {max} (analytics.max_within_days)"
                )));
            }
            p.insert("within_days".into(), days.to_string());
        }
        (_, Some(_)) => {
            return Err(AnalyticsError::Invalid(format!(
                "within_days: only the renewal list takes it, not {}",
                kind.name()
            )));
        }
        (_, None) => {}
    }
    for (name, value, codes) in [
        ("product_line", &req.product_line, Some("product_line")),
        ("region", &req.region, Some("region")),
        ("team", &req.team, None),
    ] {
        let v = match value.as_deref().map(str::trim) {
            None | Some("") | Some("*") => "*".to_string(),
            Some(v) => v.to_string(),
        };
        if v.chars().count() > 100 {
            return Err(AnalyticsError::Invalid(format!(
                "{name}: at most 100 characters"
            )));
        }
        if let Some(set) = codes
            && v != "*"
            && !catalog.codes[set].contains(&v)
        {
            return Err(AnalyticsError::Invalid(format!(
                "{name} {v:?}: not a standard code (one of {})",
                catalog.codes[set].join(", ")
            )));
        }
        p.insert(name.to_string(), v);
    }
    for pair in &config.analytics.cross_sell {
        for line in [&pair.has, &pair.lacks] {
            if !catalog.codes["product_line"].contains(line) {
                return Err(AnalyticsError::Invalid(format!(
                    "analytics.cross_sell: {line:?} is not a product line"
                )));
            }
        }
    }
    Ok((as_of, p))
}

/// The latest score run on or before `as_of`.
pub async fn scores_date(
    ctx: &SessionContext,
    as_of: chrono::NaiveDate,
) -> Result<Option<chrono::NaiveDate>, AnalyticsError> {
    let b = ctx
        .sql("SELECT max(as_of) FROM customer_score WHERE as_of <= $1")
        .await?
        .with_param_values(vec![ScalarValue::Date32(Some(
            crate::domain::days_since_epoch(as_of),
        ))])?
        .collect()
        .await?;
    Ok(b.iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.column(0).as_primitive::<Date32Type>().clone())
        .filter(|c| c.is_valid(0))
        .and_then(|c| crate::domain::date_from_days(c.value(0))))
}

/// A list's lines in priority order, with their agents, computed in `ctx`
/// (the lake's tables, as [`context`] gives them).
pub async fn lines(
    config: &Config,
    ctx: &SessionContext,
    kind: ListKind,
    params: &BTreeMap<String, String>,
    scores_as_of: Option<chrono::NaiveDate>,
) -> Result<Vec<RecordBatch>, AnalyticsError> {
    let started = std::time::Instant::now();
    let df = plan(config, ctx, kind, params, scores_as_of).await?;
    let planned = started.elapsed();
    let physical = df.create_physical_plan().await?;
    tracing::debug!(
        list = kind.name(),
        planned_ms = planned.as_millis() as u64,
        optimized_ms = (started.elapsed() - planned).as_millis() as u64,
        "list: the tables it starts from computed and its statement planned"
    );
    let batches = datafusion::physical_plan::collect(physical.clone(), ctx.task_ctx()).await?;
    // Where a slow list's time went: its plan with each operator's rows
    // and times (CUSTLAKE_LOG=custlake::analytics=debug).
    if tracing::enabled!(tracing::Level::DEBUG) {
        let shown = crate::query::plan_with_metrics(physical.as_ref());
        tracing::debug!(
            list = kind.name(),
            "the list's plan, with its metrics:\n{shown}"
        );
    }
    Ok(batches)
}

/// The plan of [`lines`] (its schema even when it has no rows).
pub async fn plan(
    config: &Config,
    ctx: &SessionContext,
    kind: ListKind,
    params: &BTreeMap<String, String>,
    scores_as_of: Option<chrono::NaiveDate>,
) -> Result<datafusion::dataframe::DataFrame, AnalyticsError> {
    let given: HashMap<String, String> = params.clone().into_iter().collect();
    let days = scores_as_of.map(crate::domain::days_since_epoch);
    let scores = ctx
        .sql("SELECT * FROM customer_score WHERE as_of = $1")
        .await?
        .with_param_values(vec![ScalarValue::Date32(days)])?;
    ctx.register_table("scores", scores.into_view())?;
    let pairs = RecordBatch::try_from_iter([
        (
            "has",
            Arc::new(StringArray::from_iter_values(
                config.analytics.cross_sell.iter().map(|p| p.has.as_str()),
            )) as ArrayRef,
        ),
        (
            "lacks",
            Arc::new(StringArray::from_iter_values(
                config.analytics.cross_sell.iter().map(|p| p.lacks.as_str()),
            )) as ArrayRef,
        ),
    ])?;
    ctx.register_batch("cross_sell_pairs", pairs)?;
    let bound = |q: &crate::query::named::NamedQuery| bind_own(config, q, &given);
    let candidates = rule(kind.rule())?;
    // The policies in force, which a rule may mention several times
    // (cross-sell: three), computed once for this statement: as a view
    // each mention would join policy to customer_xref again. The customers
    // telesales may call are computed beside them, at the same time (one
    // after the other, each left a core idle while its join's table was
    // built); a rule without `in_force` (renewals) reads them as a view,
    // which its few expiring customers' joins then read faster.
    let reachable = rule("reachable")?;
    if mentions(&candidates.sql, "in_force") {
        let kept = [("reachable", reachable), ("in_force", rule("in_force")?)];
        let tables = futures::future::try_join_all(kept.into_iter().map(|(name, q)| {
            let bound = &bound;
            async move {
                let df = ctx.sql(&q.sql).await?.with_param_values(bound(&q)?)?;
                let schema = Arc::new(df.schema().as_arrow().clone());
                let physical = df.create_physical_plan().await?;
                let parts = datafusion::physical_plan::collect_partitioned(
                    physical.clone(),
                    ctx.task_ctx(),
                )
                .await?;
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let shown = crate::query::plan_with_metrics(physical.as_ref());
                    tracing::debug!("{name}'s plan, with its metrics:\n{shown}");
                }
                let table = datafusion::datasource::MemTable::try_new(schema, parts)?;
                Ok::<_, AnalyticsError>((name, table))
            }
        }))
        .await?;
        for (name, table) in tables {
            ctx.register_table(name, Arc::new(table))?;
        }
    } else {
        let df = ctx
            .sql(&reachable.sql)
            .await?
            .with_param_values(bound(&reachable)?)?;
        ctx.register_table("reachable", df.into_view())?;
    }
    let df = ctx
        .sql(&candidates.sql)
        .await?
        .with_param_values(bound(&candidates)?)?;
    ctx.register_table("candidates", df.into_view())?;
    let assign = rule("assign")?;
    Ok(ctx.sql(&assign.sql).await?)
}

/// Whether `sql` names the table `name` (a whole word).
fn mentions(sql: &str, name: &str) -> bool {
    sql.match_indices(name).any(|(i, _)| {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        !sql[..i].ends_with(word) && !sql[i + name.len()..].starts_with(word)
    })
}

/// Each read table's version per tier (`null`: no such table there).
async fn versions(lake: &Lake, catalog: &Catalog) -> Result<serde_json::Value, AnalyticsError> {
    let mut wanted = Vec::new();
    for name in READS {
        let def = catalog.table(name)?;
        if crate::schema::BUILT_TABLES.contains(&name) {
            continue;
        }
        let tiers: &[Tier] = if def.tiered { &Tier::ALL } else { &[Tier::Hot] };
        wanted.extend(tiers.iter().map(|&tier| (name, def, tier)));
    }
    // The logs are read at the same time.
    let found = futures::future::try_join_all(wanted.iter().map(async |(_, def, tier)| {
        Ok::<_, AnalyticsError>(lake.open_in(def, *tier).await?.and_then(|t| t.version()))
    }))
    .await?;
    let mut out = serde_json::Map::new();
    for ((name, _, tier), version) in wanted.into_iter().zip(found) {
        let v = out
            .entry(name.to_string())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let serde_json::Value::Object(v) = v {
            v.insert(tier.name().to_string(), serde_json::json!(version));
        }
    }
    Ok(serde_json::Value::Object(out))
}

/// Who asked for a list.
pub struct Requester<'a> {
    pub principal: &'a str,
    pub role: &'a str,
}

/// Compute a list now and store it as a run with its lines.
pub async fn produce(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    kind: ListKind,
    req: &ListRequest,
    who: Requester<'_>,
) -> Result<ListRun, AnalyticsError> {
    let (as_of, params) = parameters(config, catalog, kind, req)?;
    let created_at = chrono::Utc::now();
    // Where a list's time goes, phase by phase (CUSTLAKE_LOG=custlake=debug).
    let started = std::time::Instant::now();
    let phase =
        |what: &str| tracing::debug!(ms = started.elapsed().as_millis() as u64, "list: {what}");
    // The versions and the context read the same Delta logs: at the same
    // time rather than one after the other.
    let (versions, ctx) = futures::future::try_join(
        versions(lake, catalog),
        super::context_reading(config, lake, catalog, None, Some(&READS)),
    )
    .await?;
    phase("tables opened");
    let scores_as_of = scores_date(&ctx, as_of).await?;
    phase("scores found");
    if scores_as_of.is_none() {
        return Err(AnalyticsError::Refused(format!(
            "no customer scores on or before {as_of}: run `custlake score --as-of {as_of}` first \
             (lists rank customers by their value score and churn risk)"
        )));
    }
    let batches = lines(config, &ctx, kind, &params, scores_as_of).await?;
    phase("lines computed");
    let run_id = format!("LR{}", &crate::security::audit::fresh_id()[..20]);
    let (mut row_count, mut assigned) = (0i64, 0i64);
    for b in &batches {
        row_count += b.num_rows() as i64;
        if let Some(a) = b.column_by_name("agent_id") {
            assigned += (a.len() - a.null_count()) as i64;
        }
    }
    let month = created_at.format("%Y-%m").to_string();
    let created = created_at.timestamp_micros();
    let write_ctx = crate::lake::session::write_context();
    if row_count > 0 {
        let def = catalog.table("list_line")?;
        let mut out = Vec::new();
        for b in &batches {
            out.push(shape(def, b, &run_id, created, &month)?);
        }
        let df = write_ctx.read_batches(out)?;
        // The run id is new: its lines cannot be in the table yet.
        crate::lake::append_new(
            lake,
            &write_ctx,
            def,
            df,
            vec![
                ("operation".into(), "list".into()),
                ("run_id".into(), run_id.clone().into()),
            ],
        )
        .await?;
    }
    let run = ListRun {
        run_id: run_id.clone(),
        kind,
        parameters: serde_json::json!(params),
        as_of,
        scores_as_of,
        versions,
        principal: who.principal.to_string(),
        role: who.role.to_string(),
        row_count,
        assigned,
        created_at,
    };
    phase("lines stored");
    let def = catalog.table("list_run")?;
    let batch = run_batch(def, &run, &month)?;
    crate::lake::append_new(
        lake,
        &write_ctx,
        def,
        write_ctx.read_batch(batch)?,
        vec![
            ("operation".into(), "list".into()),
            ("run_id".into(), run_id.into()),
        ],
    )
    .await?;
    phase("run stored");
    Ok(run)
}

/// A batch of computed lines in `list_line`'s columns.
fn shape(
    def: &crate::schema::TableDef,
    b: &RecordBatch,
    run_id: &str,
    created: i64,
    month: &str,
) -> Result<RecordBatch, AnalyticsError> {
    let n = b.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for f in &def.fields {
        let col: ArrayRef = match f.name.as_str() {
            "run_id" => Arc::new(StringArray::from(vec![run_id; n])),
            "created_at" => {
                Arc::new(TimestampMicrosecondArray::from(vec![created; n]).with_timezone("UTC"))
            }
            "run_month" => Arc::new(StringArray::from(vec![month; n])),
            name => {
                let c = b.column_by_name(name).ok_or_else(|| {
                    AnalyticsError::Rule("assign".into(), format!("gives no column {name}"))
                })?;
                cast(c, &f.ty.arrow())?
            }
        };
        cols.push(col);
    }
    Ok(RecordBatch::try_new(def.arrow_schema(), cols)?)
}

fn run_batch(
    def: &crate::schema::TableDef,
    run: &ListRun,
    month: &str,
) -> Result<RecordBatch, AnalyticsError> {
    let text = |s: &str| Arc::new(StringArray::from(vec![s.to_string()])) as ArrayRef;
    let date = |d: Option<chrono::NaiveDate>| {
        Arc::new(Date32Array::from(vec![
            d.map(crate::domain::days_since_epoch),
        ])) as ArrayRef
    };
    let mut cols = Vec::new();
    for f in &def.fields {
        cols.push(match f.name.as_str() {
            "run_id" => text(&run.run_id),
            "kind" => text(run.kind.name()),
            "parameters" => text(&run.parameters.to_string()),
            "as_of" => date(Some(run.as_of)),
            "scores_as_of" => date(run.scores_as_of),
            "versions" => text(&run.versions.to_string()),
            "principal" => text(&run.principal),
            "role" => text(&run.role),
            "row_count" => Arc::new(Int64Array::from(vec![run.row_count])) as ArrayRef,
            "assigned" => Arc::new(Int64Array::from(vec![run.assigned])) as ArrayRef,
            "created_at" => Arc::new(
                TimestampMicrosecondArray::from(vec![run.created_at.timestamp_micros()])
                    .with_timezone("UTC"),
            ) as ArrayRef,
            "run_month" => text(month),
            other => {
                return Err(AnalyticsError::Rule(
                    "list_run".into(),
                    format!("unknown column {other}"),
                ));
            }
        });
    }
    Ok(RecordBatch::try_new(def.arrow_schema(), cols)?)
}

/// A stored run by id (`ctx` holds `list_run`).
pub async fn find(ctx: &SessionContext, run_id: &str) -> Result<ListRun, AnalyticsError> {
    let b = ctx
        .sql(
            "SELECT run_id, kind, parameters, as_of, scores_as_of, versions, principal, role, \
             row_count, assigned, created_at FROM list_run WHERE run_id = $1",
        )
        .await?
        .with_param_values(vec![ScalarValue::Utf8(Some(run_id.to_string()))])?
        .collect()
        .await?;
    let Some(b) = b.iter().find(|b| b.num_rows() > 0) else {
        return Err(AnalyticsError::NotFound(format!("no list run {run_id:?}")));
    };
    let s = |i: usize| {
        cast(b.column(i), &datafusion::arrow::datatypes::DataType::Utf8)
            .ok()
            .map(|c| c.as_string::<i32>().value(0).to_string())
            .unwrap_or_default()
    };
    let d = |i: usize| {
        let c = b.column(i).as_primitive::<Date32Type>();
        c.is_valid(0)
            .then(|| crate::domain::date_from_days(c.value(0)))
            .flatten()
    };
    let json = |i: usize| serde_json::from_str(&s(i)).unwrap_or(serde_json::Value::Null);
    let created = b
        .column(10)
        .as_primitive::<TimestampMicrosecondType>()
        .value(0);
    Ok(ListRun {
        run_id: s(0),
        kind: ListKind::parse(&s(1))?,
        parameters: json(2),
        as_of: d(3).unwrap_or_default(),
        scores_as_of: d(4),
        versions: json(5),
        principal: s(6),
        role: s(7),
        row_count: b
            .column(8)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0),
        assigned: b
            .column(9)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0),
        created_at: chrono::DateTime::from_timestamp_micros(created).unwrap_or_default(),
    })
}

/// What recomputing a run gave.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub run_id: String,
    pub lines: usize,
    /// The lines that differ (at most 20, as `line: stored | recomputed`).
    pub differences: Vec<String>,
}

/// Recompute a stored run from the lake as it was when the run was made
/// (the same parameters, time travel to its creation) and compare line by
/// line with the stored lines.
pub async fn verify(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    run_id: &str,
) -> Result<Verified, AnalyticsError> {
    let now = context(config, lake, catalog, None).await?;
    let run = find(&now, run_id).await?;
    let stored = now
        .sql(LINES_SQL)
        .await?
        .with_param_values(vec![(
            "run_id",
            ScalarValue::Utf8(Some(run_id.to_string())),
        )])?
        .collect()
        .await?;
    let then = context(config, lake, catalog, Some(&AsOf::Time(run.created_at))).await?;
    let params: BTreeMap<String, String> = match &run.parameters {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect(),
        _ => BTreeMap::new(),
    };
    let again = match lines(config, &then, run.kind, &params, run.scores_as_of).await {
        Ok(b) => b,
        Err(e) if file_gone(&e) => {
            return Err(AnalyticsError::Refused(format!(
                "the lake as it was when run {run_id} was made ({}) can no longer be read: \
                 `tier apply` has since moved, purged or compacted files it read and removed \
                 them (a purged tier's at once, others after [retention] vacuum_grace_minutes) \
                 ({e})",
                run.created_at.format("%Y-%m-%d %H:%M:%S UTC")
            )));
        }
        Err(e) => return Err(e),
    };
    let (a, b) = (text_rows(&stored)?, text_rows(&again)?);
    let mut differences = Vec::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x != y && differences.len() < 20 {
            differences.push(format!(
                "line {}: {} | {}",
                i + 1,
                x.map_or("(none)", String::as_str),
                y.map_or("(none)", String::as_str)
            ));
        }
    }
    Ok(Verified {
        run_id: run.run_id,
        lines: a.len(),
        differences,
    })
}

/// Whether `e` is a data file of an older table version that is no longer
/// there (vacuumed since).
fn file_gone(e: &AnalyticsError) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if let Some(datafusion::object_store::Error::NotFound { .. }) =
            err.downcast_ref::<datafusion::object_store::Error>()
        {
            return true;
        }
        source = err.source();
    }
    // Parquet's reader carries the store's error as text.
    let text = e.to_string();
    text.contains("Object at location") && text.contains("not found")
}

/// Rows as text (columns joined by `|`), for comparison.
fn text_rows(batches: &[RecordBatch]) -> Result<Vec<String>, AnalyticsError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    Ok(out)
}

//! The report pack: each report is a query of `sql/reports/` with a
//! header saying how to chart it. A period's pack is generated once
//! (`custlake report`, the monthly `reports` job) and stored in
//! `report_row`: one header row per report (seq 0: its columns) and its
//! rows, each with the owning team it belongs to. Reading a report goes
//! through the reader's secured session, so a steward's row filter on
//! `report_row` leaves only their teams' rows; pages, CSV and JSON are
//! rendered from what is stored, so a month's report opens again
//! unchanged.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate, Utc};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use super::ReportError;
use super::chart::Measure;
pub use super::render::{chart_of, csv, html, index_html, json, write_dir};
use crate::config::Config;
use crate::lake::Lake;
use crate::progress::{Progress, Unit};
use crate::schema::Catalog;

/// The reports, as shipped in `sql/reports/` (in the pack's order).
const SHIPPED: [&str; 11] = [
    include_str!("../../sql/reports/01_data_health.sql"),
    include_str!("../../sql/reports/02_quality_by_source.sql"),
    include_str!("../../sql/reports/03_team_ranking.sql"),
    include_str!("../../sql/reports/04_work_orders.sql"),
    include_str!("../../sql/reports/05_duplicates.sql"),
    include_str!("../../sql/reports/06_customers_by_segment.sql"),
    include_str!("../../sql/reports/07_new_customers.sql"),
    include_str!("../../sql/reports/08_value_distribution.sql"),
    include_str!("../../sql/reports/09_silent_churned.sql"),
    include_str!("../../sql/reports/10_renewal_pipeline.sql"),
    include_str!("../../sql/reports/11_claims_by_segment.sql"),
];

/// A report: its header and its query.
#[derive(Debug, Clone, Serialize)]
pub struct ReportDef {
    pub name: String,
    pub title: String,
    pub description: String,
    /// `bar` or `line`.
    pub chart: String,
    /// The column along the x axis (one bar group or point per value).
    pub x: String,
    /// The column whose values are the bars of a group, or the lines.
    pub series: Option<String>,
    /// `y: column` (summed) or `ratio: numerator / denominator` (× 100).
    #[serde(skip)]
    pub measure: Measure,
    /// The column naming each row's owning team (row filters use it).
    pub team: Option<String>,
    /// A boolean column: its bars are flagged (drawn red).
    pub flag: Option<String>,
    pub sql: String,
}

fn parse(text: &str) -> Result<ReportDef, ReportError> {
    let mut h: HashMap<&str, String> = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("--") else {
            break;
        };
        if let Some((k, v)) = rest.trim().split_once(':') {
            h.insert(k.trim(), v.trim().to_string());
        }
    }
    let name = h.get("name").cloned().unwrap_or_default();
    let need = |k: &str| {
        h.get(k)
            .cloned()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ReportError::Definition(name.clone(), format!("its header has no {k}")))
    };
    let measure = match (h.get("y"), h.get("ratio")) {
        (Some(y), None) => Measure::Sum(y.clone()),
        (None, Some(r)) => match r.split_once('/') {
            Some((n, d)) => Measure::Ratio(n.trim().to_string(), d.trim().to_string()),
            None => {
                return Err(ReportError::Definition(
                    name,
                    "ratio is `numerator / denominator`".into(),
                ));
            }
        },
        _ => {
            return Err(ReportError::Definition(
                name,
                "give y (a column to sum) or ratio (numerator / denominator)".into(),
            ));
        }
    };
    let chart = need("chart")?;
    if !matches!(chart.as_str(), "bar" | "line") {
        return Err(ReportError::Definition(name, "chart is bar or line".into()));
    }
    Ok(ReportDef {
        title: need("title")?,
        description: need("description")?,
        x: need("x")?,
        name: need("name")?,
        chart,
        series: h.get("series").cloned(),
        measure,
        team: h.get("team").cloned(),
        flag: h.get("flag").cloned(),
        sql: text.to_string(),
    })
}

/// Every report of the pack, in order.
pub fn definitions() -> Result<Vec<ReportDef>, ReportError> {
    SHIPPED.iter().map(|t| parse(t)).collect()
}

/// The report named `name`.
pub fn definition(name: &str) -> Result<ReportDef, ReportError> {
    let all = definitions()?;
    let names = all.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    all.into_iter().find(|d| d.name == name).ok_or_else(|| {
        ReportError::NotFound(format!(
            "no report {name:?}; the reports are {}",
            names.join(", ")
        ))
    })
}

/// A calendar month reported on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// `YYYY-MM`.
    pub month: String,
    pub start: NaiveDate,
    /// The first day after it.
    pub end: NaiveDate,
}

impl Period {
    pub fn containing(d: NaiveDate) -> Self {
        let start = d.with_day(1).expect("day 1 exists");
        let end = start
            .checked_add_months(chrono::Months::new(1))
            .expect("a month after a date exists");
        Self {
            month: start.format("%Y-%m").to_string(),
            start,
            end,
        }
    }

    /// The month before `d`'s (the one a report pack on the 1st is for).
    pub fn before(d: NaiveDate) -> Self {
        Self::containing(d.with_day(1).expect("day 1 exists").pred_opt().unwrap_or(d))
    }

    pub fn parse(s: &str) -> Result<Self, ReportError> {
        NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
            .ok()
            .filter(|_| s.len() == 7)
            .map(Self::containing)
            .ok_or_else(|| {
                ReportError::Invalid(format!("period {s:?}: give a month as YYYY-MM (2026-10)"))
            })
    }
}

/// One row of a report: its columns in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(pub Vec<(String, serde_json::Value)>);

impl Row {
    /// The value of `column`, if the row has it.
    pub fn get(&self, column: &str) -> Option<&serde_json::Value> {
        self.0.iter().find(|(k, _)| k == column).map(|(_, v)| v)
    }

    fn text(&self, column: &str) -> String {
        match self.get(column) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        }
    }

    pub(super) fn number(&self, column: &str) -> f64 {
        match self.get(column) {
            Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0.0),
            _ => 0.0,
        }
    }
}

impl Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Row;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Row, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, serde_json::Value>()? {
                    out.push((k, v));
                }
                Ok(Row(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A report of a period, as stored (or as just generated).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub def: ReportDef,
    pub period: String,
    pub generated_at: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

/// What generating a period's pack did.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    pub period: String,
    pub generated_at: String,
    /// Each report's name and row count.
    pub reports: Vec<(String, usize)>,
    pub seconds: f64,
}

/// The query parameters of a period: its bounds, the report date (its
/// last day, or today while it runs), the twelve months to its end, the
/// renewal pipeline's end (three months after it) and the quality
/// settings.
fn params(config: &Config, period: &Period, today: NaiveDate) -> Vec<(&'static str, ScalarValue)> {
    let date = |d: NaiveDate| ScalarValue::Date32(Some(crate::domain::days_since_epoch(d)));
    let last = period.end.pred_opt().unwrap_or(period.start);
    let months = |n: u32, d: NaiveDate| d.checked_add_months(chrono::Months::new(n)).unwrap_or(d);
    let year_start = period
        .end
        .checked_sub_months(chrono::Months::new(12))
        .unwrap_or(period.start);
    vec![
        ("period_start", date(period.start)),
        ("period_end", date(period.end)),
        ("report_date", date(last.min(today.max(period.start)))),
        ("year_start", date(year_start)),
        ("pipeline_end", date(months(3, period.end))),
        (
            "threshold",
            ScalarValue::Float64(Some(config.quality.threshold)),
        ),
        (
            "escalate_after",
            ScalarValue::Int64(Some(i64::from(config.quality.escalate_after))),
        ),
    ]
}

/// The rows of `batches` as ordered JSON objects (nulls kept).
fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Row>, ReportError> {
    let mut out = Vec::new();
    for b in batches {
        let mut buf = Vec::new();
        {
            let mut w = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut buf);
            w.write(b)?;
            w.finish()?;
        }
        if buf.is_empty() {
            continue;
        }
        let rows: Vec<Row> = serde_json::from_slice(&buf)
            .map_err(|e| ReportError::Invalid(format!("report rows: {e}")))?;
        out.extend(rows);
    }
    Ok(out)
}

/// A context holding every declared table as it is now (empty where the
/// lake has none yet) and the golden views: what the generator reads.
async fn generator_context(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
) -> Result<SessionContext, ReportError> {
    let ctx = crate::query::context(config)?;
    crate::query::register_declared(&ctx, lake, catalog, None).await?;
    let names: Vec<String> = catalog.tables.iter().map(|t| t.name.clone()).collect();
    crate::query::register_golden_views_where(&ctx, &names, |_| true).await?;
    Ok(ctx)
}

/// Generate every report of `period` from the lake and store them
/// (replacing the period's earlier pack, in one commit).
pub async fn generate(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    period: &Period,
    today: NaiveDate,
    progress: &dyn Progress,
) -> Result<(Generated, Vec<Report>), ReportError> {
    let started = std::time::Instant::now();
    let defs = definitions()?;
    let ctx = generator_context(config, lake, catalog).await?;
    let bound = params(config, period, today);
    let generated_at = Utc::now();
    let at = generated_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let task = progress.task(
        &format!("report pack {}", period.month),
        Some(defs.len() as u64),
        Unit::Steps,
    );
    let mut reports = Vec::new();
    for def in defs {
        task.set_message(&def.name);
        let df = ctx.sql(&def.sql).await.map_err(|e| {
            ReportError::Definition(def.name.clone(), format!("does not plan: {e}"))
        })?;
        let wanted: Vec<(&str, ScalarValue)> = bound
            .iter()
            .filter(|(k, _)| def.sql.contains(&format!("${k}")))
            .cloned()
            .collect();
        let df = df.with_param_values(wanted)?;
        let columns: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let started_one = std::time::Instant::now();
        let batches = df.collect().await?;
        let rows = rows_of(&batches)?;
        tracing::info!(report = %def.name, rows = rows.len(), seconds = started_one.elapsed().as_secs_f64(), "report generated");
        reports.push(Report {
            def,
            period: period.month.clone(),
            generated_at: at.clone(),
            columns,
            rows,
        });
        task.inc(1);
    }
    store(lake, catalog, period, &at, &reports).await?;
    task.finish();
    Ok((
        Generated {
            period: period.month.clone(),
            generated_at: at,
            reports: reports
                .iter()
                .map(|r| (r.def.name.clone(), r.rows.len()))
                .collect(),
            seconds: started.elapsed().as_secs_f64(),
        },
        reports,
    ))
}

/// Replace `period`'s rows of `report_row` with `reports`.
async fn store(
    lake: &Lake,
    catalog: &Catalog,
    period: &Period,
    at: &str,
    reports: &[Report],
) -> Result<(), ReportError> {
    let def = catalog.table("report_row")?;
    let mut rows = Vec::new();
    for r in reports {
        let base = serde_json::json!({
            "period": period.month,
            "period_start": period.start.to_string(),
            "report": r.def.name,
            "generated_at": at,
            "period_month": period.month,
        });
        // seq 0: the report's columns, so an empty report (or one whose
        // rows a reader may not see) still opens with its columns.
        let mut header = base.clone();
        header["seq"] = 0.into();
        header["data"] = serde_json::to_string(&r.columns).unwrap_or_default().into();
        rows.push(header);
        for (i, row) in r.rows.iter().enumerate() {
            let mut v = base.clone();
            v["seq"] = (i as i64 + 1).into();
            v["data"] = serde_json::to_string(row).unwrap_or_default().into();
            if let Some(team) = &r.def.team {
                let t = row.text(team);
                v["owning_team"] = if t.is_empty() {
                    serde_json::Value::Null
                } else {
                    t.into()
                };
            }
            rows.push(v);
        }
    }
    let batch = crate::lake::json_rows(def, &rows)?;
    let ctx = crate::lake::session::write_context();
    let df = ctx.read_batch(batch)?;
    crate::lake::replace_where(
        lake,
        &ctx,
        def,
        df,
        crate::lake::Replace {
            column: "period",
            value: ScalarValue::Utf8(Some(period.month.clone())),
            partition: &period.month,
        },
        vec![
            ("operation".into(), "report".into()),
            ("period".into(), period.month.clone().into()),
        ],
    )
    .await?;
    Ok(())
}

/// A stored report of a period, as a list entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stored {
    pub name: String,
    pub title: String,
    pub period: String,
    /// The rows the reader may see.
    pub rows: i64,
    pub generated_at: String,
}

/// The stored reports `ctx` (a reader's secured session) may read, newest
/// period first.
pub async fn stored(ctx: &SessionContext) -> Result<Vec<Stored>, ReportError> {
    let titles: HashMap<String, String> = definitions()?
        .into_iter()
        .map(|d| (d.name, d.title))
        .collect();
    let batches = ctx
        .sql(
            "SELECT report, period, CAST(sum(CASE WHEN seq > 0 THEN 1 ELSE 0 END) AS BIGINT) AS rows, \
               CAST(max(generated_at) AS VARCHAR) AS generated_at \
             FROM report_row GROUP BY report, period ORDER BY period DESC, report",
        )
        .await?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let (names, periods, rows, at) = (
            super::strings(b, "report")?,
            super::strings(b, "period")?,
            super::strings(b, "rows")?,
            super::strings(b, "generated_at")?,
        );
        for i in 0..b.num_rows() {
            let name = names[i].clone().unwrap_or_default();
            out.push(Stored {
                title: titles.get(&name).cloned().unwrap_or_default(),
                name,
                period: periods[i].clone().unwrap_or_default(),
                rows: rows[i].as_deref().and_then(|r| r.parse().ok()).unwrap_or(0),
                generated_at: at[i].clone().unwrap_or_default(),
            });
        }
    }
    // Reports in the pack's order within a period.
    let order: Vec<String> = definitions()?.into_iter().map(|d| d.name).collect();
    out.sort_by(|a, b| {
        b.period.cmp(&a.period).then(
            order
                .iter()
                .position(|n| *n == a.name)
                .cmp(&order.iter().position(|n| *n == b.name)),
        )
    });
    Ok(out)
}

/// The stored report `name` of `period` (the latest period stored when
/// none is given), with the rows `ctx` (a reader's secured session) may
/// read.
pub async fn load(
    ctx: &SessionContext,
    name: &str,
    period: Option<&str>,
) -> Result<Report, ReportError> {
    let def = definition(name)?;
    let param = |v: &str| ScalarValue::Utf8(Some(v.to_string()));
    let period = match period {
        Some(p) => Period::parse(p)?.month,
        None => {
            let b = ctx
                .sql("SELECT max(period) AS period FROM report_row WHERE report = $1")
                .await?
                .with_param_values(vec![param(name)])?
                .collect()
                .await?;
            b.first()
                .map(|b| super::strings(b, "period"))
                .transpose()?
                .and_then(|v| v.into_iter().next().flatten())
                .ok_or_else(|| {
                    ReportError::NotFound(format!(
                        "report {name} was not generated yet: `custlake report --period YYYY-MM`"
                    ))
                })?
        }
    };
    let batches = ctx
        .sql(
            "SELECT seq, data, CAST(generated_at AS VARCHAR) AS generated_at FROM report_row \
             WHERE report = $1 AND period = $2 ORDER BY seq",
        )
        .await?
        .with_param_values(vec![param(name), param(&period)])?
        .collect()
        .await?;
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    let mut generated_at = None;
    for b in &batches {
        let seq = b
            .column_by_name("seq")
            .map(|c| {
                c.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .clone()
            })
            .ok_or_else(|| ReportError::Invalid("report_row has no seq".into()))?;
        let data = super::strings(b, "data")?;
        let at = super::strings(b, "generated_at")?;
        for i in 0..b.num_rows() {
            let text = data[i].as_deref().unwrap_or("{}");
            generated_at = generated_at.or_else(|| at[i].clone());
            if seq.value(i) == 0 {
                columns = serde_json::from_str(text).unwrap_or_default();
            } else {
                rows.push(serde_json::from_str::<Row>(text).map_err(|e| {
                    ReportError::Invalid(format!("report {name} {period} row: {e}"))
                })?);
            }
        }
    }
    let Some(generated_at) = generated_at else {
        return Err(ReportError::NotFound(format!(
            "report {name} of {period} was not generated: `custlake report {name} --period {period}`"
        )));
    };
    Ok(Report {
        def,
        period,
        generated_at,
        columns,
        rows,
    })
}

/// Every stored report of `period` a reader's session may read.
pub async fn load_all(ctx: &SessionContext, period: &str) -> Result<Vec<Report>, ReportError> {
    let mut out = Vec::new();
    for d in definitions()? {
        match load(ctx, &d.name, Some(period)).await {
            Ok(r) => out.push(r),
            Err(ReportError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_report_has_a_whole_header() {
        let defs = definitions().unwrap();
        assert_eq!(defs.len(), SHIPPED.len());
        let mut names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), defs.len(), "report names are unique");
        assert!(parse("-- name: x\n-- title: t\n-- description: d\n-- chart: pie\n-- x: a\n-- y: b\nSELECT 1").is_err());
        assert!(
            parse("-- name: x\n-- title: t\n-- description: d\n-- chart: bar\n-- x: a\nSELECT 1")
                .is_err()
        );
    }

    #[test]
    fn periods_are_months() {
        let p = Period::parse("2026-10").unwrap();
        assert_eq!(p.start, NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
        assert_eq!(p.end, NaiveDate::from_ymd_opt(2026, 11, 1).unwrap());
        assert!(Period::parse("2026-13").is_err());
        assert!(Period::parse("2026-1").is_err());
        assert!(Period::parse("October").is_err());
        let jan = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        assert_eq!(Period::before(jan).month, "2026-12");
    }

    #[test]
    fn rows_keep_their_column_order() {
        let r: Row = serde_json::from_str(r#"{"z":1,"a":"x","m":null}"#).unwrap();
        let keys: Vec<&str> = r.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"z":1,"a":"x","m":null}"#
        );
    }
}

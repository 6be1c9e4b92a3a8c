//! A stored report as a page, CSV or JSON: the page is a minijinja
//! template (`templates/`) with its chart laid out by [`super::chart`].

use super::ReportError;
use super::chart::{self, Measure, Point};
use super::pack::Report;

const REPORT_TEMPLATE: &str = include_str!("templates/report.html");
const INDEX_TEMPLATE: &str = include_str!("templates/index.html");
const CHART_TEMPLATE: &str = include_str!("templates/chart.svg");

/// The page's table: every cell as text.
fn cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(v) => v.to_string(),
    }
}

/// The chart of a report's rows.
pub fn chart_of(r: &Report) -> chart::Chart {
    let d = &r.def;
    let points: Vec<Point<'_>> = r
        .rows
        .iter()
        .map(|row| Point {
            category: row.get(&d.x).and_then(|v| v.as_str()).unwrap_or(""),
            series: d
                .series
                .as_deref()
                .and_then(|s| row.get(s))
                .and_then(|v| v.as_str())
                .unwrap_or(""),
            value: match &d.measure {
                Measure::Sum(c) => (row.number(c), 0.0),
                Measure::Ratio(n, den) => (row.number(n), row.number(den)),
            },
            flagged: d
                .flag
                .as_deref()
                .is_some_and(|f| row.get(f) == Some(&serde_json::Value::Bool(true))),
        })
        .collect();
    chart::layout(&points, &d.measure, d.chart == "line")
}

fn environment() -> Result<minijinja::Environment<'static>, ReportError> {
    let mut env = minijinja::Environment::new();
    // Every template is HTML or SVG inside it: every value is escaped.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    let bad = |e: minijinja::Error| ReportError::Definition("templates".into(), e.to_string());
    env.add_template("report.html", REPORT_TEMPLATE)
        .map_err(bad)?;
    env.add_template("index.html", INDEX_TEMPLATE)
        .map_err(bad)?;
    env.add_template("chart.svg", CHART_TEMPLATE).map_err(bad)?;
    Ok(env)
}

/// A report as a self-contained HTML page: its chart as inline SVG and its
/// rows as a table.
pub fn html(r: &Report) -> Result<String, ReportError> {
    let env = environment()?;
    let rows: Vec<_> = r
        .rows
        .iter()
        .map(|row| {
            let cells: Vec<_> = r
                .columns
                .iter()
                .map(|c| {
                    let v = row.get(c);
                    minijinja::context! {
                        text => cell(v),
                        num => matches!(v, Some(serde_json::Value::Number(_))),
                    }
                })
                .collect();
            minijinja::context! {
                cells => cells,
                flagged => r.def.flag.as_deref().is_some_and(|f| row.get(f) == Some(&serde_json::Value::Bool(true))),
            }
        })
        .collect();
    let ctx = minijinja::context! {
        report => minijinja::value::Serde(&r.def),
        period => &r.period,
        generated_at => &r.generated_at,
        columns => &r.columns,
        rows => rows,
        chart => minijinja::value::Serde(chart_of(r)),
        version => env!("CARGO_PKG_VERSION"),
    };
    env.get_template("report.html")
        .and_then(|t| t.render(ctx))
        .map_err(|e| ReportError::Definition(r.def.name.clone(), e.to_string()))
}

/// The index page of a period's pack written to a directory.
pub fn index_html(period: &str, reports: &[Report]) -> Result<String, ReportError> {
    let env = environment()?;
    let list: Vec<_> = reports
        .iter()
        .map(|r| {
            minijinja::context! {
                name => &r.def.name,
                title => &r.def.title,
                description => &r.def.description,
                rows => r.rows.len(),
            }
        })
        .collect();
    env.get_template("index.html")
        .and_then(|t| {
            t.render(minijinja::context! {
                period => period,
                reports => list,
                generated_at => reports.first().map(|r| r.generated_at.clone()),
                version => env!("CARGO_PKG_VERSION"),
            })
        })
        .map_err(|e| ReportError::Definition("index".into(), e.to_string()))
}

/// A report's rows as CSV, with a header line.
pub fn csv(r: &Report) -> Result<String, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| ReportError::Invalid(format!("report {}: {e}", r.def.name));
    w.write_record(&r.columns).map_err(bad)?;
    for row in &r.rows {
        w.write_record(r.columns.iter().map(|c| match row.get(c) {
            Some(serde_json::Value::Bool(b)) => b.to_string(),
            v => cell(v),
        }))
        .map_err(bad)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ReportError::Invalid(format!("report {}: {e}", r.def.name)))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A report as JSON: its header, period, columns and rows.
pub fn json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "report": r.def.name,
        "title": r.def.title,
        "description": r.def.description,
        "period": r.period,
        "generated_at": r.generated_at,
        "columns": r.columns,
        "rows": r.rows,
    })
}

/// Write each report as `<name>.html`, `.csv` and `.json` into `dir`, with
/// an `index.html`; returns the files written.
pub fn write_dir(
    dir: &std::path::Path,
    period: &str,
    reports: &[Report],
) -> Result<Vec<std::path::PathBuf>, ReportError> {
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut written = Vec::new();
    let mut put = |name: String, body: String| -> Result<(), ReportError> {
        let path = dir.join(name);
        // Written whole, then renamed: a reader never sees half a page.
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, body).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        written.push(path);
        Ok(())
    };
    for r in reports {
        put(format!("{}.html", r.def.name), html(r)?)?;
        put(format!("{}.csv", r.def.name), csv(r)?)?;
        put(
            format!("{}.json", r.def.name),
            serde_json::to_string_pretty(&json(r)).unwrap_or_default(),
        )?;
    }
    put("index.html".into(), index_html(period, reports)?)?;
    Ok(written)
}

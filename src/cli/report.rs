//! `custlake report`: generate a period's report pack (stored in
//! report_row) and write its pages, CSV and JSON to a directory.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::lake::Warehouse;
use crate::reports::pack::{self, Period};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").args(["name", "all"])))]
pub struct ReportArgs {
    /// One report (see `--list`); all of them without it.
    pub name: Option<String>,
    /// Every report of the pack (the default).
    #[arg(long)]
    pub all: bool,
    /// The month reported on (YYYY-MM; default: last month).
    #[arg(long, value_name = "YYYY-MM")]
    pub period: Option<String>,
    /// Write <report>.html, .csv and .json and an index.html here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Open the stored pack of the period instead of generating it again
    /// (as it was generated, unchanged).
    #[arg(long)]
    pub stored: bool,
    /// List the reports of the pack and stop.
    #[arg(long)]
    pub list: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(wh: &Warehouse, args: &ReportArgs) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if args.list {
        for d in pack::definitions()? {
            writeln!(
                out,
                "{:<22} {}\n{:<22} {}",
                d.name, d.title, "", d.description
            )?;
        }
        return Ok(());
    }
    if let Some(n) = &args.name {
        pack::definition(n)?;
    }
    let period = match &args.period {
        Some(p) => Period::parse(p)?,
        None => Period::before(chrono::Utc::now().date_naive()),
    };
    let started = std::time::Instant::now();
    let reports = if args.stored {
        let ctx = crate::query::context(&wh.config)?;
        crate::query::register_one(&ctx, &wh.lake, wh.catalog.table("report_row")?).await?;
        let all = pack::load_all(&ctx, &period.month).await?;
        if all.is_empty() {
            return Err(CliError::Report(crate::reports::ReportError::NotFound(
                format!(
                    "no report pack stored for {}: `custlake report --period {}` generates it",
                    period.month, period.month
                ),
            )));
        }
        all
    } else {
        pack::generate(
            &wh.config,
            &wh.lake,
            &wh.catalog,
            &period,
            chrono::Utc::now().date_naive(),
            wh.progress.as_ref(),
        )
        .await?
        .1
    };
    let reports: Vec<_> = reports
        .into_iter()
        .filter(|r| args.name.as_ref().is_none_or(|n| *n == r.def.name))
        .collect();
    let render_started = std::time::Instant::now();
    let written = match &args.out {
        Some(dir) => pack::write_dir(dir, &period.month, &reports)?,
        None => Vec::new(),
    };
    let render_seconds = render_started.elapsed().as_secs_f64();
    if args.json {
        let summary = serde_json::json!({
            "period": period.month,
            "reports": reports.iter().map(|r| serde_json::json!({"name": r.def.name, "rows": r.rows.len()})).collect::<Vec<_>>(),
            "generated_at": reports.first().map(|r| r.generated_at.clone()),
            "files": written,
            "seconds": started.elapsed().as_secs_f64(),
            "render_seconds": render_seconds,
        });
        writeln!(out, "{summary}")?;
        return Ok(());
    }
    writeln!(
        out,
        "report pack {} ({}): {} reports in {:.1} s{}",
        period.month,
        if args.stored {
            "as stored"
        } else {
            "generated and stored"
        },
        reports.len(),
        started.elapsed().as_secs_f64(),
        if written.is_empty() {
            String::new()
        } else {
            format!(", rendered in {render_seconds:.2} s")
        }
    )?;
    for r in &reports {
        writeln!(
            out,
            "  {:<22} {:>6} rows  {}",
            r.def.name,
            r.rows.len(),
            r.def.title
        )?;
    }
    if let Some(dir) = &args.out {
        writeln!(out, "open {}", dir.join("index.html").display())?;
    }
    Ok(())
}

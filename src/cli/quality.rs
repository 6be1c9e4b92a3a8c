//! `custlake quality run|rules`: the data-quality rules and their runs.

use std::io::Write;

use clap::{Args, Subcommand};

use super::CliError;
use crate::analytics::parse_date;
use crate::lake::Warehouse;
use crate::quality::{QualityError, RunOptions};
use crate::security::Security;

#[derive(Debug, Subcommand)]
pub enum QualityCommand {
    /// Check the data: store scores (quality_metric) and every failing
    /// record field (quality_issue), closing work orders now passing.
    Run(RunArgs),
    /// List the rules: generated from the schemas and from sql/quality/.
    Rules(RulesArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Check every sensitivity level on every record (otherwise: the levels
    /// due under [quality.sampling], on their sample).
    #[arg(long)]
    pub full: bool,
    /// The date the rules apply as of (YYYY-MM-DD, or today).
    #[arg(long, default_value = "today", value_name = "DATE")]
    pub as_of: String,
    /// Seed of the sample (default: drawn from the run id; stored either way).
    #[arg(long)]
    pub seed: Option<i64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    /// Only this table's rules.
    #[arg(long)]
    pub table: Option<String>,
    /// Print each table's query (as a full run would send it).
    #[arg(long)]
    pub sql: bool,
    /// Print the rules as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(
    wh: &Warehouse,
    security: &Security,
    c: &QualityCommand,
) -> Result<(), CliError> {
    // A reader that stops early (`| head`) ends the output with an error,
    // not a panic.
    let mut out = std::io::stdout().lock();
    match c {
        QualityCommand::Run(args) => {
            let as_of = parse_date("--as-of", &args.as_of)?;
            let started = std::time::Instant::now();
            let masks = security.masks(&wh.lake).await?;
            let s = crate::quality::run_quality(
                &wh.config,
                &wh.lake,
                &wh.catalog,
                masks,
                &RunOptions {
                    full: args.full,
                    as_of,
                    seed: args.seed,
                },
                wh.progress.as_ref(),
            )
            .await?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string(&s)?)?;
                return Ok(());
            }
            if s.levels.is_empty() {
                writeln!(
                    out,
                    "quality run {}: no level is due as of {} (each was checked this period; --full checks all)",
                    s.run_id, s.as_of
                )?;
                return Ok(());
            }
            let levels: Vec<String> = s
                .levels
                .iter()
                .map(|(l, r)| format!("{l} {:.0}%", r * 100.0))
                .collect();
            writeln!(
                out,
                "quality run {} as of {} in {:.1}s: {} records, levels {} (seed {})",
                s.run_id,
                s.as_of,
                started.elapsed().as_secs_f64(),
                s.records,
                levels.join(", "),
                s.seed
            )?;
            if let Some(score) = s.score {
                writeln!(out, "  overall score {score:.1}")?;
            }
            writeln!(
                out,
                "  {} failing record fields ({} new), {} fixed since the last run; {} records below {} (work orders)",
                s.open, s.new, s.fixed, s.work_orders, wh.config.quality.threshold
            )?;
            for (team, score) in &s.teams {
                let flag = if *score < wh.config.quality.threshold {
                    "  below threshold"
                } else {
                    ""
                };
                writeln!(out, "  {team}: {score:.1}{flag}")?;
            }
            Ok(())
        }
        QualityCommand::Rules(args) => {
            let plans = crate::quality::rules::plans(&wh.config, &wh.catalog)?;
            let plans: Vec<_> = plans
                .into_iter()
                .filter(|p| args.table.as_deref().is_none_or(|t| t == p.table))
                .collect();
            if let Some(t) = &args.table
                && plans.is_empty()
            {
                return Err(CliError::Usage(format!(
                    "--table {t:?}: not among quality.tables ({})",
                    wh.config
                        .quality
                        .tables
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if args.json {
                let all: Vec<_> = plans
                    .iter()
                    .map(|p| serde_json::json!({"table": p.table, "rules": p.checks}))
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
                return Ok(());
            }
            let full = crate::quality::Scope::full(0);
            // The queries as a full run would send them today: with the
            // lake's lookups (duplicated keys, first loads) resolved.
            let ctx = if args.sql {
                let masks = security.masks(&wh.lake).await?;
                let today = chrono::Utc::now().date_naive();
                Some(
                    crate::quality::context(&wh.config, &wh.lake, &wh.catalog, masks, today)
                        .await?,
                )
            } else {
                None
            };
            for p in &plans {
                writeln!(out, "{} ({} rules)", p.table, p.checks.len())?;
                for c in &p.checks {
                    writeln!(
                        out,
                        "  {:<13} {:<26} {:<22} {:?}  {}",
                        c.dimension, c.rule, c.field, c.level, c.description
                    )?;
                }
                if let Some(ctx) = &ctx {
                    let found = crate::quality::run::lookups(ctx, p).await?;
                    if let Some(q) = p.compile(&full, &found) {
                        writeln!(out, "{}\n", q.sql)?;
                    }
                }
            }
            Ok(())
        }
    }
}

impl From<QualityError> for CliError {
    fn from(e: QualityError) -> Self {
        CliError::Quality(e)
    }
}

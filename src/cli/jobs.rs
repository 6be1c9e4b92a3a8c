//! `custlake jobs list|run NAME`: the scheduled jobs.

use std::io::Write;

use clap::Subcommand;

use super::CliError;
use crate::lake::Warehouse;
use crate::reports::schedule::Trigger;
use crate::security::Security;

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every job: its cron expression, next run and latest run (job_run).
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a job now (recorded in job_run as manual and audited; waits for
    /// a run of the same job that is under way).
    Run {
        /// ingest, quality, score, reports or tier.
        name: String,
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(
    wh: &Warehouse,
    security: &Security,
    c: &JobsCommand,
) -> Result<(), CliError> {
    let scheduler = crate::server::jobs::scheduler(wh, security).await?;
    let mut out = std::io::stdout().lock();
    match c {
        JobsCommand::List { json } => {
            let jobs = scheduler.status(chrono::Utc::now()).await?;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&jobs)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "cron expressions in UTC{}; the scheduler runs in `custlake serve`{}",
                wh.config.scheduler.utc_offset,
                if wh.config.scheduler.enabled {
                    ""
                } else {
                    " (disabled: scheduler.enabled = false)"
                }
            )?;
            writeln!(
                out,
                "{:<8} {:<16} {:<26} {:<10} {:<26}",
                "job", "cron", "next run", "last", "last started"
            )?;
            for j in jobs {
                writeln!(
                    out,
                    "{:<8} {:<16} {:<26} {:<10} {:<26}",
                    j.name,
                    j.cron,
                    j.next_run
                        .as_deref()
                        .unwrap_or(if j.enabled { "-" } else { "disabled" }),
                    j.last_run.as_ref().map_or("never", |r| r.status.as_str()),
                    j.last_run.as_ref().map_or("", |r| r.started_at.as_str()),
                )?;
            }
        }
        JobsCommand::Run { name, json } => {
            let job = scheduler.job(name)?;
            let row = scheduler
                .run(security, job, Trigger::Manual, None, 0)
                .await?;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&row)?)?;
            } else {
                writeln!(
                    out,
                    "job {} run {}: {}{}",
                    row.job,
                    row.run_id,
                    row.status,
                    row.error
                        .as_deref()
                        .or(row.output.as_deref())
                        .map(|s| format!("\n  {s}"))
                        .unwrap_or_default()
                )?;
            }
            if row.status == "failed" {
                return Err(CliError::JobFailed {
                    message: format!("job {} failed: {}", row.job, row.error.unwrap_or_default()),
                    kind: row.kind.unwrap_or(crate::error::ErrorKind::Internal),
                });
            }
        }
    }
    Ok(())
}

//! The scheduler: jobs run on cron expressions (`[scheduler]`), each run
//! recorded in `job_run` and audited.
//!
//! Three guarantees, with nothing but the lake's catalog and table leases:
//!
//! - **A slot runs once.** A job's last slot is a versioned catalog record
//!   (`jobs/<name>`); a server that finds a slot due writes the next
//!   version naming it (put-if-absent), and only the server whose write
//!   lands runs it. Two servers on one lake run each slot once between
//!   them.
//! - **One run of a job at a time.** A run holds the lease `job-<name>`
//!   (a manual `custlake jobs run` and a scheduled run take turns).
//! - **Missed slots are caught up once.** A server that starts after a
//!   gap finds every slot since the last one due; it runs the job once, for
//!   the latest, and records how many it covered (`missed`). A lake seen
//!   for the first time starts its schedule now: nothing runs for slots
//!   before the scheduler ever ran.
//!
//! What a job does is given from above (`server::jobs`): this module knows
//! schedules, claims and records, not scores or reports.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::ErrorKind;
use crate::lake::catalog::{self, Stamped};
use crate::lake::{Lake, LakeError};
use crate::query::QueryError;
use crate::schema::Catalog;
use crate::security::audit::AuditRecord;
use crate::security::{Principal, Security};

use super::ReportError;

/// How a run came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Its slot came while a server ran.
    Schedule,
    /// Its slot (and perhaps earlier ones) passed while no server ran.
    CatchUp,
    /// Somebody asked (`custlake jobs run`).
    Manual,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::CatchUp => "catch-up",
            Self::Manual => "manual",
        }
    }
}

/// What a job is asked to do: its run's time in the scheduler's offset
/// (the slot, or now for a manual run).
#[derive(Debug, Clone)]
pub struct JobCall {
    pub job: String,
    pub at: DateTime<FixedOffset>,
    pub trigger: Trigger,
}

/// Why a job failed: its error's kind (for the stable code) and message.
#[derive(Debug, Clone)]
pub struct JobFailure {
    pub kind: ErrorKind,
    pub message: String,
}

impl<E: crate::error::Classify + std::fmt::Display> From<E> for JobFailure {
    fn from(e: E) -> Self {
        Self {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

pub type JobFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, JobFailure>> + Send>>;

/// What a job does: its summary (JSON) or why it failed.
pub type Action = Arc<dyn Fn(JobCall) -> JobFuture + Send + Sync>;

/// One job: its schedule and what it does.
pub struct Job {
    pub name: String,
    pub about: String,
    pub cron: String,
    pub schedule: cron::Schedule,
    pub enabled: bool,
    pub action: Action,
}

/// The newest record of `jobs/<name>`: the last slot claimed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlotRecord {
    /// RFC 3339; the slot this record claims.
    pub slot: String,
    /// Who claimed it, and when.
    pub holder: String,
    pub at: String,
}

impl Stamped for SlotRecord {
    fn at(&self) -> DateTime<Utc> {
        parse(&self.at).unwrap_or_default()
    }
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn kind(job: &str) -> String {
    format!("jobs/{job}")
}

/// Slots later than this after their time run as catch-up.
const LATE: chrono::Duration = chrono::Duration::minutes(10);

/// At most this many slots are counted when a long gap is caught up.
const MAX_COUNTED: u64 = 100_000;

/// A slot due now: the latest one after `last` and at or before `now`,
/// with how many earlier ones it covers.
pub fn due(
    schedule: &cron::Schedule,
    offset: FixedOffset,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, u64)> {
    let mut latest = None;
    let mut n = 0u64;
    for slot in schedule.after(&last.with_timezone(&offset)) {
        let slot = slot.with_timezone(&Utc);
        if slot > now {
            break;
        }
        latest = Some(slot);
        n += 1;
        if n >= MAX_COUNTED {
            // A gap that long: the newest slot, found from now backwards.
            latest = schedule
                .after(&(now - chrono::Duration::days(400)).with_timezone(&offset))
                .map(|s| s.with_timezone(&Utc))
                .take_while(|s| *s <= now)
                .last()
                .or(latest);
            break;
        }
    }
    latest.map(|s| (s, n.saturating_sub(1)))
}

/// A job's state for `GET /v1/jobs` and `custlake jobs list`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub name: String,
    pub about: String,
    pub cron: String,
    pub enabled: bool,
    /// The next slot (RFC 3339, in the scheduler's offset); empty when disabled.
    pub next_run: Option<String>,
    /// The last slot a server claimed.
    pub last_slot: Option<String>,
    /// The latest run's id, trigger, start, end, status and error.
    pub last_run: Option<RunRow>,
}

/// One `job_run` row.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRow {
    pub run_id: String,
    pub job: String,
    pub trigger: String,
    pub slot: Option<String>,
    pub missed: Option<i64>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub output: Option<String>,
    pub holder: Option<String>,
    /// Why a failed run failed, as an error kind (this process only).
    #[serde(skip)]
    pub kind: Option<ErrorKind>,
}

/// The jobs of a lake and what runs them.
pub struct Scheduler {
    pub lake: Lake,
    pub catalog: Arc<Catalog>,
    pub config: Arc<Config>,
    pub offset: FixedOffset,
    pub jobs: Vec<Job>,
}

/// The principal scheduled runs are audited as.
pub fn scheduler_principal() -> Principal {
    Principal {
        user: "scheduler".into(),
        via: "scheduler".into(),
        ..Principal::local()
    }
}

impl Scheduler {
    /// The jobs of `[scheduler.jobs]` with the actions given by name.
    pub fn new(
        config: Arc<Config>,
        lake: Lake,
        catalog: Arc<Catalog>,
        actions: Vec<(&str, &str, Action)>,
    ) -> Result<Self, ReportError> {
        let mut jobs = Vec::new();
        for (name, about, action) in actions {
            let Some(c) = config.scheduler.jobs.get(name) else {
                continue;
            };
            let schedule = c.cron.parse::<cron::Schedule>().map_err(|e| {
                ReportError::Invalid(format!("scheduler.jobs.{name}.cron {:?}: {e}", c.cron))
            })?;
            jobs.push(Job {
                name: name.to_string(),
                about: about.to_string(),
                cron: c.cron.clone(),
                schedule,
                enabled: c.enabled,
                action,
            });
        }
        Ok(Self {
            offset: config.scheduler.offset(),
            config,
            lake,
            catalog,
            jobs,
        })
    }

    pub fn job(&self, name: &str) -> Result<&Job, ReportError> {
        self.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
            ReportError::NotFound(format!(
                "no job {name:?}; the jobs are {}",
                self.jobs
                    .iter()
                    .map(|j| j.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// When the scheduler next has something to do after `now` (at most a
    /// minute away, so that a clock change or a new lake is noticed).
    pub fn next_wake(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let cap = now + chrono::Duration::minutes(1);
        self.jobs
            .iter()
            .filter(|j| j.enabled)
            .filter_map(|j| j.schedule.after(&now.with_timezone(&self.offset)).next())
            .map(|t| t.with_timezone(&Utc))
            .min()
            .map_or(cap, |t| t.min(cap))
    }

    /// Run every enabled job with a slot due at `now` that no server has
    /// claimed yet, one after the other; returns the runs made.
    pub async fn tick(
        &self,
        security: &Security,
        now: DateTime<Utc>,
    ) -> Result<Vec<RunRow>, ReportError> {
        let mut runs = Vec::new();
        for job in self.jobs.iter().filter(|j| j.enabled) {
            let current = catalog::read::<SlotRecord>(&self.lake, &kind(&job.name), None).await?;
            let Some(last) = parse(&current.value.slot).filter(|_| current.version > 0) else {
                // First sight of this job on this lake: its schedule starts now.
                self.claim(&job.name, current.version, now).await?;
                continue;
            };
            let Some((slot, missed)) = due(&job.schedule, self.offset, last, now) else {
                continue;
            };
            if !self.claim(&job.name, current.version, slot).await? {
                // Another server claimed it first.
                continue;
            }
            let trigger = if missed > 0 || now - slot > LATE {
                Trigger::CatchUp
            } else {
                Trigger::Schedule
            };
            runs.push(self.run(security, job, trigger, Some(slot), missed).await?);
        }
        Ok(runs)
    }

    /// Write the next version of `jobs/<name>` naming `slot`; false when
    /// another process wrote it first.
    async fn claim(&self, job: &str, read: u64, slot: DateTime<Utc>) -> Result<bool, LakeError> {
        let record = SlotRecord {
            slot: slot.to_rfc3339(),
            holder: self.lake.holder().to_string(),
            at: Utc::now().to_rfc3339(),
        };
        let won = catalog::try_write(&self.lake, &kind(job), read, &record)
            .await?
            .is_some();
        if won {
            catalog::prune(&self.lake, &kind(job), read + 1).await;
        }
        Ok(won)
    }

    /// Run `job` now holding its lease: recorded in `job_run` (running,
    /// then how it ended) and audited, whatever the outcome. A failed job
    /// is a failed run, not an error of the scheduler.
    pub async fn run(
        &self,
        security: &Security,
        job: &Job,
        trigger: Trigger,
        slot: Option<DateTime<Utc>>,
        missed: u64,
    ) -> Result<RunRow, ReportError> {
        let lease_name = format!("job-{}", job.name);
        let purpose = format!("job {} ({})", job.name, trigger.name());
        let lake = self.lake.clone();
        crate::lake::lease::with_lease(&lake, &lease_name, &purpose, async |_| {
            let started = Utc::now();
            let mut row = RunRow {
                run_id: format!(
                    "{}-{}-{}",
                    job.name,
                    started.format("%Y%m%dT%H%M%S%.6fZ"),
                    &crate::security::audit::fresh_id()[..8]
                ),
                job: job.name.clone(),
                trigger: trigger.name().into(),
                slot: slot.map(|s| s.to_rfc3339()),
                missed: slot.map(|_| missed as i64),
                started_at: started.to_rfc3339(),
                status: "running".into(),
                holder: Some(self.lake.holder().to_string()),
                ..RunRow::default()
            };
            self.record(&row).await?;
            tracing::info!(job = %job.name, trigger = trigger.name(), run_id = %row.run_id, "job started");
            let at = slot.unwrap_or(started).with_timezone(&self.offset);
            let result = (job.action)(JobCall {
                job: job.name.clone(),
                at,
                trigger,
            })
            .await;
            let ended = Utc::now();
            row.ended_at = Some(ended.to_rfc3339());
            let mut audit = AuditRecord::new(&scheduler_principal(), "job", "ok");
            audit.object = Some(job.name.clone());
            audit.request_id = Some(row.run_id.clone());
            audit.duration_ms = Some((ended - started).num_milliseconds());
            match &result {
                Ok(out) => {
                    row.status = "succeeded".into();
                    row.output = Some(out.to_string());
                    audit.detail = row.output.clone();
                }
                Err(f) => {
                    row.status = "failed".into();
                    row.error = Some(format!("{} (code {})", f.message, f.kind.code()));
                    row.kind = Some(f.kind);
                    audit.outcome = "error".into();
                    audit.code = Some(i64::from(f.kind.code()));
                    audit.detail = row.error.clone();
                }
            }
            tracing::info!(job = %job.name, run_id = %row.run_id, status = %row.status, "job ended");
            self.record(&row).await?;
            security.audit(audit).await?;
            Ok::<_, ReportError>(row)
        })
        .await
    }

    /// Close the runs a stopped process left `running`: a job whose latest
    /// row says running while nobody holds its lease was cut off (a
    /// server stopped, a `jobs run` interrupted); its row becomes `failed`
    /// with that reason. Returns how many were closed. (`serve` calls it
    /// when its scheduler starts; the slot is not run again.)
    pub async fn close_interrupted(&self) -> Result<usize, ReportError> {
        let mut closed = 0;
        for mut row in self.latest_runs().await? {
            if row.status != "running" {
                continue;
            }
            let lease = crate::lake::lease::Lease::acquire(
                &self.lake,
                &format!("job-{}", row.job),
                "closing an interrupted run",
                std::time::Duration::ZERO,
                &|_| {},
            )
            .await;
            let Ok(lease) = lease else {
                // Held: the run is under way somewhere.
                continue;
            };
            row.status = "failed".into();
            row.ended_at = Some(Utc::now().to_rfc3339());
            row.error = Some(format!(
                "interrupted: the process running it stopped before it ended (code {})",
                ErrorKind::Internal.code()
            ));
            let written = self.record(&row).await;
            lease.release(&self.lake).await;
            written?;
            tracing::warn!(job = %row.job, run_id = %row.run_id, "an interrupted job run was closed as failed");
            closed += 1;
        }
        Ok(closed)
    }

    /// Upsert a run's row (`job_run`).
    pub async fn record(&self, row: &RunRow) -> Result<(), ReportError> {
        let def = self.catalog.table("job_run")?;
        let month = row.started_at.get(..7).unwrap_or_default().to_string();
        let mut value =
            serde_json::to_value(row).map_err(|e| ReportError::Invalid(e.to_string()))?;
        value["run_month"] = serde_json::Value::String(month);
        let batch = crate::lake::json_rows(def, &[value])?;
        let ctx = crate::lake::session::write_context();
        let df = ctx.read_batch(batch).map_err(QueryError::from)?;
        crate::lake::upsert(
            &self.lake,
            &ctx,
            def,
            df,
            false,
            vec![
                ("operation".into(), "job".into()),
                ("run_id".into(), row.run_id.clone().into()),
            ],
        )
        .await?;
        Ok(())
    }

    /// Every job with its next slot and its latest run.
    pub async fn status(&self, now: DateTime<Utc>) -> Result<Vec<JobStatus>, ReportError> {
        let latest = self.latest_runs().await?;
        let mut out = Vec::new();
        for job in &self.jobs {
            let slot = catalog::read::<SlotRecord>(&self.lake, &kind(&job.name), None).await?;
            out.push(JobStatus {
                name: job.name.clone(),
                about: job.about.clone(),
                cron: job.cron.clone(),
                enabled: job.enabled,
                next_run: job
                    .enabled
                    .then(|| job.schedule.after(&now.with_timezone(&self.offset)).next())
                    .flatten()
                    .map(|t| t.to_rfc3339()),
                last_slot: (slot.version > 0).then(|| slot.value.slot.clone()),
                last_run: latest.iter().find(|r| r.job == job.name).cloned(),
            });
        }
        Ok(out)
    }

    /// The latest run of each job.
    async fn latest_runs(&self) -> Result<Vec<RunRow>, ReportError> {
        let ctx = crate::query::context(&self.config)?;
        crate::query::register_one(&ctx, &self.lake, self.catalog.table("job_run")?).await?;
        let batches = ctx
            .sql(
                "SELECT run_id, job, trigger, \
                   CAST(slot AS VARCHAR) AS slot, missed, \
                   CAST(started_at AS VARCHAR) AS started_at, \
                   CAST(ended_at AS VARCHAR) AS ended_at, status, error, output, holder \
                 FROM (SELECT *, row_number() OVER (PARTITION BY job ORDER BY started_at DESC, run_id DESC) AS rn FROM job_run) \
                 WHERE rn = 1 ORDER BY job",
            )
            .await?
            .collect()
            .await?;
        let mut rows = Vec::new();
        for b in &batches {
            let columns = [
                "run_id",
                "job",
                "trigger",
                "slot",
                "missed",
                "started_at",
                "ended_at",
                "status",
                "error",
                "output",
                "holder",
            ]
            .into_iter()
            .map(|c| Ok((c, super::strings(b, c)?)))
            .collect::<Result<HashMap<_, _>, ReportError>>()?;
            let text = |name: &str, i: usize| columns.get(name).and_then(|c| c[i].clone());
            for i in 0..b.num_rows() {
                rows.push(RunRow {
                    run_id: text("run_id", i).unwrap_or_default(),
                    job: text("job", i).unwrap_or_default(),
                    trigger: text("trigger", i).unwrap_or_default(),
                    slot: text("slot", i),
                    missed: text("missed", i).and_then(|m| m.parse().ok()),
                    started_at: text("started_at", i).unwrap_or_default(),
                    ended_at: text("ended_at", i),
                    status: text("status", i).unwrap_or_default(),
                    error: text("error", i),
                    output: text("output", i),
                    holder: text("holder", i),
                    kind: None,
                });
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse(s).unwrap()
    }

    #[test]
    fn the_latest_slot_due_covers_the_ones_missed_before_it() {
        let daily_1am: cron::Schedule = "0 0 1 * * *".parse().unwrap();
        let east8 = FixedOffset::east_opt(8 * 3600).unwrap();
        // 01:00 at +08:00 is 17:00 UTC the day before.
        let last = at("2026-10-01T17:00:00Z");
        assert_eq!(
            due(&daily_1am, east8, last, at("2026-10-02T16:59:59Z")),
            None
        );
        assert_eq!(
            due(&daily_1am, east8, last, at("2026-10-02T17:00:00Z")),
            Some((at("2026-10-02T17:00:00Z"), 0))
        );
        // Down for three days: one run, for the newest slot, covering two.
        assert_eq!(
            due(&daily_1am, east8, last, at("2026-10-05T09:00:00Z")),
            Some((at("2026-10-04T17:00:00Z"), 2))
        );
        let monthly: cron::Schedule = "0 0 2 1 * *".parse().unwrap();
        assert_eq!(
            due(
                &monthly,
                east8,
                at("2026-10-31T18:00:00Z"),
                at("2026-12-04T00:00:00Z")
            ),
            Some((at("2026-11-30T18:00:00Z"), 0))
        );
    }
}

//! The warehouse's jobs (what each does, from the modules that do it), the
//! scheduler loop `custlake serve` runs, and `GET /v1/jobs`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::SharedState;
use super::auth::Caller;
use super::docs::ReadProblems;
use super::error::ApiError;
use crate::lake::Warehouse;
use crate::reports::ReportError;
use crate::reports::schedule::{Action, JobCall, JobFailure, JobStatus, Scheduler};
use crate::security::Security;

fn boxed<F>(f: F) -> Action
where
    F: Fn(JobCall) -> crate::reports::schedule::JobFuture + Send + Sync + 'static,
{
    Arc::new(f)
}

fn summary<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// The scheduler of `wh` with every job's action.
pub async fn scheduler(wh: &Warehouse, security: &Security) -> Result<Scheduler, ReportError> {
    let masks = Arc::new(security.masks(&wh.lake).await?.clone());
    let mut actions: Vec<(&str, &str, Action)> = Vec::new();

    let w = wh.clone();
    let dir = wh
        .config
        .scheduler
        .jobs
        .get("ingest")
        .map(|j| j.dir.clone())
        .unwrap_or_default();
    actions.push((
        "ingest",
        "load new files from the pickup directory (files already loaded are skipped)",
        boxed(move |_| {
            let (w, dir) = (w.clone(), dir.clone());
            Box::pin(async move {
                let path = std::path::PathBuf::from(&dir);
                if !path.is_dir() {
                    return Err(JobFailure {
                        kind: crate::error::ErrorKind::Config,
                        message: format!("scheduler.jobs.ingest.dir {dir:?} is not a directory"),
                    });
                }
                let results = crate::ingest::Ingestor::new(&w).ingest_dir(&path).await;
                let (mut loaded, mut skipped, mut rows, mut quarantined) = (0, 0, 0, 0);
                let mut errors = Vec::new();
                for r in &results {
                    match r {
                        Ok(f) if f.loaded => {
                            loaded += 1;
                            rows += f.rows_loaded;
                            quarantined += f.rows_quarantined;
                        }
                        Ok(_) => skipped += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                if !errors.is_empty() {
                    return Err(JobFailure {
                        kind: crate::error::ErrorKind::InvalidData,
                        message: format!(
                            "{} of {} files failed ({loaded} loaded): {}",
                            errors.len(),
                            results.len(),
                            errors.join("; ")
                        ),
                    });
                }
                Ok(serde_json::json!({
                    "files": results.len(), "loaded": loaded, "already_loaded": skipped,
                    "rows_loaded": rows, "rows_quarantined": quarantined,
                }))
            })
        }),
    ));

    let w = wh.clone();
    let m = masks.clone();
    actions.push((
        "quality",
        "quality scan: the sensitivity levels due that day, on their sample ([quality.sampling])",
        boxed(move |call| {
            let (w, m) = (w.clone(), m.clone());
            Box::pin(async move {
                let s = crate::quality::run_quality(
                    &w.config,
                    &w.lake,
                    &w.catalog,
                    &m,
                    &crate::quality::RunOptions {
                        full: false,
                        as_of: call.at.date_naive(),
                        seed: None,
                    },
                    w.progress.as_ref(),
                )
                .await?;
                Ok(summary(&s))
            })
        }),
    ));

    let w = wh.clone();
    actions.push((
        "score",
        "lifecycle stages, value and churn scores as of the day (customer_score)",
        boxed(move |call| {
            let w = w.clone();
            Box::pin(async move {
                let s = crate::analytics::score::run(
                    &w.config,
                    &w.lake,
                    &w.catalog,
                    call.at.date_naive(),
                    w.progress.as_ref(),
                )
                .await?;
                Ok(summary(&s))
            })
        }),
    ));

    let w = wh.clone();
    actions.push((
        "reports",
        "the report pack of the month before the run (report_row, GET /v1/reports)",
        boxed(move |call| {
            let w = w.clone();
            Box::pin(async move {
                let period = crate::reports::pack::Period::before(call.at.date_naive());
                let (g, _) = crate::reports::pack::generate(
                    &w.config,
                    &w.lake,
                    &w.catalog,
                    &period,
                    call.at.date_naive(),
                    w.progress.as_ref(),
                )
                .await?;
                Ok(summary(&g))
            })
        }),
    ));

    let w = wh.clone();
    actions.push((
        "tier",
        "move partitions between tiers, purge what retention allows, compact partitions of many small files (tier apply)",
        boxed(move |call| {
            let w = w.clone();
            Box::pin(async move {
                let out = crate::lake::tiers::apply_due(
                    &w.lake,
                    &w.catalog,
                    call.at.date_naive(),
                    w.progress.as_ref(),
                )
                .await?;
                Ok(summary(&out))
            })
        }),
    ));

    Scheduler::new(
        wh.config.clone(),
        wh.lake.clone(),
        wh.catalog.clone(),
        actions,
    )
}

/// Run the scheduler until the server stops: wake at the next slot (or
/// each minute), run what is due. Errors of the scheduler itself (the
/// lake unreachable) are logged and retried at the next wake.
pub(crate) async fn run_scheduler(state: SharedState) {
    let Some(scheduler) = state.scheduler.as_ref() else {
        return;
    };
    if let Err(e) = scheduler.close_interrupted().await {
        tracing::warn!(error = %e, "scheduler: could not look for interrupted runs");
    }
    loop {
        let now = chrono::Utc::now();
        match scheduler.tick(&state.security, now).await {
            Ok(runs) => {
                for r in runs {
                    tracing::info!(job = %r.job, run_id = %r.run_id, status = %r.status, "scheduled job ran");
                }
            }
            Err(e) => tracing::warn!(error = %e, "scheduler: could not check the jobs; retrying"),
        }
        let next = scheduler.next_wake(chrono::Utc::now());
        let wait = (next - chrono::Utc::now())
            .to_std()
            .unwrap_or_default()
            .max(std::time::Duration::from_millis(200));
        tokio::time::sleep(wait).await;
    }
}

/// The jobs and what the scheduler knows of them.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Jobs {
    /// Whether this server runs them (`scheduler.enabled`).
    scheduler_enabled: bool,
    /// The UTC offset the cron expressions are read in.
    utc_offset: String,
    jobs: Vec<JobStatus>,
}

/// Every scheduled job: its cron expression, next run and latest run
/// (from `job_run`). Needs the `jobs` action (admin).
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    responses((status = 200, description = "the jobs", body = Jobs), ReadProblems)
)]
pub(crate) async fn list(
    State(state): State<SharedState>,
    caller: Caller,
) -> Result<Json<Jobs>, ApiError> {
    caller.must(&state, "jobs")?;
    caller.note.set(|n| n.action = Some("jobs".into()));
    let scheduler = state
        .scheduler
        .as_ref()
        .ok_or_else(|| ApiError::new(crate::error::ErrorKind::Internal, "no scheduler"))?;
    let jobs = scheduler
        .status(chrono::Utc::now())
        .await
        .map_err(|e| ApiError::from_error("reading the jobs", &e))?;
    let cfg = &state.warehouse.config.scheduler;
    Ok(Json(Jobs {
        scheduler_enabled: cfg.enabled,
        utc_offset: cfg.utc_offset.clone(),
        jobs,
    }))
}

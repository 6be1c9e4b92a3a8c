//! `GET /v1/reports` and `GET /v1/reports/{name}`: the report pack as
//! stored per period, read through the caller's secured session (a
//! steward's row filter on `report_row` leaves their teams' rows).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::SharedState;
use super::auth::{Caller, forbidden};
use super::docs::{ReadProblems, ReportProblems};
use super::error::ApiError;
use super::extract::{Params, PathParams};
use super::query::session;
use crate::reports::pack::{self, Stored};

/// A stored report, with where to read it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StoredReport {
    #[serde(flatten)]
    report: Stored,
    /// `GET` this for the page; add `&format=csv` or `json` for the data.
    url: String,
}

/// The stored reports the caller may read, newest period first.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Reports {
    reports: Vec<StoredReport>,
}

/// The caller's session, refusing a role that reads no reports.
async fn reader(
    state: &SharedState,
    caller: &Caller,
) -> Result<datafusion::prelude::SessionContext, ApiError> {
    if !caller.role(state)?.reads("report_row") {
        return Err(forbidden(&caller.principal, "read the report pack"));
    }
    session(state, caller).await
}

/// Every stored report of every period the caller may read (row counts as
/// the caller sees them).
#[utoipa::path(
    get,
    path = "/v1/reports",
    operation_id = "list_reports",
    tag = "reports",
    responses((status = 200, description = "the stored reports", body = Reports), ReadProblems)
)]
pub(crate) async fn list(
    State(state): State<SharedState>,
    caller: Caller,
) -> Result<Json<Reports>, ApiError> {
    caller.note.set(|n| n.action = Some("reports".into()));
    let ctx = reader(&state, &caller).await?;
    let stored = pack::stored(&ctx)
        .await
        .map_err(|e| ApiError::from_error("listing the reports", &e))?;
    Ok(Json(Reports {
        reports: stored
            .into_iter()
            .map(|r| StoredReport {
                url: format!("/v1/reports/{}?period={}", r.name, r.period),
                report: r,
            })
            .collect(),
    }))
}

/// A report's name.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ReportId {
    /// The report (`data_health`, `team_ranking`, ...; `GET /v1/reports`).
    id: String,
}

/// How a report is returned.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ReportFormat {
    /// A self-contained page with its chart.
    #[default]
    Html,
    Csv,
    Json,
}

/// Which period, in which format.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    /// The month (`2026-10`); the latest stored when left out.
    #[param(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
    period: Option<String>,
    /// `html` (the default), `csv` or `json`.
    format: Option<ReportFormat>,
}

/// A stored report of a period: a self-contained HTML page with its chart
/// as inline SVG, or its rows as CSV or JSON; the rows the caller may see.
#[utoipa::path(
    get,
    path = "/v1/reports/{id}",
    operation_id = "get_report",
    tag = "reports",
    params(ReportId, ReportQuery),
    responses(
        (status = 200, description = "the report", content(
            (String = "text/html"),
            (String = "text/csv"),
            (Object = "application/json"),
        )),
        ReportProblems
    )
)]
pub(crate) async fn get(
    State(state): State<SharedState>,
    caller: Caller,
    PathParams(ReportId { id }): PathParams<ReportId>,
    Params(q): Params<ReportQuery>,
) -> Result<Response, ApiError> {
    let format = match q.format.unwrap_or_default() {
        ReportFormat::Html => "html",
        ReportFormat::Csv => "csv",
        ReportFormat::Json => "json",
    };
    caller.note.set(|n| {
        n.action = Some("report".into());
        n.object = Some(format!("{id} {}", q.period.as_deref().unwrap_or("latest")));
        n.format = Some(format.to_string());
    });
    let ctx = reader(&state, &caller).await?;
    let report = pack::load(&ctx, &id, q.period.as_deref())
        .await
        .map_err(|e| ApiError::from_error("reading the report", &e))?;
    let rendered =
        |e: crate::reports::ReportError| ApiError::from_error("rendering the report", &e);
    let (body, ty) = match format {
        "csv" => (
            pack::csv(&report).map_err(rendered)?,
            "text/csv; charset=utf-8",
        ),
        "json" => (pack::json(&report).to_string(), "application/json"),
        _ => (
            pack::html(&report).map_err(rendered)?,
            "text/html; charset=utf-8",
        ),
    };
    caller.note.set(|n| n.rows = Some(report.rows.len() as i64));
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    if let Ok(v) = HeaderValue::from_str(&report.period) {
        response.headers_mut().insert("x-report-period", v);
    }
    Ok(response)
}

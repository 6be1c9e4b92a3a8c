//! Golden customers over HTTP: lineage, suspect groups and steward
//! decisions (merge, split, undo, confirm, reject). Decisions run one at a
//! time; each is recorded in the ledger under the request's principal.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::{SharedState, json_response};
use crate::error::ErrorKind;
use crate::identity::{IdentityError, Steward};

/// The principal every request runs under until access control lands.
pub(crate) const DEV_PRINCIPAL: &str = "dev";

fn identity_error(e: IdentityError) -> ApiError {
    ApiError::from_error("identity resolution", &e)
}

fn parse<T: serde::de::DeserializeOwned>(
    state: &SharedState,
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, ApiError> {
    let body = super::query::body_bytes(state, body)?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::MalformedBody, format!("expected {shape}: {e}")))
}

pub(crate) async fn lineage(State(state): State<SharedState>, Path(id): Path<String>) -> Response {
    match crate::identity::explain::lineage(&state.warehouse.lake, &state.warehouse.catalog, &id)
        .await
    {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => identity_error(e).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeRequest {
    customers: Vec<String>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitRequest {
    records: Vec<String>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonRequest {
    reason: String,
}

enum Action {
    Merge(Vec<String>),
    Split(String, Vec<String>),
    Undo(String),
    Group(String, bool),
}

async fn decide(state: &SharedState, action: Action, reason: &str) -> Response {
    let _one_at_a_time = state.decisions.lock().await;
    let s = Steward {
        warehouse: &state.warehouse,
        actor: DEV_PRINCIPAL.to_string(),
    };
    let result = match &action {
        Action::Merge(ids) => s.merge(ids, reason).await,
        Action::Split(id, records) => s.split(id, records, reason).await,
        Action::Undo(event) => s.undo(event, reason).await,
        Action::Group(group, confirm) => s.decide_group(group, *confirm, reason).await,
    };
    match result {
        Ok(r) => json_response(
            StatusCode::OK,
            &serde_json::to_value(&r).unwrap_or_default(),
        ),
        Err(e) => identity_error(e).into_response(),
    }
}

pub(crate) async fn merge(
    State(state): State<SharedState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: MergeRequest = match parse(
        &state,
        body,
        "{\"customers\": [id, id, ...], \"reason\": ...}",
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    decide(&state, Action::Merge(req.customers), &req.reason).await
}

pub(crate) async fn split(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: SplitRequest = match parse(
        &state,
        body,
        "{\"records\": [\"system:source_id\", ...], \"reason\": ...}",
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    decide(&state, Action::Split(id, req.records), &req.reason).await
}

pub(crate) async fn undo(
    State(state): State<SharedState>,
    Path(event): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: ReasonRequest = match parse(&state, body, "{\"reason\": ...}") {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    decide(&state, Action::Undo(event), &req.reason).await
}

pub(crate) async fn group_decision(
    State(state): State<SharedState>,
    Path((group, action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let confirm = match action.as_str() {
        "confirm" => true,
        "reject" => false,
        other => {
            return ApiError::not_found(format!(
                "no action {other:?} on suspect groups (use confirm or reject)"
            ))
            .into_response();
        }
    };
    let req: ReasonRequest = match parse(&state, body, "{\"reason\": ...}") {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    decide(&state, Action::Group(group, confirm), &req.reason).await
}

#[derive(Deserialize)]
pub(crate) struct SuspectQuery {
    status: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn suspects(
    State(state): State<SharedState>,
    Query(q): Query<SuspectQuery>,
) -> Response {
    let status = q.status.unwrap_or_else(|| "open".into());
    if !["open", "confirmed", "rejected"].contains(&status.as_str()) {
        return ApiError::new(
            ErrorKind::InvalidParameter,
            "status must be open, confirmed or rejected",
        )
        .into_response();
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let ctx = crate::lake::session::write_context();
    let have = match crate::identity::suspects::register(
        &ctx,
        &state.warehouse.lake,
        &state.warehouse.catalog,
    )
    .await
    {
        Ok(h) => h,
        Err(e) => return identity_error(e).into_response(),
    };
    let rows = match crate::identity::suspects::load_public(&ctx, have).await {
        Ok(r) => r,
        Err(e) => return identity_error(e).into_response(),
    };
    let mut groups: Vec<serde_json::Value> = Vec::new();
    let mut current: Option<(String, Vec<serde_json::Value>, f64, String)> = None;
    let flush = |c: Option<(String, Vec<serde_json::Value>, f64, String)>,
                 out: &mut Vec<serde_json::Value>| {
        if let Some((g, members, score, rule)) = c {
            out.push(serde_json::json!({"group_id": g, "rule": rule, "score": score, "members": members}));
        }
    };
    for m in rows.into_iter().filter(|m| m.status == status) {
        if current.as_ref().is_none_or(|c| c.0 != m.group_id) {
            if groups.len() >= limit {
                current = None;
                break;
            }
            flush(current.take(), &mut groups);
            current = Some((m.group_id.clone(), Vec::new(), 0.0, m.rule.clone()));
        }
        if let Some(c) = current.as_mut() {
            c.2 = c.2.max(m.score.unwrap_or(0.0));
            c.1.push(serde_json::json!({
                "member": m.member,
                "customer_id": m.customer_id,
                "score": m.score,
                "detail": m.detail.as_deref().and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()),
            }));
        }
    }
    flush(current, &mut groups);
    groups.truncate(limit);
    json_response(
        StatusCode::OK,
        &serde_json::json!({"status": status, "groups": groups}),
    )
}

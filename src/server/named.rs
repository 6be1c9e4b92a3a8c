//! `GET /v1/queries`, `GET|POST /v1/queries/{name}`: the named queries of
//! `sql/`, run with typed parameters.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::query::{body_bytes, limits, negotiate, run_sql};
use super::{SharedState, json_response};
use crate::error::ErrorKind;
use crate::query::named::NamedQuery;

pub(crate) async fn list(State(state): State<SharedState>) -> Response {
    let queries: Vec<serde_json::Value> = state
        .named
        .iter()
        .map(|q| {
            serde_json::json!({
                "name": q.name,
                "description": q.description,
                "roles": q.roles,
                "params": q.params.iter().map(|p| serde_json::json!({
                    "name": p.name,
                    "type": p.ty.name(),
                    "default": p.default,
                    "required": p.default.is_none(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &serde_json::json!({ "queries": queries }))
}

fn find<'a>(state: &'a SharedState, name: &str) -> Result<&'a NamedQuery, ApiError> {
    state.named.iter().find(|q| q.name == name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no named query {name:?}; GET /v1/queries lists them"
        ))
    })
}

async fn run(
    state: SharedState,
    name: &str,
    format: Option<&str>,
    headers: &HeaderMap,
    params: serde_json::Map<String, serde_json::Value>,
    limit: Option<usize>,
    timeout_ms: Option<u64>,
) -> Result<Response, ApiError> {
    let q = find(&state, name)?;
    let format = negotiate(format, headers)?;
    let (limit, timeout_ms) = limits(&state, limit, timeout_ms)?;
    let bound = q
        .bind(&params)
        .map_err(|e| ApiError::new(ErrorKind::InvalidParameter, e.to_string()))?;
    let start = std::time::Instant::now();
    let result = run_sql(&state, format, &q.sql, bound, limit, timeout_ms).await;
    // Time to the first result bytes (the rest streams).
    metrics::histogram!("custlake_named_query_seconds", "query" => q.name.clone())
        .record(start.elapsed().as_secs_f64());
    result
}

/// `GET /v1/queries/{name}?param=value&format=csv&limit=N&timeout_ms=N`
pub(crate) async fn get(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    Query(mut query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let format = query.remove("format");
    let number = |key: &str, v: Option<String>| -> Result<Option<u64>, ApiError> {
        v.map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::new(
                    ErrorKind::InvalidParameter,
                    format!("{key} must be a whole number, got {v:?}"),
                )
            })
        })
        .transpose()
    };
    let limit = match number("limit", query.remove("limit")) {
        Ok(v) => v.map(|v| v as usize),
        Err(e) => return e.into_response(),
    };
    let timeout = match number("timeout_ms", query.remove("timeout_ms")) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let params = query
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    match run(
        state,
        &name,
        format.as_deref(),
        &headers,
        params,
        limit,
        timeout,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    #[serde(default)]
    params: serde_json::Map<String, serde_json::Value>,
    limit: Option<usize>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FormatParam {
    format: Option<String>,
}

/// `POST /v1/queries/{name}` with `{"params": {...}, "limit": N, "timeout_ms": N}`.
pub(crate) async fn post(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    Query(fmt): Query<FormatParam>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = body_bytes(&state, body)?;
        let req: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
            RunRequest::default()
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                ApiError::new(
                    ErrorKind::MalformedBody,
                    format!(
                        "expected {{\"params\": {{...}}, \"limit\": N, \"timeout_ms\": N}}: {e}"
                    ),
                )
            })?
        };
        run(
            state.clone(),
            &name,
            fmt.format.as_deref(),
            &headers,
            req.params,
            req.limit,
            req.timeout_ms,
        )
        .await
    }
    .await;
    match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

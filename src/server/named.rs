//! `GET /v1/queries`, `GET|POST /v1/queries/{name}`: the named queries of
//! `sql/`, run with typed parameters.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::SharedState;
use super::auth::{Caller, forbidden};
use super::docs::{FormatQuery, NamedProblems, ResultFormats};
use super::error::ApiError;
use super::extract::{Body, Params, PathParams, Shape};
use super::query::{limits, negotiate, run_sql};
use crate::query::named::NamedQuery;

/// A named query's parameter.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct NamedParam {
    name: String,
    /// `string`, `int`, `float`, `bool` or `date`.
    #[serde(rename = "type")]
    ty: String,
    /// The default as written in the query's header.
    default: Option<String>,
    required: bool,
}

/// A named query of `sql/`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct NamedQueryInfo {
    name: String,
    description: String,
    /// The roles allowed to run it.
    roles: Vec<String>,
    params: Vec<NamedParam>,
}

/// The named queries.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct NamedQueries {
    queries: Vec<NamedQueryInfo>,
}

/// List the named queries with their typed parameters, defaults and roles.
#[utoipa::path(
    get,
    path = "/v1/queries",
    operation_id = "list_named_queries",
    tag = "query",
    responses((status = 200, description = "The named queries", body = NamedQueries))
)]
pub(crate) async fn list(
    State(state): State<SharedState>,
    caller: Caller,
) -> axum::Json<NamedQueries> {
    let queries = state
        .named
        .iter()
        .filter(|q| may_run(&state, &caller.principal, q))
        .map(|q| NamedQueryInfo {
            name: q.name.clone(),
            description: q.description.clone(),
            roles: q.roles.clone(),
            params: q
                .params
                .iter()
                .map(|p| NamedParam {
                    name: p.name.clone(),
                    ty: p.ty.name().to_string(),
                    default: p.default.clone(),
                    required: p.default.is_none(),
                })
                .collect(),
        })
        .collect();
    axum::Json(NamedQueries { queries })
}

/// A named query runs for a role its header names (admin runs every one)
/// that its config grants it.
pub(crate) fn may_run(
    state: &SharedState,
    principal: &crate::security::Principal,
    q: &NamedQuery,
) -> bool {
    let Ok(role) = state.security.role(principal) else {
        return false;
    };
    (matches!(role.name.as_str(), "admin" | crate::security::LOCAL_ROLE)
        || q.roles.iter().any(|r| r == &role.name))
        && role.may_run(&q.name)
}

fn find<'a>(state: &'a SharedState, name: &str) -> Result<&'a NamedQuery, ApiError> {
    state.named.iter().find(|q| q.name == name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no named query {name:?}; GET /v1/queries lists them"
        ))
    })
}

/// A named query's parameters: a body's JSON values, or a query string's
/// text.
enum Given {
    Json(serde_json::Map<String, serde_json::Value>),
    Text(HashMap<String, String>),
}

#[allow(clippy::too_many_arguments)]
async fn run(
    state: SharedState,
    caller: Caller,
    name: &str,
    format: Option<&str>,
    headers: &HeaderMap,
    params: Given,
    limit: Option<u64>,
    timeout_ms: Option<u64>,
) -> Result<Response, ApiError> {
    caller.note.set(|n| {
        n.action = Some("named_query".into());
        n.object = Some(name.to_string());
        n.params = Some(match &params {
            Given::Json(p) => serde_json::Value::Object(p.clone()).to_string(),
            Given::Text(p) => serde_json::json!(p).to_string(),
        });
    });
    let q = find(&state, name)?;
    if !may_run(&state, &caller.principal, q) {
        return Err(forbidden(
            &caller.principal,
            &format!("run the named query {name:?}"),
        ));
    }
    let format = negotiate(format, headers)?;
    let (limit, timeout_ms) = limits(&state, &caller, limit, timeout_ms)?;
    let bound = match &params {
        Given::Json(p) => q.bind(p),
        Given::Text(p) => q.bind_text(p),
    }
    .map_err(|e| ApiError::from_error("binding the parameters", &e))?;
    let start = std::time::Instant::now();
    caller.note.set(|n| n.sql = Some(q.sql.clone()));
    let result = run_sql(
        &state,
        &caller,
        super::query::Origin::Shipped,
        format,
        &q.sql,
        bound,
        limit,
        timeout_ms,
    )
    .await;
    // Time to the first result bytes (the rest streams).
    metrics::histogram!("custlake_named_query_seconds", "query" => q.name.clone())
        .record(start.elapsed().as_secs_f64());
    result
}

/// The path of a named query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct QueryName {
    /// The query's name (`GET /v1/queries` lists them).
    name: String,
}

/// The row limit and timeout of a named query in the query string.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunLimits {
    /// Rows to return at most (default `server.default_row_limit`).
    #[param(minimum = 0)]
    limit: Option<u64>,
    /// Milliseconds the query may run (default `server.query_timeout_ms`).
    timeout_ms: Option<u64>,
}

/// Run a named query, its parameters in the query string
/// (`?id=C1&system=core`; `GET /v1/queries` lists each query's parameters
/// and their types). A missing, unknown or mistyped parameter is a 400
/// that names it.
#[utoipa::path(
    get,
    path = "/v1/queries/{name}",
    operation_id = "run_named_query",
    tag = "query",
    params(QueryName, FormatQuery, RunLimits),
    responses(ResultFormats, NamedProblems)
)]
pub(crate) async fn get(
    State(state): State<SharedState>,
    caller: Caller,
    PathParams(QueryName { name }): PathParams<QueryName>,
    Params(lims): Params<RunLimits>,
    Params(mut query): Params<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = query.remove("format");
    query.remove("limit");
    query.remove("timeout_ms");
    let (limit, timeout) = (lims.limit, lims.timeout_ms);
    run(
        state,
        caller,
        &name,
        format.as_deref(),
        &headers,
        Given::Text(query),
        limit,
        timeout,
    )
    .await
}

/// The parameters and limits of a named query run.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunRequest {
    /// The query's parameters by name (`GET /v1/queries` lists them).
    #[serde(default)]
    #[schema(schema_with = super::docs::param_values)]
    params: serde_json::Map<String, serde_json::Value>,
    /// Rows to return at most (default `server.default_row_limit`).
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "super::docs::whole")]
    limit: Option<u64>,
    /// Milliseconds the query may run (default `server.query_timeout_ms`).
    #[serde(default, deserialize_with = "super::docs::whole")]
    timeout_ms: Option<u64>,
}

impl Shape for RunRequest {
    const SHAPE: &'static str = "{\"params\": {...}, \"limit\": N, \"timeout_ms\": N}";

    fn empty() -> Option<Self> {
        Some(Self::default())
    }
}

/// Run a named query with `{"params": {...}, "limit": N, "timeout_ms": N}`
/// (an empty body runs it with its defaults).
#[utoipa::path(
    post,
    path = "/v1/queries/{name}",
    operation_id = "run_named_query_with_body",
    tag = "query",
    params(QueryName, FormatQuery),
    request_body = RunRequest,
    responses(ResultFormats, NamedProblems)
)]
pub(crate) async fn post(
    State(state): State<SharedState>,
    caller: Caller,
    PathParams(QueryName { name }): PathParams<QueryName>,
    Params(fmt): Params<FormatQuery>,
    headers: HeaderMap,
    Body(req): Body<RunRequest>,
) -> Result<Response, ApiError> {
    run(
        state.clone(),
        caller,
        &name,
        fmt.format.as_deref(),
        &headers,
        Given::Json(req.params),
        req.limit,
        req.timeout_ms,
    )
    .await
}

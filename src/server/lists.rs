//! `GET /v1/lists/renewals|cross-sell|churn`: produce a list (stored as a
//! run, see [`crate::analytics::lists`]) and return its lines as the
//! caller may see them; `GET /v1/lists/{run_id}`: a stored run's lines
//! again. Lines come through the caller's secured view of `list_line`: a
//! telesales agent gets their own assignments, phone numbers are masked
//! for a role that may not see them. Every list is an audited export.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use datafusion::common::ScalarValue;
use serde::Deserialize;

use super::SharedState;
use super::auth::{Caller, forbidden};
use super::docs::{ListProblems, ResultFormats};
use super::error::ApiError;
use super::extract::{Params, PathParams};
use super::query::{limits, negotiate, run_sql};
use crate::analytics::lists::{self, ListKind, ListRequest, Requester};

/// A list's options in the query string.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// The list's date D (YYYY-MM-DD; default today).
    #[param(value_type = Option<String>, format = Date)]
    as_of: Option<String>,
    /// Only this product line (a standard code; `*` or empty: all).
    #[param(pattern = r"^(\*|motor|property|liability|health|accident|cargo|engineering)?$")]
    product_line: Option<String>,
    /// Only customers of this owning team (`*` or empty: all).
    #[param(max_length = 100)]
    team: Option<String>,
    /// Only customers of this region (a standard code; `*` or empty: all).
    #[param(pattern = r"^(\*|north|northeast|east|central|south|southwest|northwest)?$")]
    region: Option<String>,
    /// `json` (default), `ndjson`, `csv`, `arrow` or `parquet`; without it
    /// the `Accept` header decides.
    #[param(value_type = Option<super::docs::FormatName>)]
    format: Option<String>,
    /// Lines to return at most (default `server.default_row_limit`).
    #[param(minimum = 0)]
    limit: Option<u64>,
}

/// The renewal list's options in the query string.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenewalQuery {
    /// The list's date D (YYYY-MM-DD; default today).
    #[param(value_type = Option<String>, format = Date)]
    as_of: Option<String>,
    /// Policies expiring in [D, D + within_days] (default
    /// 30, at most `analytics.max_within_days`, 366 as shipped).
    #[param(minimum = 0, maximum = 366)]
    within_days: Option<u32>,
    /// Only this product line (a standard code; `*` or empty: all).
    #[param(pattern = r"^(\*|motor|property|liability|health|accident|cargo|engineering)?$")]
    product_line: Option<String>,
    /// Only customers of this owning team (`*` or empty: all).
    #[param(max_length = 100)]
    team: Option<String>,
    /// Only customers of this region (a standard code; `*` or empty: all).
    #[param(pattern = r"^(\*|north|northeast|east|central|south|southwest|northwest)?$")]
    region: Option<String>,
    /// `json` (default), `ndjson`, `csv`, `arrow` or `parquet`; without it
    /// the `Accept` header decides.
    #[param(value_type = Option<super::docs::FormatName>)]
    format: Option<String>,
    /// Lines to return at most (default `server.default_row_limit`).
    #[param(minimum = 0)]
    limit: Option<u64>,
}

/// The code sets the list filters document as patterns.
#[cfg(test)]
pub(crate) const DOCUMENTED_CODES: [(&str, &str); 2] = [
    (
        "product_line",
        "motor|property|liability|health|accident|cargo|engineering",
    ),
    (
        "region",
        "north|northeast|east|central|south|southwest|northwest",
    ),
];

async fn produce(
    state: SharedState,
    caller: Caller,
    kind: ListKind,
    (q, within_days): (ListQuery, Option<u32>),
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let req = ListRequest {
        as_of: q.as_of.filter(|d| !d.trim().is_empty()),
        within_days,
        product_line: q.product_line,
        team: q.team,
        region: q.region,
    };
    caller.note.set(|n| {
        n.action = Some("list".into());
        n.object = Some(kind.name().to_string());
        n.params = serde_json::to_string(&req).ok();
    });
    if !caller.role(&state)?.may("lists") {
        return Err(forbidden(&caller.principal, "produce lists"));
    }
    let format = negotiate(q.format.as_deref(), &headers)?;
    let (limit, timeout_ms) = limits(&state, &caller, q.limit, None)?;
    let wh = &state.warehouse;
    let run = {
        // One list at a time: each reads the whole lake.
        let _turn = state.lists.lock().await;
        lists::produce(
            &wh.config,
            &wh.lake,
            &wh.catalog,
            kind,
            &req,
            Requester {
                principal: &caller.principal.user,
                role: &caller.principal.role,
            },
        )
        .await
        .map_err(|e| ApiError::from_error("producing the list", &e))?
    };
    lines(&state, &caller, &run.run_id, format, limit, timeout_ms).await
}

/// A run's lines through the caller's secured session.
async fn lines(
    state: &SharedState,
    caller: &Caller,
    run_id: &str,
    format: super::encode::Format,
    limit: usize,
    timeout_ms: u64,
) -> Result<Response, ApiError> {
    caller.note.set(|n| {
        n.action = Some("list_export".into());
        n.object = Some(run_id.to_string());
    });
    let mut response = run_sql(
        state,
        caller,
        super::query::Origin::Shipped,
        format,
        lists::LINES_SQL,
        vec![("run_id".into(), ScalarValue::Utf8(Some(run_id.to_string())))],
        limit,
        timeout_ms,
    )
    .await?;
    if let Ok(v) = HeaderValue::from_str(run_id) {
        response.headers_mut().insert("x-list-run-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/lists/{run_id}")) {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_LOCATION, v);
    }
    Ok(response)
}

/// Renewal list: one line per golden customer with active policies
/// expiring in [D, D + within_days] that nothing renews yet; consent,
/// termination and age rules applied; ordered by value score then churn
/// risk; assigned to the agents of the customer's team by capacity. The
/// run is stored: `X-List-Run-Id` and `Content-Location` name it.
#[utoipa::path(
    get,
    path = "/v1/lists/renewals",
    operation_id = "renewal_list",
    tag = "lists",
    params(RenewalQuery),
    responses(ResultFormats, ListProblems)
)]
pub(crate) async fn renewals(
    State(state): State<SharedState>,
    caller: Caller,
    Params(q): Params<RenewalQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let RenewalQuery {
        as_of,
        within_days,
        product_line,
        team,
        region,
        format,
        limit,
    } = q;
    let q = ListQuery {
        as_of,
        product_line,
        team,
        region,
        format,
        limit,
    };
    produce(state, caller, ListKind::Renewals, (q, within_days), headers).await
}

/// Cross-sell list: active customers holding a product line of a
/// configured pair and none of its partner (`detail`: the lines to offer).
#[utoipa::path(
    get,
    path = "/v1/lists/cross-sell",
    operation_id = "cross_sell_list",
    tag = "lists",
    params(ListQuery),
    responses(ResultFormats, ListProblems)
)]
pub(crate) async fn cross_sell(
    State(state): State<SharedState>,
    caller: Caller,
    Params(q): Params<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    produce(state, caller, ListKind::CrossSell, (q, None), headers).await
}

/// Churn list: value tier A and B customers who are silent or whose churn
/// risk is at least `analytics.churn_threshold` (`detail`: why).
#[utoipa::path(
    get,
    path = "/v1/lists/churn",
    operation_id = "churn_list",
    tag = "lists",
    params(ListQuery),
    responses(ResultFormats, ListProblems)
)]
pub(crate) async fn churn(
    State(state): State<SharedState>,
    caller: Caller,
    Params(q): Params<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    produce(state, caller, ListKind::Churn, (q, None), headers).await
}

/// The path of a stored list run.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct RunId {
    /// The run's id (`X-List-Run-Id` of the list's response).
    run_id: String,
}

/// How a stored run is read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunQuery {
    /// `json` (default), `ndjson`, `csv`, `arrow` or `parquet`.
    #[param(value_type = Option<super::docs::FormatName>)]
    format: Option<String>,
    /// Lines to return at most (default `server.default_row_limit`).
    #[param(minimum = 0)]
    limit: Option<u64>,
}

/// A stored list run's lines, exactly as produced (as the caller may see
/// them).
#[utoipa::path(
    get,
    path = "/v1/lists/{run_id}",
    operation_id = "list_run",
    tag = "lists",
    params(RunId, RunQuery),
    responses(ResultFormats, ListProblems)
)]
pub(crate) async fn run(
    State(state): State<SharedState>,
    caller: Caller,
    PathParams(RunId { run_id }): PathParams<RunId>,
    Params(q): Params<RunQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.note.set(|n| {
        n.action = Some("list_export".into());
        n.object = Some(run_id.clone());
    });
    if !caller.role(&state)?.reads("list_line") {
        return Err(forbidden(&caller.principal, "read lists"));
    }
    let format = negotiate(q.format.as_deref(), &headers)?;
    let (limit, timeout_ms) = limits(&state, &caller, q.limit, None)?;
    // The run must exist (its lines may all be out of the caller's sight).
    let ctx = super::query::session_of(&state, &crate::security::Principal::local()).await?;
    if !ctx.table_exist("list_run").unwrap_or(false) {
        return Err(ApiError::not_found(format!("no list run {run_id:?}")));
    }
    lists::find(&ctx, &run_id)
        .await
        .map_err(|e| ApiError::from_error("reading the list run", &e))?;
    lines(&state, &caller, &run_id, format, limit, timeout_ms).await
}

#[cfg(test)]
mod tests {
    use super::DOCUMENTED_CODES;

    /// The patterns in the list routes' documentation name exactly the
    /// standard codes.
    #[test]
    fn documented_codes_are_the_standard_codes() {
        let catalog = crate::schema::Catalog::embedded().unwrap();
        for (set, documented) in DOCUMENTED_CODES {
            let codes = catalog.codes.get(set).unwrap();
            assert_eq!(documented, codes.join("|"), "{set}");
        }
    }
}

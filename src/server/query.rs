//! `POST /v1/query`: one read-only SQL statement, parameters bound by
//! DataFusion, the result streamed in the format asked for.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use serde::Deserialize;
use tokio::time::Instant;

use super::SharedState;
use super::docs::{FormatQuery, QueryProblems, ResultFormats};
use super::encode::{Encoder, Format};
use super::error::ApiError;
use super::extract::{Body as JsonBody, Params, Shape};
use crate::error::ErrorKind;
use crate::query::{QueryError, check_read_only, context_on, register_lake_cached};

/// One read-only statement and how to run it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    /// One read-only statement (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE);
    /// `$name` placeholders take `params`.
    #[schema(
        min_length = 1,
        examples("SELECT product_line, count(*) FROM policy GROUP BY 1")
    )]
    pub(crate) sql: String,
    /// Values of the statement's `$name` placeholders, bound by the engine
    /// (never pasted into the SQL).
    #[serde(default)]
    #[schema(schema_with = super::docs::param_values)]
    pub(crate) params: serde_json::Map<String, serde_json::Value>,
    /// Rows to return at most (default `server.default_row_limit`).
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "super::docs::whole")]
    pub(crate) limit: Option<u64>,
    /// Milliseconds the query may run (default `server.query_timeout_ms`).
    #[serde(default, deserialize_with = "super::docs::whole")]
    pub(crate) timeout_ms: Option<u64>,
}

impl Shape for QueryRequest {
    const SHAPE: &'static str =
        "{\"sql\": ..., \"params\": {...}, \"limit\": N, \"timeout_ms\": N}";
}

/// The format a request asks for: `?format=` wins over `Accept`.
pub(crate) fn negotiate(param: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
    if let Some(f) = param {
        return Format::parse(f).ok_or_else(|| {
            ApiError::new(
                ErrorKind::UnsupportedFormat,
                format!("format {f:?} is not one of json, ndjson, csv, arrow, parquet"),
            )
        });
    }
    match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        None => Ok(Format::Json),
        Some(a) if a.trim().is_empty() => Ok(Format::Json),
        Some(a) => Format::from_accept(a).ok_or_else(|| {
            ApiError::new(ErrorKind::NotAcceptable, format!(
                    "Accept {a:?} names no format this server writes: application/json, application/x-ndjson, text/csv, application/vnd.apache.arrow.stream, application/vnd.apache.parquet"
                ),
            )
        }),
    }
}

fn scalar(name: &str, v: &serde_json::Value) -> Result<ScalarValue, ApiError> {
    Ok(match v {
        serde_json::Value::Null => ScalarValue::Null,
        serde_json::Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        serde_json::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => ScalarValue::Float64(n.as_f64()),
        },
        _ => {
            return Err(ApiError::new(
                ErrorKind::InvalidParameter,
                format!("parameter {name:?} must be a string, number, boolean or null"),
            ));
        }
    })
}

fn query_error(e: QueryError) -> ApiError {
    ApiError::from_error("the query", &e)
}

fn df_error(e: datafusion::error::DataFusionError) -> ApiError {
    query_error(QueryError::from(e))
}

/// Run one read-only SQL statement.
///
/// The result streams in the format `?format=` or `Accept` asks for: JSON
/// (`{"columns": [{name, type}], "rows": [{...}], "row_count": N}`),
/// NDJSON, CSV, Arrow IPC stream or Parquet.
#[utoipa::path(
    post,
    path = "/v1/query",
    operation_id = "run_query",
    tag = "query",
    params(FormatQuery),
    request_body = QueryRequest,
    responses(ResultFormats, QueryProblems)
)]
pub(crate) async fn run(
    State(state): State<SharedState>,
    Params(fmt): Params<FormatQuery>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<QueryRequest>,
) -> Result<Response, ApiError> {
    let format = negotiate(fmt.format.as_deref(), &headers)?;
    let (limit, timeout_ms) = limits(&state, req.limit, req.timeout_ms)?;
    let params = req
        .params
        .iter()
        .map(|(k, v)| scalar(k, v).map(|s| (k.clone(), s)))
        .collect::<Result<Vec<_>, _>>()?;
    run_sql(&state, format, &req.sql, params, limit, timeout_ms).await
}

/// The row limit and timeout of a request, defaulted and checked.
pub(crate) fn limits(
    state: &SharedState,
    limit: Option<u64>,
    timeout_ms: Option<u64>,
) -> Result<(usize, u64), ApiError> {
    let cfg = &state.warehouse.config.server;
    let limit = limit.map_or(cfg.default_row_limit, |l| {
        usize::try_from(l).unwrap_or(usize::MAX)
    });
    if limit > cfg.max_row_limit {
        return Err(ApiError::new(
            ErrorKind::InvalidParameter,
            format!("limit {limit} exceeds the maximum {}", cfg.max_row_limit),
        ));
    }
    let timeout_ms = timeout_ms.unwrap_or(cfg.query_timeout_ms);
    if timeout_ms < cfg.min_query_timeout_ms.max(1) || timeout_ms > cfg.max_query_timeout_ms {
        return Err(ApiError::new(
            ErrorKind::InvalidParameter,
            format!(
                "timeout_ms must be between {} and {}",
                cfg.min_query_timeout_ms.max(1),
                cfg.max_query_timeout_ms
            ),
        ));
    }
    Ok((limit, timeout_ms))
}

/// Run one read-only statement with bound parameters and stream the result.
pub(crate) async fn run_sql(
    state: &SharedState,
    format: Format,
    sql: &str,
    params: Vec<(String, ScalarValue)>,
    limit: usize,
    timeout_ms: u64,
) -> Result<Response, ApiError> {
    let cfg = &state.warehouse.config.server;
    check_read_only(sql).map_err(query_error)?;
    let permit = state.queries.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ErrorKind::TooManyRequests,
            format!(
                "{} queries are running; retry shortly",
                cfg.max_concurrent_queries
            ),
        )
    })?;
    let deadline = Instant::now() + std::time::Duration::from_millis(timeout_ms);
    let timed_out = || {
        ApiError::new(
            ErrorKind::Timeout,
            format!("the query did not finish within {timeout_ms} ms"),
        )
    };

    let start = async {
        let ctx = context_on(&state.warehouse.config, state.runtime.clone());
        register_lake_cached(
            &ctx,
            &state.warehouse.lake,
            &state.warehouse.catalog,
            &state.tables,
        )
        .await
        .map_err(query_error)?;
        let mut df = ctx.sql(sql).await.map_err(df_error)?;
        let wanted = df.logical_plan().get_parameter_names().map_err(df_error)?;
        let mut missing: Vec<&String> = wanted
            .iter()
            .filter(|w| !params.iter().any(|(k, _)| k == w.trim_start_matches('$')))
            .collect();
        missing.sort();
        if let Some(first) = missing.first() {
            return Err(ApiError::new(
                ErrorKind::InvalidParameter,
                format!(
                    "the query uses {first} but \"params\" has no {:?}",
                    first.trim_start_matches('$')
                ),
            ));
        }
        if !params.is_empty() {
            df = df.with_param_values(params).map_err(|e| {
                ApiError::new(ErrorKind::InvalidParameter, e.find_root().to_string())
            })?;
        }
        let df = df.limit(0, Some(limit)).map_err(df_error)?;
        let mut stream = df.execute_stream().await.map_err(df_error)?;
        let first = match stream.next().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return Err(df_error(e)),
            None => None,
        };
        Ok::<_, ApiError>((stream, first))
    };
    let (stream, first) = tokio::time::timeout_at(deadline, start)
        .await
        .map_err(|_| timed_out())??;
    let encoder = Encoder::new(format, stream.schema())
        .map_err(|e| ApiError::internal("starting the encoder", e))?;
    let body = Body::from_stream(body_stream(stream, first, encoder, deadline, permit));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if matches!(format, Format::Csv | Format::Parquet | Format::Arrow)
        && let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"result.{}\"",
            format.extension()
        ))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

struct BodyState {
    rows: u64,
    bytes: u64,
    stream: SendableRecordBatchStream,
    first: Option<RecordBatch>,
    encoder: Option<Encoder>,
    deadline: Instant,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Encode batches as they arrive. Dropping the body (a client that hangs
/// up) drops the DataFusion stream, which cancels the query.
fn body_stream(
    stream: SendableRecordBatchStream,
    first: Option<RecordBatch>,
    encoder: Encoder,
    deadline: Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let state = BodyState {
        rows: 0,
        bytes: 0,
        stream,
        first,
        encoder: Some(encoder),
        deadline,
        _permit: permit,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            let enc = st.encoder.as_mut()?;
            let batch = match st.first.take() {
                Some(b) => Some(b),
                None => match tokio::time::timeout_at(st.deadline, st.stream.next()).await {
                    Err(_) => {
                        st.encoder = None;
                        return Some((Err(std::io::Error::other("query timed out")), st));
                    }
                    Ok(Some(Err(e))) => {
                        tracing::error!(error = %e, "query failed while streaming");
                        st.encoder = None;
                        return Some((Err(std::io::Error::other("query failed")), st));
                    }
                    Ok(Some(Ok(b))) => Some(b),
                    Ok(None) => None,
                },
            };
            match batch {
                Some(b) => match enc.batch(&b) {
                    Ok(bytes) if bytes.is_empty() => {
                        st.rows += b.num_rows() as u64;
                        continue;
                    }
                    Ok(bytes) => {
                        st.rows += b.num_rows() as u64;
                        st.bytes += bytes.len() as u64;
                        return Some((Ok(Bytes::from(bytes)), st));
                    }
                    Err(e) => {
                        st.encoder = None;
                        return Some((Err(std::io::Error::other(e)), st));
                    }
                },
                None => {
                    let enc = st.encoder.take()?;
                    let tail = enc.finish().map(Bytes::from).map_err(std::io::Error::other);
                    let tail_len = tail.as_ref().map_or(0, |t| t.len() as u64);
                    metrics::counter!("custlake_query_rows_returned_total").increment(st.rows);
                    metrics::counter!("custlake_query_bytes_returned_total")
                        .increment(st.bytes + tail_len);
                    return Some((tail, st));
                }
            }
        }
    })
    // Fused: the body may be polled again after it ended.
    .fuse()
}

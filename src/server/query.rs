//! `POST /v1/query`: one read-only SQL statement, parameters bound by
//! DataFusion, the result streamed in the format asked for.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use serde::Deserialize;
use tokio::time::Instant;

use super::SharedState;
use super::auth::{AuditNote, Caller, forbidden};
use super::docs::{FormatQuery, QueryProblems, ResultFormats};
use super::encode::{Encoder, Format};
use super::error::ApiError;
use super::extract::{Body as JsonBody, Params, Shape};
use crate::error::ErrorKind;
use crate::query::{QueryError, Tables, check_read_only, plan_read_only, secured};

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
    /// Milliseconds the query may run (default `server.query_timeout_ms`,
    /// at most the role's `max_timeout_ms`).
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

pub(crate) fn query_error(e: QueryError) -> ApiError {
    ApiError::from_error("the query", &e)
}

pub(crate) fn df_error(e: datafusion::error::DataFusionError) -> ApiError {
    query_error(QueryError::from(e))
}

/// Run one read-only SQL statement.
///
/// The result streams in the format `?format=` or `Accept` asks for: JSON
/// (`{"columns": [{name, type}], "rows": [{...}], "row_count": N}`),
/// NDJSON, CSV, Arrow IPC stream or Parquet. Every named query the caller
/// may run is a table function too (`SELECT * FROM customer_lookup('core',
/// 'C1')`); a role without free SQL may send only such calls.
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
    caller: Caller,
    Params(fmt): Params<FormatQuery>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<QueryRequest>,
) -> Result<Response, ApiError> {
    caller.note.set(|n| {
        n.action = Some("query".into());
        n.sql = Some(req.sql.clone());
        n.params = (!req.params.is_empty())
            .then(|| serde_json::Value::Object(req.params.clone()).to_string());
    });
    let format = negotiate(fmt.format.as_deref(), &headers)?;
    let (limit, timeout_ms) = limits(&state, &caller, req.limit, req.timeout_ms)?;
    let params = req
        .params
        .iter()
        .map(|(k, v)| scalar(k, v).map(|s| (k.clone(), s)))
        .collect::<Result<Vec<_>, _>>()?;
    run_sql(
        &state,
        &caller,
        Origin::Own,
        format,
        &req.sql,
        params,
        limit,
        timeout_ms,
    )
    .await
}

/// Whose statement a query runs: the caller's own, in its statement
/// session ([`statement_session_of`]: its secured views with free SQL,
/// only its named queries without), or one of custlake's (a named query, a
/// list), in the caller's secured views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Own,
    Shipped,
}

/// The row limit and timeout of a request, defaulted and checked.
pub(crate) fn limits(
    state: &SharedState,
    caller: &Caller,
    limit: Option<u64>,
    timeout_ms: Option<u64>,
) -> Result<(usize, u64), ApiError> {
    let cfg = &state.warehouse.config.server;
    let role = caller.role(state)?;
    let limit = limit.map_or(cfg.default_row_limit.min(role.max_rows), |l| {
        usize::try_from(l).unwrap_or(usize::MAX)
    });
    if limit > cfg.max_row_limit {
        return Err(ApiError::new(
            ErrorKind::InvalidParameter,
            format!("limit {limit} exceeds the maximum {}", cfg.max_row_limit),
        ));
    }
    if limit > role.max_rows {
        return Err(forbidden(
            &caller.principal,
            &format!("ask for more than {} rows at once", role.max_rows),
        ));
    }
    let timeout_ms = timeout_ms.unwrap_or(cfg.query_timeout_ms.min(role.max_timeout_ms));
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
    if timeout_ms > role.max_timeout_ms {
        return Err(forbidden(
            &caller.principal,
            &format!("run a query for more than {} ms", role.max_timeout_ms),
        ));
    }
    Ok((limit, timeout_ms))
}

/// Run one read-only statement with bound parameters and stream the result.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_sql(
    state: &SharedState,
    caller: &Caller,
    origin: Origin,
    format: Format,
    sql: &str,
    params: Vec<(String, ScalarValue)>,
    limit: usize,
    timeout_ms: u64,
) -> Result<Response, ApiError> {
    if !caller.role(state)?.allows_format(format.name()) {
        return Err(forbidden(
            &caller.principal,
            &format!("export results as {}", format.name()),
        ));
    }
    caller.note.set(|n| {
        n.format = Some(format.name().to_string());
        n.streaming = true;
    });
    // The slot first: parsing a large statement is work too.
    let permit = state.queries.take(&caller.principal.user)?;
    let deadline = Instant::now() + std::time::Duration::from_millis(timeout_ms);
    let own = (origin == Origin::Own).then_some(&caller.principal);
    check_statement(state, own, sql, &params, deadline).await?;
    let timed_out = || {
        ApiError::new(
            ErrorKind::Timeout,
            format!("the query did not finish within {timeout_ms} ms"),
        )
    };

    // A table's files can vanish under a query planned just before a newer
    // commit removed them (a purge past retention deletes at once): the
    // query then fails as "damaged" before its first bytes. It is run once
    // more on the tables as they are now; real damage fails again.
    let mut attempt = 0;
    let (producer, known) = loop {
        attempt += 1;
        let run = async {
            let stream = start(state, caller, origin, sql, &params, limit).await?;
            let encoder = Encoder::new(format, stream.schema())
                .map_err(|e| ApiError::internal("starting the encoder", e))?;
            let mut producer = Producer {
                stream,
                encoder,
                limit,
                rows: 0,
                bytes: 0,
                truncated: false,
                ready: Vec::new(),
                note: Some(caller.note.clone()),
            };
            // Read ahead before answering, so that the status reflects an
            // error and the headers say whether the result was cut, for
            // every result that fits in the read-ahead.
            let known = producer.read_ahead(READ_AHEAD_BYTES).await?;
            Ok::<_, ApiError>((producer, known))
        };
        match tokio::time::timeout_at(deadline, run).await {
            Err(_) => return Err(timed_out()),
            Ok(Ok(done)) => break done,
            Ok(Err(e)) if e.kind == ErrorKind::StorageDamaged && attempt == 1 => {
                tracing::warn!(detail = %e.detail, "a file went missing under a query; running it again on the current tables");
                metrics::counter!("custlake_query_retries_total").increment(1);
            }
            Ok(Err(e)) => return Err(e),
        }
    };
    let truncated = known.then_some(producer.truncated);
    let body = Body::new(ResultBody(Box::pin(producer.spawn(
        deadline,
        permit,
        timeout_ms,
        truncated.is_none(),
    ))));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(ROW_LIMIT, HeaderValue::from(limit as u64));
    match truncated {
        Some(t) => {
            h.insert(
                TRUNCATED,
                HeaderValue::from_static(if t { "true" } else { "false" }),
            );
        }
        // Not known yet: it follows the body as a trailer, for a client
        // that said it takes them (`TE: trailers`).
        None => {
            h.insert(header::TRAILER, HeaderValue::from_static(TRUNCATED));
        }
    }
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

/// The checks every statement passes before it is planned, on every
/// path: size, nesting and read-only by its text (off the async workers: a
/// 256 KiB statement takes milliseconds), and a deep statement planned in
/// a child process first, where a stack overflow ends the child, not the
/// server.
pub(crate) async fn check_statement(
    state: &SharedState,
    own: Option<&crate::security::Principal>,
    sql: &str,
    params: &[(String, ScalarValue)],
    deadline: Instant,
) -> Result<(), ApiError> {
    let (text, limits) = (sql.to_string(), state.warehouse.config.query.clone());
    // A caller's own statement, from a role without free SQL: its named
    // queries and nothing else.
    let named_only = match own {
        Some(p)
            if !state
                .security
                .role(p)
                .map_err(|e| ApiError::from_error("checking the role", &e))?
                .free_sql =>
        {
            Some((p.role.clone(), callable(state, p)))
        }
        _ => None,
    };
    let checked = tokio::task::spawn_blocking(move || {
        let checked = check_read_only(&text, &limits)?;
        if let Some((role, callable)) = named_only {
            crate::query::on_parse_stack(|| {
                crate::query::named_calls_only_sql(&text, &role, &callable)
            })?;
        }
        Ok(checked)
    })
    .await
    .map_err(|e| ApiError::internal("checking the statement", e))?
    .map_err(query_error)?;
    crate::query::sandbox::probe(
        sql,
        params,
        checked.depth,
        &state.warehouse.config,
        deadline.saturating_duration_since(Instant::now()),
    )
    .await
    .map_err(query_error)
}

/// Plan `sql` on the lake as it is now, bind `params`, start it.
pub(crate) async fn start(
    state: &SharedState,
    caller: &Caller,
    origin: Origin,
    sql: &str,
    params: &[(String, ScalarValue)],
    limit: usize,
) -> Result<SendableRecordBatchStream, ApiError> {
    if origin == Origin::Shipped {
        // custlake's own statements: planned once per principal (see
        // `prepared`).
        return state
            .prepared
            .start(state, caller, sql, params, limit)
            .await;
    }
    let df = plan(state, caller, origin, sql, params).await?;
    execute(state, df, limit).await
}

/// Start a planned statement, cut one row past `limit`; an EXPLAIN's
/// plan without the lake's paths.
pub(crate) async fn execute(
    state: &SharedState,
    df: datafusion::prelude::DataFrame,
    limit: usize,
) -> Result<SendableRecordBatchStream, ApiError> {
    // One row past the limit, to tell a cut result from a whole one (an
    // EXPLAIN must stay the plan's root, and its few rows need no limit).
    let explain = matches!(
        df.logical_plan(),
        datafusion::logical_expr::LogicalPlan::Explain(_)
            | datafusion::logical_expr::LogicalPlan::Analyze(_)
    );
    if explain {
        let stream = df.execute_stream().await.map_err(df_error)?;
        let prefixes = crate::query::plan_path_prefixes(&state.warehouse.lake);
        return Ok(crate::query::redacted_plan(stream, prefixes));
    }
    df.limit(0, Some(limit.saturating_add(1)))
        .map_err(df_error)?
        .execute_stream()
        .await
        .map_err(df_error)
}

/// Plan `sql` in the caller's session and bind `params` (every one the
/// statement names must be given); the tables it reads go into the
/// caller's audit note.
pub(crate) async fn plan(
    state: &SharedState,
    caller: &Caller,
    origin: Origin,
    sql: &str,
    params: &[(String, ScalarValue)],
) -> Result<datafusion::prelude::DataFrame, ApiError> {
    let ctx = match origin {
        Origin::Own => statement_session_of(state, &caller.principal).await?,
        Origin::Shipped => session(state, caller).await?,
    };
    let df = plan_read_only(&ctx, sql).await.map_err(query_error)?;
    let touched = crate::query::tables_read(df.logical_plan());
    caller
        .note
        .set(|n| n.tables = (!touched.is_empty()).then(|| touched.join(",")));
    let wanted = df.logical_plan().get_parameter_names().map_err(df_error)?;
    let (session, plan) = df.into_parts();
    let plan = bind(plan, wanted.iter(), params)?;
    Ok(datafusion::prelude::DataFrame::new(session, plan))
}

/// `plan` with `params` bound; every parameter it names (`wanted`) must
/// be given.
pub(crate) fn bind<'a>(
    plan: datafusion::logical_expr::LogicalPlan,
    wanted: impl Iterator<Item = &'a String>,
    params: &[(String, ScalarValue)],
) -> Result<datafusion::logical_expr::LogicalPlan, ApiError> {
    let mut missing: Vec<&String> = wanted
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
    if params.is_empty() {
        return Ok(plan);
    }
    plan.with_param_values(params.to_vec())
        .map_err(|e| ApiError::new(ErrorKind::InvalidParameter, e.find_root().to_string()))
}

/// The caller's session: only the secured views its role may read.
pub(crate) async fn session(
    state: &SharedState,
    caller: &Caller,
) -> Result<datafusion::prelude::SessionContext, ApiError> {
    session_of(state, &caller.principal).await
}

/// The session of any principal (the server's own checks use the local
/// operator's).
pub(crate) async fn session_of(
    state: &SharedState,
    principal: &crate::security::Principal,
) -> Result<datafusion::prelude::SessionContext, ApiError> {
    let wh = &state.warehouse;
    secured(
        &wh.config,
        state.runtime.clone(),
        &wh.lake,
        &wh.catalog,
        Tables::Cached(&state.tables),
        &state.security,
        principal,
    )
    .await
    .map(|s| s.ctx)
    .map_err(query_error)
}

/// The session a principal's own statements run in (`POST /v1/query`, the
/// PostgreSQL and Flight SQL protocols): for a role with free SQL, its
/// secured views; for one without, nothing but the named queries. In both,
/// every named query the principal may run is a table function
/// (`SELECT * FROM customer_360('C1')`, see `query::register_named_calls`),
/// planned in the principal's secured session.
pub(crate) async fn statement_session_of(
    state: &SharedState,
    principal: &crate::security::Principal,
) -> Result<datafusion::prelude::SessionContext, ApiError> {
    let free_sql = state
        .security
        .role(principal)
        .map_err(|e| ApiError::from_error("checking the role", &e))?
        .free_sql;
    let tables = session_of(state, principal).await?;
    let inner = std::sync::Arc::new(tables.state());
    let ctx = if free_sql {
        tables
    } else {
        crate::query::context_on(&state.warehouse.config, state.runtime.clone())
    };
    let runnable = state
        .named
        .iter()
        .filter(|q| super::named::may_run(state, principal, q))
        .cloned();
    crate::query::register_named_calls(&ctx, runnable, inner);
    Ok(ctx)
}

/// The named queries `principal` may run, by name.
pub(crate) fn callable(
    state: &SharedState,
    principal: &crate::security::Principal,
) -> std::collections::BTreeSet<String> {
    state
        .named
        .iter()
        .filter(|q| super::named::may_run(state, principal, q))
        .map(|q| q.name.to_ascii_lowercase())
        .collect()
}

/// The row limit the result was cut at, on every result.
const ROW_LIMIT: &str = "custlake-row-limit";
/// `true` when the result was cut at the row limit (more rows exist),
/// `false` when it is whole. A result still streaming past the read-ahead
/// as the headers go out carries it as a trailer instead (announced by
/// `Trailer: custlake-truncated`, sent to clients that asked for trailers
/// with `TE: trailers`); JSON's `truncated` says it in the body too.
const TRUNCATED: &str = "custlake-truncated";
/// Encoded bytes read ahead before the headers go out.
const READ_AHEAD_BYTES: usize = 4 << 20;

/// What the body's channel carries: encoded bytes, then `End` once the
/// result is whole. A channel that closes without `End` is a result cut
/// short (a timeout, an error), which the body turns into an aborted
/// transfer, so that no client takes it for a complete reply.
enum Piece {
    Bytes(Bytes),
    /// Whole; whether it was cut at the row limit.
    End {
        truncated: bool,
    },
}

/// A result's body: its bytes, then (when the headers could not say it)
/// the `custlake-truncated` trailer.
struct ResultBody(
    std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> + Send>,
    >,
);

impl http_body::Body for ResultBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// Runs one result to its end: reads batches, cuts them at the limit,
/// encodes them.
struct Producer {
    stream: SendableRecordBatchStream,
    encoder: Encoder,
    limit: usize,
    rows: usize,
    bytes: u64,
    truncated: bool,
    /// Encoded bytes not yet sent.
    ready: Vec<Bytes>,
    /// The request's audit note: rows returned so far.
    note: Option<AuditNote>,
}

impl Producer {
    /// The next encoded bytes (`None` at the end of the result).
    async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        loop {
            if self.rows >= self.limit && !self.truncated {
                // At the limit: one more row means the result is cut.
                match self.stream.next().await {
                    Some(Ok(b)) if b.num_rows() == 0 => continue,
                    Some(Ok(_)) => self.truncated = true,
                    Some(Err(e)) => return Err(df_error(e)),
                    None => {}
                }
                return Ok(None);
            }
            if self.truncated {
                return Ok(None);
            }
            let batch = match self.stream.next().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => return Err(df_error(e)),
                None => return Ok(None),
            };
            let room = self.limit - self.rows;
            let batch = if batch.num_rows() > room {
                self.truncated = true;
                batch.slice(0, room)
            } else {
                batch
            };
            self.rows += batch.num_rows();
            if let Some(n) = &self.note {
                let rows = self.rows as i64;
                n.set(|n| n.rows = Some(rows));
            }
            let bytes = self
                .encoder
                .batch(&batch)
                .map_err(|e| ApiError::internal("encoding the result", e))?;
            if !bytes.is_empty() {
                self.bytes += bytes.len() as u64;
                return Ok(Some(Bytes::from(bytes)));
            }
        }
    }

    /// Encode up to `budget` bytes ahead; `true` if the result ended
    /// within them.
    async fn read_ahead(&mut self, budget: usize) -> Result<bool, ApiError> {
        let mut held = 0;
        while held < budget {
            match self.next().await? {
                Some(b) => {
                    held += b.len();
                    self.ready.push(b);
                }
                None => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Run the rest of the result on a task of its own, which holds the
    /// query slot and stops at the deadline whether or not the client
    /// reads: a client that stops reading cannot keep the slot, and the
    /// plan is dropped (cancelled) with the task.
    /// With `trailer`, the body ends with the `custlake-truncated` trailer.
    fn spawn(
        mut self,
        deadline: Instant,
        permit: super::Slot,
        timeout_ms: u64,
        trailer: bool,
    ) -> impl futures::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> + Send + use<>
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(2);
        tokio::spawn(async move {
            let _permit = permit;
            let run = async {
                for b in std::mem::take(&mut self.ready) {
                    if tx.send(Piece::Bytes(b)).await.is_err() {
                        return Ok(());
                    }
                }
                while let Some(b) = self.next().await? {
                    if tx.send(Piece::Bytes(b)).await.is_err() {
                        return Ok(());
                    }
                }
                let tail = self
                    .encoder
                    .finish(self.truncated)
                    .map_err(|e| ApiError::internal("encoding the result", e))?;
                self.bytes += tail.len() as u64;
                if !tail.is_empty() {
                    let _ = tx.send(Piece::Bytes(Bytes::from(tail))).await;
                }
                metrics::counter!("custlake_query_rows_returned_total").increment(self.rows as u64);
                metrics::counter!("custlake_query_bytes_returned_total").increment(self.bytes);
                if self.truncated {
                    metrics::counter!("custlake_query_truncated_total").increment(1);
                }
                let _ = tx
                    .send(Piece::End {
                        truncated: self.truncated,
                    })
                    .await;
                Ok::<_, ApiError>(())
            };
            match tokio::time::timeout_at(deadline, run).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e.detail, code = e.kind.code(), "query failed while streaming");
                }
                Err(_) => {
                    metrics::counter!("custlake_query_timeouts_total").increment(1);
                    tracing::warn!(
                        timeout_ms,
                        "query timed out while streaming; reply cut short"
                    );
                }
            }
        });
        futures::stream::unfold((rx, false), move |(mut rx, ended)| async move {
            if ended {
                return None;
            }
            match rx.recv().await {
                Some(Piece::Bytes(b)) => Some((Ok(http_body::Frame::data(b)), (rx, false))),
                Some(Piece::End { truncated }) if trailer => {
                    let mut t = HeaderMap::new();
                    t.insert(
                        TRUNCATED,
                        HeaderValue::from_static(if truncated { "true" } else { "false" }),
                    );
                    Some((Ok(http_body::Frame::trailers(t)), (rx, true)))
                }
                Some(Piece::End { .. }) => None,
                None => Some((
                    Err(std::io::Error::other(
                        "the query stopped before its result was complete",
                    )),
                    (rx, true),
                )),
            }
        })
        // Fused: the body may be polled again after it ended.
        .fuse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_plan::memory::MemoryStream;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_finished_body_may_be_polled_again_and_frees_its_slot() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let stream = MemoryStream::try_new(vec![batch], schema.clone(), None).unwrap();
        let producer = Producer {
            stream: Box::pin(stream),
            encoder: Encoder::new(Format::Json, schema).unwrap(),
            limit: 2,
            rows: 0,
            bytes: 0,
            truncated: false,
            ready: Vec::new(),
            note: None,
        };
        let mut cfg = crate::config::Config::embedded().server;
        cfg.max_concurrent_queries = 1;
        let slots = super::super::Slots::new(&cfg);
        let permit = slots.take("u").unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut body = Box::pin(producer.spawn(deadline, permit, 10_000, true));
        let mut text = Vec::new();
        let mut trailers = None;
        while let Some(part) = body.next().await {
            match part.unwrap().into_data() {
                Ok(d) => text.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        assert_eq!(trailers.unwrap()[TRUNCATED], "true");
        // Polled after its end (compression layers do): still the end.
        assert!(body.next().await.is_none());
        let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(json["row_count"], 2);
        assert_eq!(json["truncated"], true);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(slots.take("u").is_ok());
    }
}

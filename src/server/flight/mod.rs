//! Arrow Flight SQL: ADBC (Python, R, Go, Java), pyarrow.flight, JDBC's
//! Flight SQL driver and DBeaver over it.
//!
//! Every call names its principal with `authorization: Bearer <token>`
//! (a custlake token or a JWT); a client that logs in with a user name
//! and password (ADBC, JDBC) does the Flight handshake with basic auth,
//! the password being the user's token, and gets the bearer header back.
//! Each call runs in the principal's secured session
//! ([`super::query::session_of`], the one place sessions are built): a
//! statement goes through the same checks, planning and parameter binding
//! as `POST /v1/query`, so masks, row filters and the read-only rule are
//! the same. A statement's ticket carries only its text (and bound
//! parameters): it is planned again, in the caller's own session, when the
//! rows are fetched, so a ticket grants nothing by itself. Results stream
//! as Arrow record batches under the role's timeout and row limit, with a
//! query slot held while they stream, and leave an audit record durable
//! before the first batch and a closing `.end` record with their rows.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use super::query::Origin;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::scalar::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};

use super::SharedState;
use super::auth::{AuditNote, Caller, EndRecord};
use super::error::ApiError;
use crate::error::ErrorKind;
use crate::security::Principal;
use crate::security::audit::AuditRecord;

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// The largest message a client may send (a statement, bound parameters).
const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The Flight SQL listener, bound and ready to serve.
pub(crate) struct FlightListener {
    listener: tokio::net::TcpListener,
    service: Flight,
    /// With `[server.tls]`: every connection is TLS (ALPN `h2`).
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl FlightListener {
    pub(crate) async fn bind(
        state: SharedState,
        bind: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        Ok(Self {
            listener,
            service: Flight { state },
            tls,
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until the task is dropped.
    pub(crate) async fn serve(self) {
        let handshake = self.service.state.header_read_timeout();
        let service =
            FlightServiceServer::new(self.service).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let server = tonic::transport::Server::builder().add_service(service);
        let served = match self.tls {
            None => {
                let incoming = tonic::transport::server::TcpIncoming::from(self.listener)
                    .with_nodelay(Some(true));
                server.serve_with_incoming(incoming).await
            }
            Some(acceptor) => {
                server
                    .serve_with_incoming(tls_incoming(self.listener, acceptor, handshake))
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "the Flight SQL listener stopped");
        }
    }
}

/// TLS connections as they finish their handshakes: each handshake runs on
/// a task of its own within `deadline`, so a client that says nothing holds
/// up no other.
fn tls_incoming(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    deadline: std::time::Duration,
) -> impl Stream<Item = Result<TlsConn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<TlsConn>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a Flight SQL connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let _ = tcp.set_nodelay(true);
            let info = tonic::transport::server::TcpConnectInfo {
                local_addr: tcp.local_addr().ok(),
                remote_addr: Some(peer),
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(TlsConn { stream, info }).await;
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("custlake_tls_handshakes_failed_total").increment(1);
                        tracing::debug!(error = %e, "a Flight SQL TLS handshake was refused");
                    }
                    Err(_) => tracing::debug!("a Flight SQL TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) },
    )
}

/// A TLS connection, with the addresses calls see (`remote_addr`, audited).
struct TlsConn {
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    info: tonic::transport::server::TcpConnectInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The gRPC status of each kind: the one place kinds become gRPC codes
/// (custlake's code travels in the message).
fn status(e: &ApiError) -> Status {
    let code = match e.kind {
        ErrorKind::InvalidSql
        | ErrorKind::NotReadOnly
        | ErrorKind::TooComplex
        | ErrorKind::InvalidParameter
        | ErrorKind::MalformedBody
        | ErrorKind::BodyTooLarge
        | ErrorKind::UnsupportedFormat
        | ErrorKind::NotAcceptable
        | ErrorKind::InvalidData => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::Refused => Code::FailedPrecondition,
        ErrorKind::TooManyRequests | ErrorKind::ResourcesExhausted => Code::ResourceExhausted,
        ErrorKind::Busy | ErrorKind::StorageUnavailable => Code::Unavailable,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::StorageDamaged => Code::DataLoss,
        ErrorKind::Config | ErrorKind::Internal => Code::Internal,
    };
    Status::new(
        code,
        format!("{} (custlake error {})", e.detail, e.kind.code()),
    )
}

/// What a statement's ticket and prepared-statement handle carry: the
/// text, and the bound parameters as an Arrow IPC stream (hex).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Handle {
    sql: String,
    #[serde(default)]
    params: Option<String>,
}

impl Handle {
    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(b: &[u8]) -> Result<Self, Status> {
        serde_json::from_slice(b).map_err(|_| {
            status(&ApiError::new(
                ErrorKind::InvalidParameter,
                "the statement handle is not one this server made",
            ))
        })
    }

    /// The bound parameters by name (`$1` is `1`).
    fn params(&self) -> Result<Vec<(String, ScalarValue)>, Status> {
        let Some(hex) = &self.params else {
            return Ok(Vec::new());
        };
        let bad = |what: &str| {
            status(&ApiError::new(
                ErrorKind::InvalidParameter,
                format!("the bound parameters {what}"),
            ))
        };
        let bytes = hex::decode(hex).map_err(|_| bad("are not readable"))?;
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(&bytes[..], None)
            .map_err(|_| bad("are not an Arrow stream"))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("are not an Arrow stream"))?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(Vec::new());
        };
        let schema = batch.schema();
        // Columns named by numbers (ADBC names a tuple's values 0, 1, …)
        // bind $1, $2, … in order; others bind $name by their name.
        let positional = schema
            .fields()
            .iter()
            .all(|f| f.name().trim_start_matches('$').parse::<u64>().is_ok());
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let v = ScalarValue::try_from_array(batch.column(i), 0)
                    .map_err(|_| bad("hold a value of an unknown type"))?;
                let name = if positional {
                    (i + 1).to_string()
                } else {
                    f.name().trim_start_matches('$').to_string()
                };
                Ok((name, v))
            })
            .collect()
    }
}

/// The server's SQL info (GetSqlInfo), built once.
fn sql_info() -> Result<&'static SqlInfoData, Status> {
    static INFO: OnceLock<Option<SqlInfoData>> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "custlake");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        b.build().ok()
    })
    .as_ref()
    .ok_or_else(|| {
        status(&ApiError::internal(
            "describing the server",
            "SqlInfo did not build",
        ))
    })
}

/// The Flight SQL service.
#[derive(Clone)]
struct Flight {
    state: SharedState,
}

fn bearer<T>(req: &Request<T>) -> Option<String> {
    let v = req.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty())
        .then(|| rest.trim().to_string())
}

impl Flight {
    fn record(&self, principal: Option<&Principal>, action: &str, outcome: &str) -> AuditRecord {
        match principal {
            Some(p) => AuditRecord::new(p, action, outcome),
            None => AuditRecord::anonymous(action, outcome),
        }
    }

    /// Write `record`; no record, no answer.
    async fn audit(
        &self,
        mut record: AuditRecord,
        client: Option<SocketAddr>,
    ) -> Result<(), Status> {
        record.object = Some("flight".into());
        record.client = client.map(|c| c.to_string());
        self.state.security.audit(record).await.map_err(|e| {
            tracing::error!(error = %e, "the audit record could not be written");
            status(&ApiError::new(
                ErrorKind::StorageUnavailable,
                "the audit trail cannot be written; the call was not answered",
            ))
        })
    }

    /// A refusal, audited (unless the address is over the rate of bad
    /// credentials, as over HTTP).
    async fn refuse(
        &self,
        principal: Option<&Principal>,
        action: &str,
        e: ApiError,
        client: Option<SocketAddr>,
    ) -> Status {
        if principal.is_none()
            && self
                .state
                .limiters
                .check_anonymous(client.map(|c| c.ip()))
                .is_err()
        {
            metrics::counter!("custlake_unauthenticated_throttled_total").increment(1);
            return status(&ApiError::new(
                ErrorKind::TooManyRequests,
                "too many requests without a valid credential; retry shortly",
            ));
        }
        let mut r = self.record(principal, action, "denied");
        r.code = Some(i64::from(e.kind.code()));
        r.detail = Some(e.detail.clone());
        if let Err(s) = self.audit(r, client).await {
            return s;
        }
        status(&e)
    }

    /// A metadata command's FlightInfo, for a caller who may call (see
    /// [`Self::principal`]); its ticket is the command itself.
    async fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: impl ProstMessageExt,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        metadata_info(schema, command, request.into_inner())
    }

    /// The principal of a call, from its bearer credential; its role must
    /// export Arrow and send SQL or call a named query, and the call be
    /// within its request rate.
    async fn principal<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let client = req.remote_addr();
        let Some(credential) = bearer(req) else {
            let e = ApiError::new(
                ErrorKind::Unauthenticated,
                "a credential is required: send authorization: Bearer <token>, or log in with the handshake (user name and token)",
            );
            return Err(self.refuse(None, "flight.call", e, client).await);
        };
        let p = match self.authenticate(&credential).await {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(None, "flight.call", e, client).await),
        };
        self.admit(p, client).await
    }

    async fn authenticate(&self, credential: &str) -> Result<Principal, ApiError> {
        self.state
            .security
            .authenticate(&self.state.warehouse.lake, credential)
            .await
            .map_err(|e| match e {
                crate::security::SecurityError::Unauthenticated(m) => {
                    ApiError::new(ErrorKind::Unauthenticated, m)
                }
                other => ApiError::from_error("checking a credential", &other),
            })
    }

    async fn admit(&self, p: Principal, client: Option<SocketAddr>) -> Result<Principal, Status> {
        let role = self
            .state
            .security
            .role(&p)
            .map_err(|e| status(&ApiError::from_error("checking the role", &e)))?;
        // Flight SQL answers in Arrow: a role that may not export Arrow
        // (over HTTP, `?format=arrow`) may not use it.
        if !role.allows_format("arrow") {
            let e = ApiError::new(
                ErrorKind::Forbidden,
                format!(
                    "role {} may not export results as arrow, which Flight SQL sends",
                    p.role
                ),
            );
            return Err(self.refuse(Some(&p), "flight.call", e, client).await);
        }
        if !role.free_sql && super::query::callable(&self.state, &p).is_empty() {
            let e = ApiError::new(
                ErrorKind::Forbidden,
                format!(
                    "role {} may not send its own SQL and may call no named query",
                    p.role
                ),
            );
            return Err(self.refuse(Some(&p), "flight.call", e, client).await);
        }
        if let Err(wait) = self.state.limiters.check(&p) {
            let e = ApiError::new(
                ErrorKind::TooManyRequests,
                format!(
                    "{} is over the request rate of role {}; retry in {wait} s",
                    p.user, p.role
                ),
            );
            return Err(self.refuse(Some(&p), "flight.call", e, client).await);
        }
        Ok(p)
    }

    fn caller(p: &Principal) -> Caller {
        Caller {
            principal: p.clone(),
            note: AuditNote::default(),
        }
    }

    /// The role's row limit and the deadline of a statement starting now.
    fn limits(&self, p: &Principal) -> Result<(usize, Instant, u64), Status> {
        let role = self
            .state
            .security
            .role(p)
            .map_err(|e| status(&ApiError::from_error("checking the role", &e)))?;
        let cfg = &self.state.warehouse.config.server;
        let ms = cfg.query_timeout_ms.min(role.max_timeout_ms);
        Ok((
            role.max_rows.min(cfg.max_row_limit),
            Instant::now() + Duration::from_millis(ms),
            ms,
        ))
    }

    /// Check and plan a statement for its schema (nothing runs).
    async fn describe(
        &self,
        p: &Principal,
        handle: &Handle,
        client: Option<SocketAddr>,
    ) -> Result<datafusion::prelude::DataFrame, Status> {
        let params = handle.params()?;
        let (_, deadline, _) = self.limits(p)?;
        let caller = Self::caller(p);
        let planned = async {
            super::query::check_statement(&self.state, Some(p), &handle.sql, &params, deadline)
                .await?;
            if params.is_empty() {
                // Parameters are bound later (a prepared statement): plan
                // with its placeholders.
                let ctx = super::query::statement_session_of(&self.state, p).await?;
                crate::query::plan_read_only(&ctx, &handle.sql)
                    .await
                    .map_err(|e| ApiError::from_error("the query", &e))
            } else {
                super::query::plan(&self.state, &caller, Origin::Own, &handle.sql, &params).await
            }
        }
        .await;
        match planned {
            Ok(df) => Ok(df),
            Err(e) => {
                let mut r = self.record(Some(p), "flight.plan", "error");
                if matches!(e.kind, ErrorKind::NotReadOnly | ErrorKind::Forbidden) {
                    r.outcome = "denied".into();
                }
                r.detail = Some(handle.sql.clone());
                r.code = Some(i64::from(e.kind.code()));
                self.audit(r, client).await?;
                Err(status(&e))
            }
        }
    }

    /// A FlightInfo whose one endpoint fetches `handle`'s rows.
    fn info(
        schema: &Schema,
        handle: &Handle,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode(),
        }
        .as_any()
        .encode_to_vec();
        FlightInfo::new()
            .try_with_schema(&as_sent(schema))
            .map_err(|e| status(&ApiError::internal("describing the result", e)))
            .map(|i| {
                i.with_endpoint(FlightEndpoint::new().with_ticket(Ticket {
                    ticket: ticket.into(),
                }))
                .with_descriptor(descriptor)
            })
    }

    /// Run `handle`'s statement and stream its rows.
    async fn rows(
        &self,
        p: &Principal,
        handle: &Handle,
        client: Option<SocketAddr>,
    ) -> Result<Response<DoGetStream>, Status> {
        let start = std::time::Instant::now();
        let params = handle.params()?;
        let (limit, deadline, timeout_ms) = self.limits(p)?;
        let mut record = self.record(Some(p), "flight.query", "started");
        record.detail = Some(handle.sql.clone());
        record.params = (!params.is_empty()).then(|| {
            params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        });
        record.format = Some("arrow".into());
        let failed = |mut r: AuditRecord, e: &ApiError| {
            r.outcome = if matches!(
                e.kind,
                ErrorKind::Forbidden | ErrorKind::NotReadOnly | ErrorKind::TooManyRequests
            ) {
                "denied"
            } else {
                "error"
            }
            .into();
            r.code = Some(i64::from(e.kind.code()));
            r.duration_ms = Some(start.elapsed().as_millis() as i64);
            r
        };
        let permit = match self.state.queries.take(&p.user) {
            Ok(p) => p,
            Err(e) => {
                self.audit(failed(record, &e), client).await?;
                return Err(status(&e));
            }
        };
        let caller = Self::caller(p);
        let run = async {
            super::query::check_statement(&self.state, Some(p), &handle.sql, &params, deadline)
                .await?;
            let df =
                super::query::plan(&self.state, &caller, Origin::Own, &handle.sql, &params).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let stream = super::query::execute(&self.state, df, limit).await?;
            Ok::<_, ApiError>((schema, stream))
        };
        let (schema, stream) = match tokio::time::timeout_at(deadline, run).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.audit(failed(record, &e), client).await?;
                return Err(status(&e));
            }
            Err(_) => {
                let e = ApiError::new(
                    ErrorKind::Timeout,
                    format!("the query did not finish within {timeout_ms} ms"),
                );
                self.audit(failed(record, &e), client).await?;
                return Err(status(&e));
            }
        };
        record.tables = caller.note.tables();
        record.duration_ms = Some(start.elapsed().as_millis() as i64);
        self.audit(record.clone(), client).await?;
        record.object = Some("flight".into());
        record.client = client.map(|c| c.to_string());
        let batches = Limited {
            inner: stream,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            timeout_ms,
            limit,
            role: p.role.clone(),
            done: false,
            close: EndRecord::new(self.state.clone(), record, start, permit, deadline),
        };
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(|e| match e {
                FlightError::Tonic(s) => *s,
                other => Status::internal(other.to_string()),
            });
        Ok(Response::new(Box::pin(encoded)))
    }
}

/// A result's batches, held to the deadline and the role's row limit.
struct Limited {
    inner: datafusion::execution::SendableRecordBatchStream,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout_ms: u64,
    limit: usize,
    role: String,
    done: bool,
    close: EndRecord,
}

impl Limited {
    fn end(
        &mut self,
        outcome: &str,
        e: Option<ApiError>,
    ) -> Poll<Option<Result<RecordBatch, FlightError>>> {
        self.done = true;
        self.close
            .end(outcome, e.as_ref().map(|e| i64::from(e.kind.code())));
        Poll::Ready(e.map(|e| Err(FlightError::Tonic(Box::new(status(&e))))))
    }
}

impl Stream for Limited {
    type Item = Result<RecordBatch, FlightError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            let e = ApiError::new(
                ErrorKind::Timeout,
                format!("the query did not finish within {} ms", this.timeout_ms),
            );
            return this.end("error", Some(e));
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                let seen = this.close.rows() as usize;
                if seen + batch.num_rows() > this.limit {
                    let e = ApiError::new(
                        ErrorKind::Forbidden,
                        format!(
                            "the result has more than {} rows, the most role {} may read at once; \
                             add a LIMIT or narrow the query",
                            this.limit, this.role
                        ),
                    );
                    return this.end("error", Some(e));
                }
                this.close.add_rows(batch.num_rows());
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = ApiError::from_error("the query", &crate::query::QueryError::from(e));
                this.end("error", Some(e))
            }
            Poll::Ready(None) => this.end("ok", None),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn encode_schema(schema: &Schema) -> Result<Bytes, Status> {
    let message: Result<IpcMessage, _> =
        SchemaAsIpc::new(&as_sent(schema), &IpcWriteOptions::default()).try_into();
    message
        .map(|IpcMessage(b)| b)
        .map_err(|e| status(&ApiError::internal("encoding a schema", e)))
}

/// `schema` as the rows are sent: the encoder sends a dictionary column
/// (a table's partition column) as its values, so a result announced with
/// the dictionary did not match its stream (ADBC: "endpoint 0 returned
/// inconsistent schema").
fn as_sent(schema: &Schema) -> Schema {
    fn field(f: &Field) -> Field {
        let t = match f.data_type() {
            DataType::Dictionary(_, values) => values.as_ref().clone(),
            DataType::List(inner) => DataType::List(Arc::new(field(inner))),
            DataType::LargeList(inner) => DataType::LargeList(Arc::new(field(inner))),
            DataType::Struct(fields) => DataType::Struct(fields.iter().map(|f| field(f)).collect()),
            other => other.clone(),
        };
        f.clone().with_data_type(t)
    }
    Schema::new_with_metadata(
        schema.fields().iter().map(|f| field(f)).collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

/// A metadata result as a one-batch stream.
fn one_batch(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// A metadata command's FlightInfo: its schema, and a ticket that is the
/// command itself.
fn metadata_info(
    schema: &Schema,
    command: impl ProstMessageExt,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket {
        ticket: command.as_any().encode_to_vec().into(),
    };
    FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| status(&ApiError::internal("describing the result", e)))
        .map(|i| {
            Response::new(
                i.with_endpoint(FlightEndpoint::new().with_ticket(ticket))
                    .with_descriptor(descriptor),
            )
        })
}

mod service;

//! The PostgreSQL wire protocol: psql, psycopg, JDBC (DBeaver, Metabase,
//! Superset, Tableau) and every other Postgres driver.
//!
//! A client logs in with its user name and its token as the password
//! (cleartext, so over TLS wherever `[server.tls]` is set). The login gets
//! the principal's secured session from [`super::query::session_of`], the
//! one place sessions are built, with DataFusion's `pg_catalog` on top of
//! it, so that `\d` and a BI tool's browser show only what the principal
//! may read. Statements are answered by datafusion-postgres (its
//! compatibility parser, parameter typing and Arrow → PG encoding) after
//! custlake's own checks: every statement is parsed and measured on the
//! parser's large stack first, and only reads and the session chatter
//! drivers send (`SET` of a client variable, `SHOW`, transactions,
//! cursors) pass. Each statement takes a query slot, runs under the role's
//! timeout (or the client's shorter `statement_timeout`), stops at the
//! role's row limit, can be cancelled, and leaves an audit record durable
//! before its rows go out, then a closing `.end` record with its rows.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::BooleanBuilder;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::logical_expr::{ColumnarValue, LogicalPlan, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser, QueryHook};
use futures::{Sink, Stream, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, ErrorHandler,
    METADATA_USER, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::DataRow;
use pgwire::messages::startup::{Authentication, SecretKey};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SharedState;
use super::auth::EndRecord;
use super::error::{ApiError, sqlstate_of};
use crate::error::ErrorKind;
use crate::query::{QueryError, WireChecked, WireKind};
use crate::security::Principal;
use crate::security::audit::AuditRecord;
use cancel::{Cancels, Registered, cancel_backend_udf};

/// A statement as datafusion-postgres stores it: its text, and the parsed
/// statement with its logical plan.
type DfStatement = (String, Option<(Statement, LogicalPlan)>);

/// The PostgreSQL listener, bound and ready to serve.
pub(crate) struct PgListener {
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl PgListener {
    pub(crate) async fn bind(
        state: SharedState,
        bind: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let cfg = &state.warehouse.config.server;
        let mut params = DefaultServerParameterProvider::default();
        params.is_superuser = false;
        params.default_transaction_read_only = true;
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(cfg.pg_max_connections.max(1))),
            require_tls: tls.is_some(),
            state,
            conns: Arc::new(ConnectionManager::new()),
            pids: RandomPidSecretKeyGenerator::default(),
            params,
            cancels: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        });
        Ok(Self {
            listener,
            shared,
            tls,
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept connections until the task is dropped.
    pub(crate) async fn serve(self) {
        let startup = self.shared.state.header_read_timeout();
        loop {
            let (socket, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a PostgreSQL connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Connections not yet logged in are few per address and short:
            // nobody can hold the login slots with sockets that say nothing.
            let Some(pending) = Pending::enter(&self.shared, peer.ip()) else {
                metrics::counter!("custlake_pg_connections_refused_total").increment(1);
                drop(socket);
                continue;
            };
            let _ = socket.set_nodelay(true);
            metrics::gauge!("custlake_pg_connections").increment(1.0);
            let conn = Arc::new(Conn {
                shared: self.shared.clone(),
                peer,
                slot: Mutex::new(None),
                pending: Mutex::new(Some(pending)),
                login: Arc::new(OnceLock::new()),
            });
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let handlers = Handlers { conn: conn.clone() };
                let served = pgwire::tokio::process_socket(socket, tls, handlers);
                let login = conn.login.clone();
                let unauthenticated = async move {
                    tokio::time::sleep(startup).await;
                    if login.get().is_some() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    r = served => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, %peer, "a PostgreSQL connection ended");
                        }
                    }
                    () = unauthenticated => {
                        tracing::debug!(%peer, "a PostgreSQL connection did not log in in time");
                    }
                }
                // The connection's slot is free again once the client is
                // gone, however it went (closed, killed, timed out).
                drop(conn);
                metrics::gauge!("custlake_pg_connections").decrement(1.0);
            });
        }
    }
}

/// Connections from one address that have not logged in yet, at most.
const PENDING_PER_ADDRESS: usize = 8;

/// A connection that has not logged in yet, counted against its address.
struct Pending {
    shared: Weak<Shared>,
    ip: std::net::IpAddr,
}

impl Pending {
    fn enter(shared: &Arc<Shared>, ip: std::net::IpAddr) -> Option<Self> {
        let mut m = shared.pending.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if *n >= PENDING_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Self {
            shared: Arc::downgrade(shared),
            ip,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(s) = self.shared.upgrade()
            && let Ok(mut m) = s.pending.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What every connection shares.
struct Shared {
    state: SharedState,
    slots: Arc<Semaphore>,
    require_tls: bool,
    conns: Arc<ConnectionManager>,
    pids: RandomPidSecretKeyGenerator,
    params: DefaultServerParameterProvider,
    /// The logged-in connections by backend pid: secret key and login, for
    /// cancel requests.
    cancels: Mutex<HashMap<i32, (Bytes, Weak<Login>)>>,
    /// Connections not logged in yet, by client address.
    pending: Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// One connection.
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// One of `server.pg_max_connections`, taken by the login.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// Counted against its address until it logs in.
    pending: Mutex<Option<Pending>>,
    /// Set once the login succeeds; nothing runs before.
    login: Arc<OnceLock<Arc<Login>>>,
}

/// A logged-in connection: its principal and its secured session.
struct Login {
    principal: Principal,
    service: DfSessionService,
    parser: Arc<GuardedParser>,
    /// Cancels the statement running now (replaced by each statement).
    running: Mutex<CancellationToken>,
}

struct Handlers {
    conn: Arc<Conn>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.conn.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.conn.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.conn.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(Errors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(Cancels {
            shared: self.conn.shared.clone(),
        })
    }
}

/// A PostgreSQL error of `kind`, with custlake's stable code as detail.
fn pg_error(e: &ApiError) -> PgWireError {
    let mut info = ErrorInfo::new(
        "ERROR".to_string(),
        sqlstate_of(e.kind).to_string(),
        e.detail.clone(),
    );
    info.detail = Some(format!(
        "custlake error {}: {}",
        e.kind.code(),
        e.kind.title()
    ));
    PgWireError::UserError(Box::new(info))
}

fn fatal(kind: ErrorKind, message: impl Into<String>) -> PgWireError {
    let mut info = ErrorInfo::new(
        "FATAL".to_string(),
        sqlstate_of(kind).to_string(),
        message.into(),
    );
    info.detail = Some(format!("custlake error {}: {}", kind.code(), kind.title()));
    PgWireError::UserError(Box::new(info))
}

fn query_error(e: &QueryError) -> ApiError {
    ApiError::from_error("the query", e)
}

/// Rewrites the errors datafusion-postgres raises (DataFusion's own, in
/// their own words) into custlake's kinds, SQLSTATEs and redacted
/// messages: no file path or storage address reaches a client.
struct Errors;

impl ErrorHandler for Errors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        rewrite(error);
    }
}

/// Rewrite one error in place (see [`Errors`]).
fn rewrite(error: &mut PgWireError) {
    {
        let PgWireError::ApiError(e) = error else {
            return;
        };
        let api = match e.downcast_ref::<datafusion::error::DataFusionError>() {
            Some(df) => {
                let kind = crate::error::datafusion_kind(df);
                if kind.client_facing() {
                    // DataFusion prefixes what a function raised with its
                    // own words, as on HTTP (`ApiError::from_error`).
                    let message = df.find_root().to_string();
                    ApiError::new(kind, message.replace("External error: ", ""))
                } else {
                    tracing::warn!(error = %df, "a PostgreSQL statement failed");
                    ApiError::new(kind, kind.title())
                }
            }
            None => ApiError::new(ErrorKind::InvalidSql, e.to_string()),
        };
        *error = pg_error(&api);
    }
}

impl Conn {
    fn login(&self) -> PgWireResult<Arc<Login>> {
        self.login
            .get()
            .cloned()
            .ok_or_else(|| fatal(ErrorKind::Unauthenticated, "log in first"))
    }

    fn state(&self) -> &SharedState {
        &self.shared.state
    }

    /// An audit record of this connection's principal (or `anonymous`).
    fn record(&self, principal: Option<&Principal>, action: &str, outcome: &str) -> AuditRecord {
        let mut r = match principal {
            Some(p) => AuditRecord::new(p, action, outcome),
            None => AuditRecord::anonymous(action, outcome),
        };
        r.object = Some("pg".into());
        r.client = Some(self.peer.to_string());
        r
    }

    /// Write `record`; no record, no answer.
    async fn audit(&self, record: AuditRecord) -> PgWireResult<()> {
        self.state().security.audit(record).await.map_err(|e| {
            tracing::error!(error = %e, "the audit record could not be written");
            pg_error(&ApiError::new(
                ErrorKind::StorageUnavailable,
                "the audit trail cannot be written; the statement was not run",
            ))
        })
    }

    /// Check a login: the token names the principal, which must be the
    /// user the client logs in as. Returns the principal or why not.
    async fn authenticate(&self, user: &str, token: &str) -> Result<Principal, String> {
        let p = self.state().principal_of(token).await?;
        if p.user != user {
            return Err(format!("the token is not {user:?}'s"));
        }
        Ok(p)
    }

    /// Build the principal's session: its secured views, `pg_catalog` over
    /// exactly those, `current_user` / `session_user` naming it, and
    /// `pg_backend_pid()` / `pg_cancel_backend(pid)` for connection `pid`.
    async fn open(&self, principal: &Principal, pid: i32) -> Result<SessionContext, ApiError> {
        let ctx = super::query::statement_session_of(self.state(), principal).await?;
        setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider)
            .map_err(|e| ApiError::internal("setting up pg_catalog", e))?;
        // In place of pg_catalog's constant 1: this connection's pid, the
        // one `pg_cancel_backend` takes.
        ctx.register_udf(create_udf(
            "pg_backend_pid",
            vec![],
            DataType::Int32,
            Volatility::Stable,
            Arc::new(move |_: &[ColumnarValue]| {
                Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(pid))))
            }),
        ));
        // For roles with free SQL: one without it calls only its named
        // queries, and cancels with the protocol's cancel request.
        let role = self.state().security.role(principal).ok();
        if role.as_ref().is_some_and(|r| r.free_sql) {
            let anyones = role.is_some_and(|r| r.may("jobs"));
            ctx.register_udf(cancel_backend_udf(
                Arc::downgrade(&self.shared),
                principal,
                anyones,
            ));
        }
        for name in ["current_user", "session_user", "user"] {
            let user = principal.user.clone();
            ctx.register_udf(create_udf(
                name,
                vec![],
                DataType::Utf8,
                Volatility::Stable,
                Arc::new(move |_: &[ColumnarValue]| {
                    Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(user.clone()))))
                }),
            ));
        }
        Ok(ctx)
    }

    /// Parse, measure and check `sql` on the parser's stack.
    async fn check(&self, sql: &str) -> Result<(WireChecked, Option<String>), ApiError> {
        let limits = self.state().warehouse.config.query.clone();
        let sql = sql.to_string();
        tokio::task::spawn_blocking(move || check_pg(&sql, &limits))
            .await
            .map_err(|e| ApiError::internal("checking the statement", e))?
            .map_err(|e| query_error(&e))
    }

    /// The role's row limit and the statement's deadline: the role's
    /// timeout, or the client's `statement_timeout` when shorter.
    fn limits<C: ClientInfo>(
        &self,
        client: &C,
        login: &Login,
    ) -> Result<(usize, Instant), ApiError> {
        let state = self.state();
        let role = state
            .security
            .role(&login.principal)
            .map_err(|e| ApiError::from_error("checking the role", &e))?;
        let cfg = &state.warehouse.config.server;
        let mut ms = cfg.query_timeout_ms.min(role.max_timeout_ms);
        if let Some(client_ms) = client
            .metadata()
            .get("statement_timeout_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
        {
            ms = client_ms.min(role.max_timeout_ms);
        }
        Ok((
            role.max_rows.min(cfg.max_row_limit),
            Instant::now() + Duration::from_millis(ms),
        ))
    }

    /// The slot and rate checks before a query runs.
    fn admit(&self, login: &Login) -> Result<super::Slot, ApiError> {
        let state = self.state();
        if let Err(wait) = state.limiters.check(&login.principal) {
            return Err(ApiError::new(
                ErrorKind::TooManyRequests,
                format!(
                    "{} is over the request rate of role {}; retry in {wait} s",
                    login.principal.user, login.principal.role
                ),
            ));
        }
        state.queries.take(&login.principal.user)
    }

    /// Run one statement (or one simple-query message) that passed the
    /// checks: session chatter directly, a query with a slot, deadline,
    /// cancellation, row limit and its audit records.
    async fn run<F, Fut>(
        &self,
        login: &Arc<Login>,
        mut record: AuditRecord,
        checked: &WireChecked,
        deadline_limit: (usize, Instant),
        go: F,
    ) -> PgWireResult<Vec<Response>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = PgWireResult<Vec<Response>>>,
    {
        let start = std::time::Instant::now();
        record.tables = (!checked.relations.is_empty()).then(|| checked.relations.join(","));
        if checked.session_only {
            let out = go().await;
            record.outcome = if out.is_ok() { "ok" } else { "error" }.into();
            record.duration_ms = Some(start.elapsed().as_millis() as i64);
            self.audit(record).await?;
            return out;
        }
        let (limit, deadline) = deadline_limit;
        let failed = |mut record: AuditRecord, e: &ApiError| {
            record.outcome = if matches!(e.kind, ErrorKind::Forbidden | ErrorKind::TooManyRequests)
            {
                "denied"
            } else {
                "error"
            }
            .into();
            record.code = Some(i64::from(e.kind.code()));
            record.duration_ms = Some(start.elapsed().as_millis() as i64);
            record
        };
        let permit = match self.admit(login) {
            Ok(p) => p,
            Err(e) => {
                self.audit(failed(record, &e)).await?;
                return Err(pg_error(&e));
            }
        };
        let sql = record.detail.clone().unwrap_or_default();
        let config = &self.state().warehouse.config;
        if let Err(e) = crate::query::sandbox::probe(
            &sql,
            &[],
            checked.depth,
            config,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        {
            let e = query_error(&e);
            self.audit(failed(record, &e)).await?;
            return Err(pg_error(&e));
        }
        let token = login.start();
        let timeout = || {
            ApiError::new(
                ErrorKind::Timeout,
                "canceling statement due to statement timeout",
            )
        };
        let outcome = tokio::select! {
            biased;
            () = token.cancelled() => Err(Err(PgWireError::QueryCanceled)),
            r = tokio::time::timeout_at(deadline, go()) => match r {
                Err(_) => Err(Ok(timeout())),
                Ok(Err(e)) => Err(Err(e)),
                Ok(Ok(v)) => Ok(v),
            },
        };
        let responses = match outcome {
            Ok(v) => v,
            Err(Ok(api)) => {
                self.audit(failed(record, &api)).await?;
                return Err(pg_error(&api));
            }
            Err(Err(e)) => {
                let mut e = e;
                rewrite(&mut e);
                let mut r = failed(record, &ApiError::new(ErrorKind::InvalidSql, ""));
                if matches!(e, PgWireError::QueryCanceled) {
                    r.outcome = "cancelled".into();
                    r.code = None;
                }
                self.audit(r).await?;
                return Err(e);
            }
        };
        record.outcome = "started".into();
        record.duration_ms = Some(start.elapsed().as_millis() as i64);
        self.audit(record.clone()).await?;
        let close = Arc::new(Closing {
            end: EndRecord::new(self.state().clone(), record, start, permit, deadline),
            streams: std::sync::atomic::AtomicUsize::new(0),
        });
        let role = login.principal.role.clone();
        let wrapped = responses
            .into_iter()
            .map(|r| match r {
                Response::Query(mut q) => {
                    close.streams.fetch_add(1, Ordering::Relaxed);
                    let rows =
                        std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
                    q.data_rows = Box::pin(Rows {
                        inner: rows,
                        token: token.clone(),
                        cancelled: Box::pin(token.clone().cancelled_owned()),
                        sleep: Box::pin(tokio::time::sleep_until(deadline)),
                        limit,
                        role: role.clone(),
                        seen: 0,
                        done: false,
                        close: close.clone(),
                    });
                    Response::Query(q)
                }
                other => other,
            })
            .collect::<Vec<_>>();
        if close.streams.load(Ordering::Relaxed) == 0 {
            close.end.end("ok", None);
        }
        Ok(wrapped)
    }
}

/// A query's closing record, shared by its result streams, and how many
/// of them are still open.
struct Closing {
    end: EndRecord,
    streams: std::sync::atomic::AtomicUsize,
}

/// A result's rows, held to the statement's deadline, its cancellation
/// and the role's row limit.
struct Rows {
    inner: Pin<Box<dyn Stream<Item = PgWireResult<DataRow>> + Send>>,
    token: CancellationToken,
    cancelled: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: usize,
    role: String,
    seen: usize,
    done: bool,
    close: Arc<Closing>,
}

impl Rows {
    fn fail(&mut self, outcome: &str, e: &ApiError) -> Poll<Option<PgWireResult<DataRow>>> {
        self.done = true;
        self.close.end.end(outcome, Some(i64::from(e.kind.code())));
        Poll::Ready(Some(Err(pg_error(e))))
    }
}

impl Stream for Rows {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.token.is_cancelled() {
            this.done = true;
            this.close.end.end("cancelled", None);
            return Poll::Ready(Some(Err(PgWireError::QueryCanceled)));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            let e = ApiError::new(
                ErrorKind::Timeout,
                "canceling statement due to statement timeout",
            );
            return this.fail("error", &e);
        }
        // Woken by a cancel request as well as by the rows.
        if this.cancelled.as_mut().poll(cx).is_ready() {
            this.done = true;
            this.close.end.end("cancelled", None);
            return Poll::Ready(Some(Err(PgWireError::QueryCanceled)));
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(row))) => {
                if this.seen >= this.limit {
                    let e = ApiError::new(
                        ErrorKind::Forbidden,
                        format!(
                            "the result has more than {} rows, the most role {} may read at once; \
                             add a LIMIT or narrow the query",
                            this.limit, this.role
                        ),
                    );
                    return this.fail("error", &e);
                }
                this.seen += 1;
                this.close.end.add_rows(1);
                Poll::Ready(Some(Ok(row)))
            }
            Poll::Ready(Some(Err(mut e))) => {
                this.done = true;
                rewrite(&mut e);
                this.close.end.end("error", None);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                if this.close.streams.fetch_sub(1, Ordering::Relaxed) == 1 {
                    this.close.end.end("ok", None);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Parse `sql` as the PostgreSQL compatibility parser does, and check what
/// it parsed (on the parser's large stack, where the tree is dropped too).
/// Check `sql` as it will run: with its select items' scalar subqueries
/// kept from the library's rewriting (`subqueries::kept`, the text to run
/// when it differs from `sql`).
fn check_pg(
    sql: &str,
    limits: &crate::config::QueryConfig,
) -> Result<(WireChecked, Option<String>), QueryError> {
    crate::query::check_size(sql, limits)?;
    crate::query::on_parse_stack(|| {
        let kept = subqueries::kept(sql);
        let statements = compat_parser()
            .parse(kept.as_deref().unwrap_or(sql))
            .map_err(|e| QueryError::Syntax(Box::new(e.into())))?;
        Ok((crate::query::check_wire(&statements, limits)?, kept))
    })
}

fn compat_parser() -> &'static PostgresCompatibilityParser {
    static PARSER: OnceLock<PostgresCompatibilityParser> = OnceLock::new();
    PARSER.get_or_init(PostgresCompatibilityParser::new)
}

mod cancel;
mod login;
mod statements;
mod subqueries;

use statements::{GuardedParser, RedactedExplain, Refuse};

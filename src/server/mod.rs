//! The HTTP query service (axum on tokio), versioned under `/v1`.
//!
//! Every request runs in a DataFusion context built for it, with the lake's
//! tables as they are at that moment, so new data (an ingest, a tier move)
//! is visible to the next query without a restart.

mod answers;
mod auth;
mod customers;
mod docs;
mod encode;
mod error;
mod extract;
mod flight;
pub mod jobs;
mod listen;
mod lists;
mod named;
mod pg;
mod prepared;
mod query;
mod reports;
mod tables;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Classify, ErrorKind};
use crate::lake::Warehouse;

pub use encode::{Encoder, Format};
pub use error::{ApiError, sqlstate_of, status_of};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("named queries: {0}")]
    NamedQueries(String),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Report(#[from] crate::reports::ReportError),
}

impl Classify for ServerError {
    fn kind(&self) -> ErrorKind {
        match self {
            // The address to listen on is configuration.
            Self::Bind { .. } => ErrorKind::Config,
            Self::Io(e) => crate::error::io_kind(e),
            // The named queries are compiled in: a bad one is a defect.
            Self::NamedQueries(_) => ErrorKind::Internal,
            Self::Query(e) => e.kind(),
            Self::Security(e) => e.kind(),
            Self::Tls(_) => ErrorKind::Config,
            Self::Report(e) => e.kind(),
        }
    }
}

/// What every handler shares: the warehouse and the server's own state.
pub struct AppState {
    pub warehouse: Warehouse,
    /// The named queries of `sql/`.
    pub named: Vec<crate::query::named::NamedQuery>,
    /// Caps the queries running at once, in all and per user.
    pub queries: Slots,
    /// Steward decisions run one at a time.
    pub decisions: tokio::sync::Mutex<()>,
    /// Lists are produced one at a time (each reads the whole lake).
    pub lists: tokio::sync::Mutex<()>,
    /// One memory pool and Parquet footer cache for every query.
    pub runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    /// Delta tables and providers, refreshed when a table gets a new version.
    pub tables: Arc<crate::query::TableCache>,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
    /// `GET /v1/tables` facts, kept while a table's version is unchanged.
    pub(crate) facts: tables::FactsCache,
    /// Lineage and suspects answers, kept while no table changes.
    pub(crate) answers: answers::Answers,
    /// custlake's own statements planned per principal, kept while their
    /// tables do not change.
    pub(crate) prepared: prepared::Prepared,
    /// Credentials, roles, masks and the audit journal.
    pub security: crate::security::Security,
    /// A request rate per principal.
    pub(crate) limiters: auth::Limiters,
    /// The OpenAPI document as each role sees it.
    pub(crate) openapi_by_role: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The scheduled jobs (run by `run_until_stopped` when enabled).
    pub scheduler: Option<crate::reports::schedule::Scheduler>,
}

pub type SharedState = Arc<AppState>;

/// The request id header.
const REQUEST_ID: &str = "x-request-id";

/// Every documented route, with its OpenAPI description.
fn api() -> OpenApiRouter<SharedState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi))
        .routes(routes!(query::run))
        .routes(routes!(named::list))
        .routes(routes!(named::get, named::post))
        .routes(routes!(tables::list))
        .routes(routes!(tables::show))
        .routes(routes!(customers::merge))
        .routes(routes!(customers::lineage))
        .routes(routes!(customers::split))
        .routes(routes!(customers::undo))
        .routes(routes!(customers::suspects))
        .routes(routes!(customers::group_decision))
        .routes(routes!(lists::renewals))
        .routes(routes!(lists::cross_sell))
        .routes(routes!(lists::churn))
        .routes(routes!(lists::run))
        .routes(routes!(reports::list))
        .routes(routes!(reports::get))
        .routes(routes!(jobs::list))
}

/// The OpenAPI document of every route, with the bounds this server's
/// configuration puts on limits and timeouts.
pub fn openapi_document(
    config: &crate::config::Config,
    named: &[crate::query::named::NamedQuery],
) -> serde_json::Value {
    let mut doc = api().into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut doc = serde_json::to_value(&doc).unwrap_or_default();
    docs::named_paths(&mut doc, named);
    docs::apply_bounds(&mut doc, &config.server);
    docs::apply_security(&mut doc);
    doc
}

/// The service over `warehouse`: its state and the router with every
/// route and layer (tests call it with `oneshot`, no socket needed).
pub async fn app(warehouse: Warehouse) -> Result<Router, ServerError> {
    Ok(router(state(warehouse).await?))
}

/// The server's shared state.
pub async fn state(warehouse: Warehouse) -> Result<SharedState, ServerError> {
    let config = warehouse.config.clone();
    let named = crate::query::named::embedded().map_err(ServerError::NamedQueries)?;
    let openapi = serde_json::to_string(&openapi_document(&config, &named)).unwrap_or_default();
    prometheus();
    let security = crate::security::Security::open(&config, &warehouse.lake).await?;
    let limiters = auth::Limiters::new(&security.policy);
    let scheduler = Some(jobs::scheduler(&warehouse, &security).await?);
    let state = Arc::new(AppState {
        scheduler,
        security,
        limiters,
        openapi_by_role: Default::default(),
        named,
        queries: Slots::new(&config.server),
        decisions: tokio::sync::Mutex::new(()),
        lists: tokio::sync::Mutex::new(()),
        runtime: crate::query::runtime(&config)?,
        tables: Default::default(),
        openapi,
        facts: tables::FactsCache::default(),
        answers: answers::Answers::default(),
        prepared: prepared::Prepared::default(),
        warehouse,
    });
    Ok(state)
}

/// The router with every route and layer.
pub fn router(state: SharedState) -> Router {
    let body_limit = state.warehouse.config.server.body_limit_bytes;
    let request_id = axum::http::HeaderName::from_static(REQUEST_ID);
    let (routes, _) = api().split_for_parts();
    routes
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            bounded_reads,
        ))
        .route_layer(axum::middleware::from_fn(track))
        .with_state(state.clone())
        // Before routing, so that no path escapes it (an unknown one too).
        .layer(axum::middleware::from_fn_with_state(state, auth::guard))
        // axum's own limit, so that an oversized body reaches the handler as
        // a rejection and is answered with problem+json.
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(CompressionLayer::new().gzip(true).zstd(true))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// The process-wide Prometheus recorder (installed by the first server).
fn prometheus() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0,
                ])
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

/// Reads (`GET`) answer within the longest query timeout or get 504: a
/// lineage or suspect list over a huge ledger cannot hold a connection and
/// its work forever. (`POST /v1/query` has its own deadline; a decision is
/// not cut midway: it holds the identity lease to its end.)
async fn bounded_reads(
    State(state): State<SharedState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() != axum::http::Method::GET {
        return next.run(req).await;
    }
    let limit = Duration::from_millis(state.warehouse.config.server.max_query_timeout_ms.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            ErrorKind::Timeout,
            format!("the request did not finish within {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// Count every request and time it, by route and status.
async fn track(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    // A fixed set of labels: a made-up method must not add series.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("custlake_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("custlake_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// Prometheus metrics: `custlake_http_requests_total` and
/// `custlake_http_request_duration_seconds` by route and status, rows and
/// bytes returned, errors by code, time per named query, and the bytes
/// running queries hold of the memory pool
/// (`custlake_query_memory_reserved_bytes`).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "service",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics_text(State(state): State<SharedState>, caller: auth::Caller) -> Response {
    if let Err(e) = caller.must(&state, "metrics") {
        return e.into_response();
    }
    // Read at each scrape: what running queries hold of the memory pool.
    metrics::gauge!("custlake_query_memory_reserved_bytes")
        .set(state.runtime.memory_pool.reserved() as f64);
    let body = prometheus().map(|h| h.render()).unwrap_or_default();
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// This document: the OpenAPI 3.1 description of every route, generated
/// from the handlers and their types.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "service",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
async fn openapi(State(state): State<SharedState>, caller: auth::Caller) -> Response {
    let role = caller.principal.role.clone();
    let cached = state
        .openapi_by_role
        .lock()
        .ok()
        .and_then(|m| m.get(&role).cloned());
    let doc = match cached {
        Some(d) => d,
        None => {
            // The named queries this role may run, no others.
            let named: Vec<_> = state
                .named
                .iter()
                .filter(|q| named::may_run(&state, &caller.principal, q))
                .cloned()
                .collect();
            let d = serde_json::to_string(&openapi_document(&state.warehouse.config, &named))
                .unwrap_or_default();
            if let Ok(mut m) = state.openapi_by_role.lock() {
                m.insert(role, d.clone());
            }
            d
        }
    };
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc,
    )
        .into_response()
}

/// Liveness.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok` or `ready`.
    status: String,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "service",
    responses((status = 200, description = "Up", body = Health))
)]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// The lake's storage can be reached.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "service",
    responses((status = 200, description = "Ready", body = Health), docs::ReadyProblems)
)]
async fn readyz(State(state): State<SharedState>) -> Response {
    let wh = &state.warehouse;
    let def = match wh.catalog.table("ingest_batch") {
        Ok(d) => d,
        Err(e) => return ApiError::internal("readiness check", e).into_response(),
    };
    match wh.lake.open(def).await {
        Ok(_) => axum::Json(Health {
            status: "ready".into(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "lake not reachable");
            ApiError::new(
                ErrorKind::StorageUnavailable,
                "the lake's storage cannot be reached",
            )
            .into_response()
        }
    }
}

/// The server: bound, ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    limits: listen::Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: SharedState,
    pg: Option<pg::PgListener>,
    flight: Option<flight::FlightListener>,
}

impl Application {
    /// Serve `warehouse` on `bind` (`127.0.0.1:0` picks a free port).
    pub async fn build(warehouse: Warehouse, bind: &str) -> Result<Self, ServerError> {
        let cfg = &warehouse.config.server;
        let limits = listen::Limits {
            header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms.max(1)),
            max_connections: cfg.max_connections,
            write_timeout: Duration::from_millis(cfg.write_timeout_ms.max(1)),
            grace: Duration::from_millis(cfg.shutdown_grace_ms),
        };
        let tls = listen::tls_acceptor(&cfg.tls, b"http/1.1").map_err(ServerError::Tls)?;
        let pg_tls = listen::tls_acceptor(&cfg.tls, b"postgresql").map_err(ServerError::Tls)?;
        let flight_tls = listen::tls_acceptor(&cfg.tls, b"h2").map_err(ServerError::Tls)?;
        let pg_bind = cfg.pg_bind.clone();
        let flight_bind = cfg.flight_bind.clone();
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| ServerError::Bind {
                addr: bind.to_string(),
                source,
            })?;
        let state = state(warehouse).await?;
        let pg = if pg_bind.is_empty() {
            None
        } else {
            Some(
                pg::PgListener::bind(state.clone(), &pg_bind, pg_tls)
                    .await
                    .map_err(|source| ServerError::Bind {
                        addr: pg_bind.clone(),
                        source,
                    })?,
            )
        };
        let flight = if flight_bind.is_empty() {
            None
        } else {
            Some(
                flight::FlightListener::bind(state.clone(), &flight_bind, flight_tls)
                    .await
                    .map_err(|source| ServerError::Bind {
                        addr: flight_bind.clone(),
                        source,
                    })?,
            )
        };
        Ok(Self {
            listener,
            router: router(state.clone()),
            limits,
            tls,
            state,
            pg,
            flight,
        })
    }

    /// Where Arrow Flight SQL is served, when it is.
    pub fn flight_addr(&self) -> Option<SocketAddr> {
        self.flight.as_ref().and_then(|f| f.local_addr().ok())
    }

    /// Where the PostgreSQL wire protocol is served, when it is.
    pub fn pg_addr(&self) -> Option<SocketAddr> {
        self.pg.as_ref().and_then(|p| p.local_addr().ok())
    }

    /// Whether connections are served over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serve until Ctrl-C or SIGTERM; running queries get the grace period
    /// to finish, then the server stops (and with it their streams).
    pub async fn run_until_stopped(self) -> Result<(), ServerError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stop = shutdown_signal();
        tokio::spawn(async move {
            stop.await;
            let _ = tx.send(true);
        });
        // Move audit records from the journal into `audit_log` now (what a
        // crash left) and then every few seconds.
        let flusher = tokio::spawn(audit_flusher(self.state.clone()));
        let scheduler = self
            .state
            .warehouse
            .config
            .scheduler
            .enabled
            .then(|| tokio::spawn(jobs::run_scheduler(self.state.clone())));
        let pg = self.pg.map(|p| tokio::spawn(p.serve()));
        let flight = self.flight.map(|f| tokio::spawn(f.serve()));
        listen::serve(self.listener, self.router, self.limits, self.tls, rx).await;
        for task in [pg, flight].into_iter().flatten() {
            task.abort();
        }
        flusher.abort();
        if let Some(s) = scheduler {
            // A job cut off here keeps its `running` row until the next
            // scheduler start closes it as failed; its slot is not run again.
            s.abort();
        }
        flush_audit(&self.state).await;
        Ok(())
    }
}

async fn audit_flusher(state: SharedState) {
    let every = Duration::from_secs(state.warehouse.config.security.audit.flush_seconds.max(1));
    loop {
        flush_audit(&state).await;
        tokio::time::sleep(every).await;
    }
}

/// Move the journal's records into `audit_log` (a failure is logged and
/// tried again later: the records stay in the journal meanwhile).
async fn flush_audit(state: &SharedState) {
    let Some(journal) = &state.security.journal else {
        return;
    };
    let wh = &state.warehouse;
    match crate::security::audit_table::flush(&wh.lake, &wh.catalog, journal.dir()).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(records = n, "audit records moved into audit_log"),
        Err(e) => tracing::warn!(error = %e, "audit records not moved yet"),
    }
}

/// Resolves on the first SIGTERM or Ctrl-C. The handlers are registered
/// when this is called, not when the future is first polled: a signal that
/// arrives between the server taking requests and the waiting task starting
/// must not fall to the default action (killing the process).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl AppState {
    /// How long a connection may take to say who it is (a request's head,
    /// a TLS handshake, a PG login): `server.header_read_timeout_ms`.
    pub(crate) fn header_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.warehouse.config.server.header_read_timeout_ms.max(1))
    }
}

/// The query slots: `server.max_concurrent_queries` in all, at most
/// `server.max_queries_per_user` of them held by one user, whichever
/// protocol the queries came by.
pub struct Slots {
    all: Arc<Semaphore>,
    total: usize,
    per_user: usize,
    users: std::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>,
}

/// A held query slot (given back when dropped).
pub struct Slot {
    _all: tokio::sync::OwnedSemaphorePermit,
    _user: tokio::sync::OwnedSemaphorePermit,
}

impl Slots {
    pub(crate) fn new(cfg: &crate::config::ServerConfig) -> Self {
        let all = cfg.max_concurrent_queries.max(1);
        let per_user = match cfg.max_queries_per_user {
            0 => (all / 2).max(1),
            n => n.min(all),
        };
        Self {
            all: Arc::new(Semaphore::new(all)),
            total: all,
            per_user,
            users: Default::default(),
        }
    }

    /// A slot for `user` now, or 429 saying which limit is reached.
    pub(crate) fn take(&self, user: &str) -> Result<Slot, error::ApiError> {
        let mine = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            if users.len() > 10_000 {
                // Users with nothing running hold nothing worth keeping.
                let full = self.per_user;
                users.retain(|_, s| s.available_permits() < full);
            }
            users
                .entry(user.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)))
                .clone()
        };
        let user_slot = mine.try_acquire_owned().map_err(|_| {
            error::ApiError::new(
                crate::error::ErrorKind::TooManyRequests,
                format!(
                    "{user} is running as many queries as one user may ({}, \
                     server.max_queries_per_user); retry when one ends",
                    self.per_user
                ),
            )
        })?;
        let all = self.all.clone().try_acquire_owned().map_err(|_| {
            error::ApiError::new(
                crate::error::ErrorKind::TooManyRequests,
                format!("{} queries are running; retry shortly", self.total),
            )
        })?;
        Ok(Slot {
            _all: all,
            _user: user_slot,
        })
    }
}

#[cfg(test)]
mod slot_tests {
    #[test]
    fn one_user_takes_at_most_its_share_of_the_slots() {
        let mut cfg = crate::config::Config::embedded().server;
        cfg.max_concurrent_queries = 4;
        let slots = super::Slots::new(&cfg);
        let a: Vec<_> = (0..2).map(|_| slots.take("ann").unwrap()).collect();
        let e = slots.take("ann").map(|_| ()).unwrap_err();
        assert!(e.detail.contains("max_queries_per_user"), "{}", e.detail);
        let b: Vec<_> = (0..2).map(|_| slots.take("bob").unwrap()).collect();
        let e = slots.take("cy").map(|_| ()).unwrap_err();
        assert!(e.detail.contains("4 queries are running"), "{}", e.detail);
        drop(a);
        slots.take("ann").unwrap();
        drop(b);
        cfg.max_queries_per_user = 9;
        let slots = super::Slots::new(&cfg);
        let all: Vec<_> = (0..4).map(|_| slots.take("ann").unwrap()).collect();
        assert!(slots.take("bob").is_err());
        drop(all);
    }
}

//! The HTTP query service (axum on tokio), versioned under `/v1`.
//!
//! Every request runs in a DataFusion context built for it, with the lake's
//! tables as they are at that moment, so new data (an ingest, a tier move)
//! is visible to the next query without a restart.

mod customers;
mod encode;
mod error;
mod named;
mod query;
mod tables;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::{Classify, ErrorKind};
use crate::lake::Warehouse;

pub use encode::{Encoder, Format};
pub use error::{ApiError, status_of};

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
        }
    }
}

/// What every handler shares: the warehouse and the server's own state.
pub struct AppState {
    pub warehouse: Warehouse,
    /// The named queries of `sql/`.
    pub named: Vec<crate::query::named::NamedQuery>,
    /// Caps the queries running at once.
    pub queries: Arc<Semaphore>,
    /// Steward decisions run one at a time.
    pub decisions: tokio::sync::Mutex<()>,
    /// One memory pool and Parquet footer cache for every query.
    pub runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    /// Delta tables and providers, refreshed when a table gets a new version.
    pub tables: crate::query::TableCache,
}

pub type SharedState = Arc<AppState>;

/// The request id header.
const REQUEST_ID: &str = "x-request-id";

/// The router with every route and layer; tests call it with `oneshot`.
pub fn router(state: SharedState) -> Router {
    let body_limit = state.warehouse.config.server.body_limit_bytes;
    let request_id = axum::http::HeaderName::from_static(REQUEST_ID);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics_text))
        .route("/v1/query", post(query::run))
        .route("/v1/queries", get(named::list))
        .route("/v1/queries/{name}", get(named::get).post(named::post))
        .route("/v1/tables", get(tables::list))
        .route("/v1/tables/{name}", get(tables::show))
        .route("/v1/customers/merge", post(customers::merge))
        .route("/v1/customers/{id}/lineage", get(customers::lineage))
        .route("/v1/customers/{id}/split", post(customers::split))
        .route("/v1/merge-events/{id}/undo", post(customers::undo))
        .route("/v1/suspects", get(customers::suspects))
        .route(
            "/v1/suspects/{group}/{action}",
            post(customers::group_decision),
        )
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn(track))
        .with_state(state)
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

/// Count every request and time it, by route and status.
async fn track(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("custlake_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("custlake_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// Prometheus metrics: requests, latency histograms, rows and bytes
/// returned, errors by code, time per named query.
async fn metrics_text() -> Response {
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

/// The OpenAPI description of every route (checked against the live server
/// by a property-based API tester in CI).
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

async fn readyz(axum::extract::State(state): axum::extract::State<SharedState>) -> Response {
    let wh = &state.warehouse;
    let def = match wh.catalog.table("ingest_batch") {
        Ok(d) => d,
        Err(e) => return ApiError::internal("readiness check", e).into_response(),
    };
    match wh.lake.open(def).await {
        Ok(_) => json_response(StatusCode::OK, &serde_json::json!({"status": "ready"})),
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

pub(crate) fn json_response(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

/// The server: bound, ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    shutdown_grace: Duration,
}

impl Application {
    /// Serve `warehouse` on `bind` (`127.0.0.1:0` picks a free port).
    pub async fn build(warehouse: Warehouse, bind: &str) -> Result<Self, ServerError> {
        let config = warehouse.config.clone();
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| ServerError::Bind {
                addr: bind.to_string(),
                source,
            })?;
        let shutdown_grace = Duration::from_millis(config.server.shutdown_grace_ms);
        let named = crate::query::named::embedded().map_err(ServerError::NamedQueries)?;
        prometheus();
        let state = Arc::new(AppState {
            named,
            queries: Arc::new(Semaphore::new(config.server.max_concurrent_queries.max(1))),
            decisions: tokio::sync::Mutex::new(()),
            runtime: crate::query::runtime(&config)?,
            tables: crate::query::TableCache::default(),
            warehouse,
        });
        Ok(Self {
            listener,
            router: router(state),
            shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serve until Ctrl-C or SIGTERM; running queries get the grace period
    /// to finish, then the server stops (and with it their streams).
    pub async fn run_until_stopped(self) -> Result<(), ServerError> {
        let grace = self.shutdown_grace;
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let serve = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = tx.send(true);
        });
        let serve = tokio::spawn(async move { serve.await });
        tokio::pin!(serve);
        tokio::select! {
            r = &mut serve => return r.map_err(|e| ServerError::Io(std::io::Error::other(e)))?.map_err(ServerError::Io),
            _ = rx.changed() => {}
        }
        match tokio::time::timeout(grace, &mut serve).await {
            Ok(r) => r
                .map_err(|e| ServerError::Io(std::io::Error::other(e)))?
                .map_err(ServerError::Io),
            Err(_) => {
                tracing::warn!("shutdown grace period over: cancelling running queries");
                serve.abort();
                Ok(())
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

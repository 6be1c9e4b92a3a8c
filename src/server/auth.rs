//! Every request but `/healthz` and `/readyz` names its principal with a
//! bearer credential (a custlake token or a JWT), is held to its role's
//! request rate, and leaves one audit record, durable before the response
//! goes out. A streamed result's record is written as it starts; a
//! closing `<action>.end` record with its rows and bytes follows when the
//! stream ends (or is cut off).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use http_body::Frame;

use super::error::ApiError;
use super::listen::Peer;
use super::{REQUEST_ID, SharedState};
use crate::error::ErrorKind;
use crate::security::audit::AuditRecord;
use crate::security::{Policy, Principal};

type Limiter =
    RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>;

/// A token bucket per principal, with its role's rate and burst, and one
/// per client address for requests without a usable credential (each of
/// which is refused and recorded).
pub(crate) struct Limiters {
    by_role: HashMap<String, Limiter>,
    anonymous: RateLimiter<
        std::net::IpAddr,
        governor::state::keyed::DefaultKeyedStateStore<std::net::IpAddr>,
        DefaultClock,
    >,
    clock: DefaultClock,
}

impl Limiters {
    pub(crate) fn new(policy: &Policy) -> Self {
        let mut by_role = HashMap::new();
        for name in policy.names() {
            if let Ok(role) = policy.role(name) {
                let rate = NonZeroU32::new(role.rate_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(role.burst.max(role.rate_per_second).max(1))
                    .unwrap_or(NonZeroU32::MIN);
                let quota = Quota::per_second(rate).allow_burst(burst);
                by_role.insert(name.to_string(), RateLimiter::keyed(quota));
            }
        }
        let anonymous = RateLimiter::keyed(
            Quota::per_second(NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(40).unwrap_or(NonZeroU32::MIN)),
        );
        Self {
            by_role,
            anonymous,
            clock: DefaultClock::default(),
        }
    }

    /// `Err(seconds to wait)` when a client address sends too many
    /// requests without a usable credential.
    pub(crate) fn check_anonymous(&self, peer: Option<std::net::IpAddr>) -> Result<(), u64> {
        let Some(ip) = peer else {
            return Ok(());
        };
        self.anonymous.check_key(&ip).map_err(|not_until| {
            not_until
                .wait_time_from(self.clock.now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64
        })
    }

    /// `Err(seconds to wait)` when the principal is over its rate.
    pub(crate) fn check(&self, p: &Principal) -> Result<(), u64> {
        let Some(l) = self.by_role.get(&p.role) else {
            return Ok(());
        };
        l.check_key(&p.user).map_err(|not_until| {
            not_until
                .wait_time_from(self.clock.now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64
        })
    }
}

/// What a handler tells the audit trail about its request.
#[derive(Debug, Default, Clone)]
pub(crate) struct Note {
    pub(crate) action: Option<String>,
    pub(crate) object: Option<String>,
    pub(crate) sql: Option<String>,
    pub(crate) params: Option<String>,
    pub(crate) tables: Option<String>,
    pub(crate) format: Option<String>,
    pub(crate) rows: Option<i64>,
    /// The body is a result stream: a closing record follows it.
    pub(crate) streaming: bool,
}

/// The request's note, shared between the handler, its result stream and
/// the audit layer.
#[derive(Debug, Default, Clone)]
pub(crate) struct AuditNote(pub(crate) Arc<Mutex<Note>>);

impl AuditNote {
    pub(crate) fn set(&self, f: impl FnOnce(&mut Note)) {
        if let Ok(mut n) = self.0.lock() {
            f(&mut n);
        }
    }

    /// The tables the request read, as the audit record names them.
    pub(crate) fn tables(&self) -> Option<String> {
        self.get().tables
    }

    fn get(&self) -> Note {
        self.0.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

/// The routes anyone may call.
fn open_route(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

fn bearer(req: &axum::extract::Request) -> Option<Result<String, ()>> {
    let v = req.headers().get(header::AUTHORIZATION)?;
    let v = v.to_str().map_err(|_| ());
    Some(v.and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ').ok_or(())?;
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            Ok(rest.trim().to_string())
        } else {
            Err(())
        }
    }))
}

fn unauthenticated(detail: &str) -> Response {
    let mut resp = ApiError::new(ErrorKind::Unauthenticated, detail).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"custlake\""),
    );
    resp
}

fn outcome_of(status: u16) -> &'static str {
    match status {
        200..=399 => "ok",
        401 | 403 | 429 => "denied",
        _ => "error",
    }
}

/// Authenticate, rate-limit and audit one request, on a task of its own:
/// a client that hangs up drops only the wait for it, so neither a change
/// it asked for (a merge) nor the request's record is left undone.
pub(crate) async fn guard(
    State(state): State<SharedState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if open_route(req.uri().path()) {
        return next.run(req).await;
    }
    match tokio::spawn(guarded(state, req, next)).await {
        Ok(resp) => resp,
        Err(e) => ApiError::internal("answering the request", e).into_response(),
    }
}

async fn guarded(
    state: SharedState,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    // The event id is the server's own: a client's x-request-id is kept
    // apart (`request_id`) and can never name, or overwrite, a record.
    let mut record = AuditRecord {
        event_id: crate::security::audit::fresh_id(),
        at: crate::security::audit::now(),
        action: format!("{} {route}", req.method()),
        object: Some(route.clone()),
        client: req.extensions().get::<Peer>().map(|p| p.0.to_string()),
        request_id: req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ..AuditRecord::default()
    };
    let principal = match bearer(&req) {
        None => Err("a credential is required: send Authorization: Bearer <token>".to_string()),
        Some(Err(())) => Err("the Authorization header is not a bearer credential".to_string()),
        Some(Ok(c)) => state.principal_of(&c).await,
    };
    let principal = match principal {
        Ok(p) => p,
        Err(detail) => {
            record.principal = "anonymous".into();
            let peer = req.extensions().get::<Peer>().map(|p| p.0.ip());
            if let Err(wait) = state.limiters.check_anonymous(peer) {
                // Refused without a record: a flood of bad credentials
                // must not become a flood of fsyncs. The limiter's own
                // counter tells that it happened.
                metrics::counter!("custlake_unauthenticated_throttled_total").increment(1);
                let mut resp = ApiError::new(
                    ErrorKind::TooManyRequests,
                    format!("too many requests without a valid credential; retry in {wait} s"),
                )
                .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                return resp;
            }
            let resp = unauthenticated(&detail);
            return finish(&state, record, Note::default(), resp, start).await;
        }
    };
    record.principal = principal.user.clone();
    record.role = Some(principal.role.clone());
    record.via = Some(principal.via.clone());
    if let Err(wait) = state.limiters.check(&principal) {
        let mut resp = ApiError::new(
            ErrorKind::TooManyRequests,
            format!(
                "{} is over the request rate of role {}; retry in {wait} s",
                principal.user, principal.role
            ),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return finish(&state, record, Note::default(), resp, start).await;
    }
    let note = AuditNote::default();
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(note.clone());
    {
        let resp = next.run(req).await;
        let n = note.get();
        if n.streaming && resp.status().is_success() {
            record.outcome = "started".into();
            fill(&mut record, &n, &resp, start);
            if let Err(e) = state.security.audit(record.clone()).await {
                return audit_failed(e);
            }
            let (parts, body) = resp.into_parts();
            let body = axum::body::Body::new(Closing {
                inner: body,
                bytes: 0,
                ended: false,
                closing: None,
                state: Some((state.clone(), record, note, start)),
            });
            return Response::from_parts(parts, body);
        }
        finish(&state, record, n, resp, start).await
    }
}

fn fill(record: &mut AuditRecord, n: &Note, resp: &Response, start: Instant) {
    if let Some(a) = &n.action {
        record.action = a.clone();
    }
    if n.object.is_some() {
        record.object = n.object.clone();
    }
    record.detail = n.sql.clone();
    record.params = n.params.clone();
    record.tables = n.tables.clone();
    record.format = n.format.clone();
    record.rows = n.rows;
    record.status = Some(i64::from(resp.status().as_u16()));
    record.code = resp
        .extensions()
        .get::<ErrorKind>()
        .map(|k| i64::from(k.code()));
    record.duration_ms = Some(start.elapsed().as_millis() as i64);
}

/// Write the request's record, then let the response go.
async fn finish(
    state: &SharedState,
    mut record: AuditRecord,
    n: Note,
    resp: Response,
    start: Instant,
) -> Response {
    record.outcome = outcome_of(resp.status().as_u16()).into();
    fill(&mut record, &n, &resp, start);
    if let Some(len) = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    {
        record.bytes = Some(len);
    }
    match state.security.audit(record).await {
        Ok(()) => resp,
        Err(e) => audit_failed(e),
    }
}

/// No record, no answer: a request whose record cannot be written fails.
fn audit_failed(e: crate::security::SecurityError) -> Response {
    tracing::error!(error = %e, "the audit record could not be written");
    ApiError::new(
        ErrorKind::StorageUnavailable,
        "the audit trail cannot be written; the request was not answered",
    )
    .into_response()
}

type Pending = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A result body that writes its closing record when it ends: after the
/// last bytes and before the end of the response, or when dropped early.
struct Closing {
    inner: axum::body::Body,
    bytes: u64,
    ended: bool,
    closing: Option<Pending>,
    state: Option<(SharedState, AuditRecord, AuditNote, Instant)>,
}

impl Closing {
    fn close(&mut self, outcome: &str) -> Option<Pending> {
        let (state, mut record, note, start) = self.state.take()?;
        let n = note.get();
        record.event_id = format!("{}.end", record.event_id);
        record.action = format!("{}.end", record.action);
        record.at = crate::security::audit::now();
        record.outcome = outcome.into();
        record.rows = n.rows;
        record.bytes = Some(self.bytes as i64);
        record.duration_ms = Some(start.elapsed().as_millis() as i64);
        Some(Box::pin(async move {
            if let Err(e) = state.security.audit(record).await {
                tracing::error!(error = %e, "the closing audit record could not be written");
            }
        }))
    }
}

impl http_body::Body for Closing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(f) = this.closing.as_mut() {
            return match f.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.closing = None;
                    this.ended = true;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(f) = this.close("aborted") {
                    tokio::spawn(f);
                }
                this.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => match this.close("ok") {
                Some(f) => {
                    this.closing = Some(f);
                    self.poll_frame(cx)
                }
                None => {
                    this.ended = true;
                    Poll::Ready(None)
                }
            },
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        // Cut off before its end (the client hung up, a deadline).
        if let Some(f) = self.close("aborted")
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(f);
        }
    }
}

/// The caller of a request: its principal and its audit note.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) note: AuditNote,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        match (
            parts.extensions.get::<Principal>(),
            parts.extensions.get::<AuditNote>(),
        ) {
            (Some(p), Some(n)) => Ok(Self {
                principal: p.clone(),
                note: n.clone(),
            }),
            _ => Err(unauthenticated("a credential is required")),
        }
    }
}

impl Caller {
    /// The caller's role.
    pub(crate) fn role<'a>(
        &self,
        state: &'a SharedState,
    ) -> Result<&'a crate::security::Role, ApiError> {
        state
            .security
            .role(&self.principal)
            .map_err(|e| ApiError::from_error("checking the role", &e))
    }

    /// 403 unless the role may `action` (`steward`, `tokens`, `metrics`, ...).
    pub(crate) fn must(&self, state: &SharedState, action: &str) -> Result<(), ApiError> {
        if self.role(state)?.may(action) {
            Ok(())
        } else {
            Err(forbidden(
                &self.principal,
                &format!("use the {action} routes"),
            ))
        }
    }
}

/// The 403 of a principal that may not do `what`.
pub(crate) fn forbidden(p: &Principal, what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Forbidden,
        format!("role {} may not {what}", p.role),
    )
}

/// The closing `.end` record of a result streamed over a wire protocol
/// (PostgreSQL, Flight SQL): written when the result ends or is dropped,
/// with its rows and how it ended. It holds the statement's query slot
/// until then.
pub(crate) struct EndRecord {
    state: SharedState,
    record: Option<AuditRecord>,
    rows: std::sync::atomic::AtomicI64,
    outcome: Mutex<Option<(String, Option<i64>)>>,
    start: Instant,
    permit: Arc<Mutex<Option<super::Slot>>>,
}

impl EndRecord {
    /// The end of `record` (the statement's `started` record). The query
    /// slot `permit` is given back when the result ends, or at `deadline`
    /// at the latest: a client that stops reading leaves its statement
    /// waiting (it computes nothing meanwhile), not holding a slot.
    pub(crate) fn new(
        state: SharedState,
        record: AuditRecord,
        start: Instant,
        permit: super::Slot,
        deadline: tokio::time::Instant,
    ) -> Self {
        let permit = Arc::new(Mutex::new(Some(permit)));
        let held = Arc::downgrade(&permit);
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            if let Some(p) = held.upgrade()
                && let Ok(mut p) = p.lock()
                && p.take().is_some()
            {
                metrics::counter!("custlake_query_slots_reclaimed_total").increment(1);
            }
        });
        Self {
            state,
            record: Some(record),
            rows: Default::default(),
            outcome: Mutex::new(None),
            start,
            permit,
        }
    }

    pub(crate) fn add_rows(&self, n: usize) {
        self.rows
            .fetch_add(n as i64, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("custlake_query_rows_returned_total").increment(n as u64);
    }

    pub(crate) fn rows(&self) -> i64 {
        self.rows.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How the result ended: `ok`, `error` (with the kind's code) or
    /// `cancelled`; the first word stands. Without one, it was cut off
    /// (`aborted`).
    pub(crate) fn end(&self, outcome: &str, code: Option<i64>) {
        if let Ok(mut o) = self.outcome.lock() {
            o.get_or_insert((outcome.to_string(), code));
        }
    }
}

impl Drop for EndRecord {
    fn drop(&mut self) {
        if let Ok(mut p) = self.permit.lock() {
            p.take();
        }
        let Some(mut record) = self.record.take() else {
            return;
        };
        record.event_id = format!("{}.end", record.event_id);
        record.action = format!("{}.end", record.action);
        record.at = crate::security::audit::now();
        record.rows = Some(self.rows());
        record.duration_ms = Some(self.start.elapsed().as_millis() as i64);
        let (outcome, code) = self
            .outcome
            .lock()
            .ok()
            .and_then(|mut o| o.take())
            .unwrap_or_else(|| ("aborted".into(), None));
        record.outcome = outcome;
        record.code = code;
        let state = self.state.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = state.security.audit(record).await {
                    tracing::error!(error = %e, "the closing audit record could not be written");
                }
            });
        }
    }
}

impl super::AppState {
    /// The principal a credential (a token or a JWT) names, or why it names
    /// none, in words a client may see (a storage failure is logged and
    /// told only as "could not be checked").
    pub(crate) async fn principal_of(&self, credential: &str) -> Result<Principal, String> {
        self.security
            .authenticate(&self.warehouse.lake, credential)
            .await
            .map_err(|e| match e {
                crate::security::SecurityError::Unauthenticated(m) => m,
                other => {
                    tracing::error!(error = %other, "checking a credential");
                    "the credential could not be checked".to_string()
                }
            })
    }
}

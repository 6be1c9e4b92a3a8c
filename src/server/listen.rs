//! Accepting connections: HTTP/1.1 with a deadline for each request's
//! head and a cap on open connections, so that clients that send slowly
//! (slowloris) or open many sockets cannot starve the others.
//!
//! axum's own `serve` sets neither, so connections are served here with
//! hyper directly; the router is the same.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// A request's head (request line and headers) must arrive within
    /// this, and an idle keep-alive connection is closed after it.
    pub(super) header_read_timeout: Duration,
    /// Connections open at once; one more is answered 429 and closed.
    pub(super) max_connections: usize,
    /// A connection that could write nothing for this long is closed (a
    /// client that stopped reading its reply).
    pub(super) write_timeout: Duration,
    /// On shutdown, how long open requests may finish.
    pub(super) grace: Duration,
}

/// The client's address, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// More requests than can ever run at once (each holds one permit).
const RUNNING_MAX: u32 = 1 << 24;

/// What a connection over the cap gets before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 166\r\n\r\n{\"type\":\"https://custlake.dev/problems/1301\",\"title\":\"Too many queries\",\"status\":429,\"code\":1301,\"detail\":\"too many open connections; retry shortly\",\"retryable\":true}";

/// Serve `router` on `listener` until `stop` turns true; then stop
/// accepting, let open requests finish within the grace period, and close
/// what is left.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Each running request holds one of these: at shutdown the server
    // waits (within the grace period) for requests whose client has gone
    // as well as for open connections.
    let running = Arc::new(Semaphore::new(RUNNING_MAX as usize));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (mut stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("custlake_http_connections_refused_total").increment(1);
            connections.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stream.write_all(BUSY).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let running = running.clone();
        // Each request runs on a task of its own, spawned as soon as its
        // head is read. hyper polls a request's future only after it has
        // read on: a client that sends a whole request and closes its side
        // at once (a merge it does not wait for) would otherwise have the
        // connection end, and the request dropped unseen, before it began.
        // A client that hangs up once its reply has begun still cancels
        // its query: the reply's body (the query's stream) is dropped with
        // the connection. Before that (planning, the first batches) the
        // request runs on, within its deadline, as a merge does.
        let service = hyper::service::service_fn(move |req: axum::http::Request<Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(Peer(peer));
            let held = running.clone().try_acquire_owned().ok();
            let router = router.clone();
            let task = tokio::spawn(async move {
                let _held = held;
                router.oneshot(req).await
            });
            async move {
                Ok::<_, std::convert::Infallible>(match task.await {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(never)) => match never {},
                    Err(e) => {
                        tracing::error!(error = %e, "a request's task failed");
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                })
            }
        });
        let stop = stop.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, service, limits, stop).await,
                Some(acceptor) => {
                    // The handshake is part of the head: it gets the same deadline.
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => serve_connection(tls, service, limits, stop).await,
                        Ok(Err(e)) => {
                            metrics::counter!("custlake_tls_handshakes_failed_total").increment(1);
                            tracing::debug!(error = %e, "TLS handshake refused");
                        }
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.grace, async {
        while connections.join_next().await.is_some() {}
        let _ = running.acquire_many(RUNNING_MAX).await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown grace period over: cancelling running queries");
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Serve one connection (plain or TLS) until it ends or the server stops.
async fn serve_connection<S, Svc>(
    io: S,
    service: Svc,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<
            axum::http::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let io = Stalling {
        io,
        timeout: limits.write_timeout,
        stalled: None,
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A connection's stream whose writes fail once none could proceed for
/// `timeout`: a client that stops reading its reply fills the socket's
/// buffers, and would otherwise hold the connection (and its slot under
/// `max_connections`) for as long as it likes.
struct Stalling<S> {
    io: S,
    timeout: Duration,
    /// Since when writes have made no progress.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Stalling<S> {
    /// `poll`'s answer, or a timeout once writes have waited too long.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                metrics::counter!("custlake_http_write_timeouts_total").increment(1);
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client read nothing for server.write_timeout_ms",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Stalling<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Stalling<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// A TLS acceptor from PEM files: TLS 1.3 only, or 1.2 and 1.3 when
/// `min_version` is `1.2`; nothing older is ever offered.
pub(super) fn tls_acceptor(
    cfg: &crate::config::TlsConfig,
    alpn: &[u8],
) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    if cfg.cert_file.is_empty() {
        return Ok(None);
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .map_err(|e| format!("server.tls.cert_file {}: {e}", cfg.cert_file))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("server.tls.cert_file {}: {e}", cfg.cert_file))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls.cert_file {}: no certificate in it",
            cfg.cert_file
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| format!("server.tls.key_file {}: {e}", cfg.key_file))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if cfg.min_version == "1.2" {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("server.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls: the key does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_busy_reply_states_its_length() {
        let text = std::str::from_utf8(super::BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let p: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(p["code"], 1301);
    }
}

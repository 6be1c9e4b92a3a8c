//! The HTTP service. Most tests call the router directly (`oneshot`, no
//! socket); those about connections (a client hanging up, SIGTERM) run a
//! real server on port 0 with a plain HTTP/1.1 client.

mod audit;
mod customers;
mod errors;
mod flight;
mod formats;
mod hostile;
mod lookups;
mod named;
mod openapi;
mod pg;
mod security;
mod streaming;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use crate::common::{ok, sample};

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        b = &b[end + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
    out
}

/// The admin token of each test server, by address.
static TOKENS: std::sync::Mutex<Vec<(SocketAddr, String)>> = std::sync::Mutex::new(Vec::new());

/// The admin token of the server at `addr`.
pub(crate) fn token_of(addr: SocketAddr) -> String {
    TOKENS
        .lock()
        .unwrap()
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, t)| t.clone())
        .unwrap_or_default()
}

/// The header line that authenticates a raw request to `addr` as admin.
pub(crate) fn auth_line(addr: SocketAddr) -> String {
    format!("authorization: Bearer {}\r\n", token_of(addr))
}

/// A token for `role` in the lake at `dir` (`extra`: more `token create` flags).
pub(crate) fn token(dir: &Path, user: &str, role: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", "--user", user, "--role", role];
    args.extend_from_slice(extra);
    ok(dir, &args).lines().last().unwrap().trim().to_string()
}

/// Send a request; it goes as admin unless `headers` names an
/// `authorization` of its own (an empty one: none at all).
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        req.push_str(&auth_line(addr));
    }
    for (k, v) in headers {
        if !v.is_empty() {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        })
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

pub(crate) fn query(addr: SocketAddr, format: &str, body: serde_json::Value) -> Reply {
    request(
        addr,
        "POST",
        &format!("/v1/query?format={format}"),
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// The first column of every batch, as text.
pub(crate) fn first_column(
    batches: impl Iterator<Item = datafusion::arrow::record_batch::RecordBatch>,
) -> Vec<String> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;
    let mut out = Vec::new();
    for b in batches {
        let c = cast(b.column(0), &DataType::Utf8).unwrap();
        let c = c.as_string::<i32>();
        out.extend((0..c.len()).map(|i| c.value(i).to_string()));
    }
    out
}

/// The runtime a test's server or router runs on.
fn runtime() -> tokio::runtime::Runtime {
    custlake::runtime(Some(2)).unwrap()
}

/// A lake with a small sample insurer, and a server over it on a socket.
pub(crate) fn server_with(
    dir: &Path,
    tune: impl FnOnce(&mut custlake::config::Config),
) -> (tokio::runtime::Runtime, SocketAddr) {
    let config = lake_config(dir, tune);
    let admin = token(dir, "test-admin", "admin", &[]);
    let (rt, app) = built(config);
    let addr = app.local_addr();
    TOKENS.lock().unwrap().push((addr, admin));
    rt.spawn(app.run_until_stopped());
    (rt, addr)
}

/// Run one of the tests' Python clients (`tests/it/server/<script>`) with
/// `req` as JSON on its standard input, and return the JSON it prints.
pub(crate) fn python_client(script: &str, req: &serde_json::Value) -> serde_json::Value {
    use std::process::{Command, Stdio};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/server")
        .join(script);
    let mut child = Command::new("python3")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(req.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The server over the lake `config` names, bound to a free HTTP port
/// and not yet running, with the runtime it is to run on.
fn built(
    config: custlake::config::Config,
) -> (tokio::runtime::Runtime, custlake::server::Application) {
    let rt = runtime();
    let app = rt
        .block_on(custlake::server::Application::build(
            custlake::lake::Warehouse::quiet(config).unwrap(),
            "127.0.0.1:0",
        ))
        .unwrap();
    (rt, app)
}

/// A server over the lake `config` names, with the PostgreSQL wire
/// protocol on a free port: the runtime, the HTTP and the PG address.
pub(crate) fn pg_server(
    config: custlake::config::Config,
) -> (tokio::runtime::Runtime, SocketAddr, SocketAddr) {
    let (rt, http, pg, _) = wire_server(config);
    (rt, http, pg)
}

/// A server with the PostgreSQL protocol and Arrow Flight SQL on free
/// ports: the runtime, the HTTP, PG and Flight addresses.
pub(crate) fn wire_server(
    mut config: custlake::config::Config,
) -> (tokio::runtime::Runtime, SocketAddr, SocketAddr, SocketAddr) {
    config.server.pg_bind = "127.0.0.1:0".into();
    config.server.flight_bind = "127.0.0.1:0".into();
    let (rt, app) = built(config);
    let (http, pg, flight) = (
        app.local_addr(),
        app.pg_addr().unwrap(),
        app.flight_addr().unwrap(),
    );
    rt.spawn(app.run_until_stopped());
    (rt, http, pg, flight)
}

pub(crate) fn problem(r: &Reply, status: u16, code: u64) -> serde_json::Value {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let p = r.json();
    assert_eq!(p["code"], code, "{p}");
    assert_eq!(p["status"], status);
    let detail = p["detail"].as_str().unwrap();
    assert!(
        !detail.contains("/tmp") && !detail.contains("file://"),
        "{detail}"
    );
    p
}

/// A lake with a small sample insurer, and the service over it, called
/// without a socket.
pub(crate) struct Api {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    /// The admin token every request carries unless it names its own
    /// `authorization`.
    pub(crate) admin: String,
}

impl Api {
    pub(crate) fn new(dir: &Path) -> Self {
        Self::with(dir, |_| {})
    }

    pub(crate) fn with(dir: &Path, tune: impl FnOnce(&mut custlake::config::Config)) -> Self {
        Self::over(dir, lake_config(dir, tune))
    }

    /// The service over the lake `config` names (in `dir`, as it is).
    pub(crate) fn over(dir: &Path, config: custlake::config::Config) -> Self {
        let admin = token(dir, "test-admin", "admin", &[]);
        let rt = runtime();
        let router = rt
            .block_on(async {
                custlake::server::app(custlake::lake::Warehouse::quiet(config).unwrap()).await
            })
            .unwrap();
        Self { rt, router, admin }
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        use tower::ServiceExt;
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            req = req.header("authorization", format!("Bearer {}", self.admin));
        }
        for (k, v) in headers {
            if !v.is_empty() {
                req = req.header(*k, *v);
            }
        }
        let req = req.body(axum::body::Body::from(body.to_vec())).unwrap();
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            Reply {
                status,
                headers,
                body,
            }
        })
    }

    pub(crate) fn query(&self, format: &str, body: serde_json::Value) -> Reply {
        self.request(
            "POST",
            &format!("/v1/query?format={format}"),
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }
}

/// The configuration of a lake in `dir` holding a small sample insurer.
fn lake_config(
    dir: &Path,
    tune: impl FnOnce(&mut custlake::config::Config),
) -> custlake::config::Config {
    let s = sample(dir, 300, 9);
    ok(dir, &["ingest", "--from", s.to_str().unwrap()]);
    config_for(dir, tune)
}

/// The tests' configuration of the lake in `dir`, as it is.
pub(crate) fn config_for(
    dir: &Path,
    tune: impl FnOnce(&mut custlake::config::Config),
) -> custlake::config::Config {
    let mut config = custlake::config::Config::embedded();
    config.lake = dir.join("data/lake").to_string_lossy().to_string();
    config.server.body_limit_bytes = 4096;
    // Deep statements are planned first by this binary (the tests' own
    // executable is not custlake).
    config.query.sandbox_bin = crate::common::bin().to_string_lossy().to_string();
    // Tests send bursts of requests as admin: no rate limit in the way.
    if let Some(admin) = config.roles.get_mut("admin") {
        admin.rate_per_second = Some(1_000_000);
        admin.burst = Some(1_000_000);
    }
    tune(&mut config);
    config
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (openssl), and
/// its key: the server's `[server.tls]` files in the TLS tests.
pub(crate) fn self_signed(d: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let made = std::process::Command::new("openssl")
        .current_dir(d)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (d.join("cert.pem"), d.join("key.pem"))
}

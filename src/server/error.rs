//! One boundary type for clients: every failure becomes an RFC 9457
//! `application/problem+json` body with a stable numeric `code`. Details
//! never carry file paths, object-store URLs or internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A client-facing error.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub title: &'static str,
    pub detail: String,
    pub retry_after: Option<u64>,
}

/// The stable error codes (listed in the README).
pub mod codes {
    pub const MALFORMED_BODY: u32 = 1001;
    pub const BODY_TOO_LARGE: u32 = 1002;
    pub const UNSUPPORTED_FORMAT: u32 = 1003;
    pub const SQL_ERROR: u32 = 1101;
    pub const NOT_READ_ONLY: u32 = 1102;
    pub const BAD_PARAMETER: u32 = 1104;
    pub const NOT_FOUND: u32 = 1201;
    pub const TOO_MANY_QUERIES: u32 = 1301;
    pub const RESOURCES_EXHAUSTED: u32 = 1302;
    pub const TIMEOUT: u32 = 1401;
    pub const LAKE_UNAVAILABLE: u32 = 1402;
    pub const INTERNAL: u32 = 1501;
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: u32,
    detail: &'a str,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: u32,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail: redact(&detail.into()),
            retry_after: None,
        }
    }

    pub fn bad_request(code: u32, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, title, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "Not found", detail)
    }

    pub fn internal(what: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "Internal error",
            format!("{what} failed; the server log has the details"),
        )
    }

    /// Map a DataFusion error: planning and SQL problems are the caller's
    /// (400), resource exhaustion is 503, anything else is internal.
    pub fn from_datafusion(e: &datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match e.find_root() {
            E::SQL(..) | E::Plan(..) | E::SchemaError(..) | E::NotImplemented(..) => {
                Self::bad_request(codes::SQL_ERROR, "Invalid SQL", e.find_root().to_string())
            }
            E::ResourcesExhausted(..) => {
                let mut err = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::RESOURCES_EXHAUSTED,
                    "Not enough memory for this query now",
                    "the query needs more memory than is free; retry later or narrow the query",
                );
                err.retry_after = Some(5);
                err
            }
            E::Execution(m) if m.contains("Cast error") || m.contains("cast") => {
                Self::bad_request(codes::SQL_ERROR, "Invalid SQL", m.clone())
            }
            E::ArrowError(a, _)
                if matches!(**a, datafusion::arrow::error::ArrowError::CastError(_)) =>
            {
                Self::bad_request(codes::SQL_ERROR, "Invalid SQL", a.to_string())
            }
            _ => Self::internal("query execution", e),
        }
    }
}

/// Replace anything that looks like a path or a URL.
fn redact(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let t = w.trim_matches(|c: char| matches!(c, '\'' | '"' | '(' | ')' | ',' | ':'));
            if t.contains("://") || (t.starts_with('/') && t.len() > 1 && t[1..].contains('/')) {
                w.replace(t, "<redacted>")
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("custlake_errors_total", "code" => self.code.to_string()).increment(1);
        let body = Problem {
            kind: format!("https://custlake.dev/problems/{}", self.code),
            title: self.title,
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
        };
        let mut resp = (self.status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls_are_redacted() {
        let r =
            redact("Object at location /tmp/lake/hot/policy/part-1.parquet not found: file:///x/y");
        assert!(!r.contains("/tmp") && !r.contains("file://"), "{r}");
        assert_eq!(
            redact("table 'policy' not found"),
            "table 'policy' not found"
        );
    }
}

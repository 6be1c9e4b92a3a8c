//! One boundary type for clients: every failure becomes an RFC 9457
//! `application/problem+json` body with the stable numeric code of its
//! [`ErrorKind`]. The one mapping from kinds to HTTP statuses is
//! [`status_of`]. Details never carry file paths, object-store URLs or
//! internals: for the lake's and the warehouse's own failures the client
//! gets the kind's title and the server log gets the whole error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Classify, ErrorKind};

/// A client-facing error.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub detail: String,
}

/// The HTTP status of each kind: the one place kinds become statuses.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidParameter
        | ErrorKind::MalformedBody
        | ErrorKind::UnsupportedFormat
        | ErrorKind::InvalidSql
        | ErrorKind::NotReadOnly
        | ErrorKind::TooComplex => StatusCode::BAD_REQUEST,
        ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        ErrorKind::InvalidData => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict | ErrorKind::Refused => StatusCode::CONFLICT,
        ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::ResourcesExhausted | ErrorKind::Busy | ErrorKind::StorageUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::StorageDamaged | ErrorKind::Config | ErrorKind::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The SQLSTATE of each kind, for the PostgreSQL wire protocol: the one
/// place kinds become SQLSTATEs (the stable numeric code travels in the
/// error's detail as well).
pub fn sqlstate_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSql => "42601",
        ErrorKind::NotReadOnly => "25006",
        ErrorKind::TooComplex => "54001",
        ErrorKind::InvalidParameter
        | ErrorKind::MalformedBody
        | ErrorKind::UnsupportedFormat
        | ErrorKind::NotAcceptable => "22023",
        ErrorKind::BodyTooLarge => "54000",
        ErrorKind::InvalidData => "22000",
        ErrorKind::NotFound => "42P01",
        ErrorKind::Conflict => "40001",
        ErrorKind::Refused => "55000",
        ErrorKind::TooManyRequests => "53300",
        ErrorKind::ResourcesExhausted => "53200",
        ErrorKind::Busy => "55P03",
        ErrorKind::Timeout => "57014",
        ErrorKind::StorageUnavailable => "58030",
        ErrorKind::StorageDamaged => "XX001",
        ErrorKind::Unauthenticated => "28000",
        ErrorKind::Forbidden => "42501",
        ErrorKind::Config => "F0000",
        ErrorKind::Internal => "XX000",
    }
}

/// Seconds a client should wait before trying again, where waiting helps.
fn retry_after(kind: ErrorKind) -> Option<u64> {
    match kind {
        ErrorKind::TooManyRequests | ErrorKind::Conflict => Some(1),
        ErrorKind::ResourcesExhausted | ErrorKind::Busy | ErrorKind::StorageUnavailable => Some(5),
        _ => None,
    }
}

/// The body: RFC 9457 fields plus the stable code.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// `https://custlake.dev/problems/<code>`.
    #[serde(rename = "type")]
    kind: String,
    /// A short, fixed title of the code.
    title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// The stable error code (listed in the README).
    #[schema(minimum = 1000, maximum = 9999)]
    code: u32,
    /// What went wrong with this request.
    detail: String,
}

impl ApiError {
    /// An error of `kind` with a detail the client may see.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: redact(&detail.into()),
        }
    }

    /// Any module's error: its kind decides the status; a request's own
    /// problem is described to the client, anything else is logged in full
    /// and described by what was being done.
    pub fn from_error<E: Classify + std::error::Error + ?Sized>(what: &str, e: &E) -> Self {
        let kind = e.kind();
        if kind.client_facing() && from_delta(e) {
            // Delta Lake's own words name its internals (transactions,
            // protocol, log versions): the client gets what it means.
            tracing::info!(error = %e, "{what}");
            return Self::new(kind, delta_detail(kind, what));
        }
        if kind == ErrorKind::ResourcesExhausted {
            // The engine's own words name operators and byte counts.
            tracing::warn!(error = %e, "{what}");
            return Self::new(
                kind,
                "the query needs more memory than is free; retry later or narrow the query",
            );
        }
        if kind.client_facing() {
            // DataFusion prefixes what a function raised with its own words.
            Self::new(kind, e.to_string().replace("External error: ", ""))
        } else {
            tracing::error!(error = %e, kind = ?kind, "{what}");
            Self::new(
                kind,
                format!(
                    "{what} failed: {}; the server log has the details",
                    kind.title().to_lowercase()
                ),
            )
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, detail)
    }

    pub fn bad_parameter(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameter, detail)
    }

    pub fn internal(what: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{what}");
        Self::new(
            ErrorKind::Internal,
            format!("{what} failed; the server log has the details"),
        )
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.kind)
    }
}

/// Whether Delta Lake raised `e` (anywhere in its chain of sources).
fn from_delta<E: std::error::Error + ?Sized>(e: &E) -> bool {
    let mut next = e.source();
    while let Some(s) = next {
        if s.downcast_ref::<deltalake::DeltaTableError>().is_some()
            || s.downcast_ref::<Box<deltalake::DeltaTableError>>()
                .is_some()
        {
            return true;
        }
        next = s.source();
    }
    false
}

/// What a Delta Lake failure of `kind` means to a client.
fn delta_detail(kind: ErrorKind, what: &str) -> String {
    match kind {
        ErrorKind::Conflict => format!(
            "{what}: another writer changed the same table at the same time; look again, or run it again"
        ),
        ErrorKind::NotFound => format!("{what}: the table has no such version"),
        k => format!("{what} failed: {}", k.title().to_lowercase()),
    }
}

/// Replace anything that looks like a path or a URL (absolute or relative,
/// also after `=` or inside quotes), and the values a failed cast quotes
/// (they may be a customer's data).
fn redact(s: &str) -> String {
    let s = mask_cast_values(s);
    let mut out = String::with_capacity(s.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if looks_like_path(token) {
            out.push_str("<redacted>");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in s.chars() {
        if c.is_whitespace() || matches!(c, '=' | '\'' | '"' | '(' | ')' | ',' | '[' | ']' | '`') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// A URL, an absolute path, or a relative path of two or more parts or with
/// a file extension (`data/lake/hot`, `hot/policy/part-0.parquet`).
fn looks_like_path(t: &str) -> bool {
    let t = t.trim_end_matches(['.', ':', ';']);
    if t.contains("://") {
        return true;
    }
    if !t.contains('/') || t.len() < 3 {
        return false;
    }
    let parts: Vec<&str> = t.split('/').filter(|p| !p.is_empty()).collect();
    let has_ext = parts
        .last()
        .and_then(|p| p.rsplit_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && (1..=8).contains(&b.len())
                && b.chars().all(|c| c.is_ascii_alphanumeric())
        });
    t.starts_with('/') || t.starts_with("./") || t.starts_with("../") || parts.len() >= 3 || has_ext
}

/// `Cannot cast string '张三' to …`: the quoted value is a datum.
fn mask_cast_values(s: &str) -> String {
    let lower = s.to_lowercase();
    // Casts, parses and conversions quote the value they met, which may
    // belong to a row or a column the caller may not see.
    if !["cast", "pars", "convert"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut inside = false;
    for c in s.chars() {
        if c == '\'' {
            if inside {
                out.push_str("<value>");
            }
            inside = !inside;
            out.push(c);
        } else if !inside {
            out.push(c);
        }
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.kind.code();
        let status = self.status();
        metrics::counter!("custlake_errors_total", "code" => code.to_string()).increment(1);
        let body = Problem {
            kind: format!("https://custlake.dev/problems/{code}"),
            title: self.kind.title().to_string(),
            status: status.as_u16(),
            code,
            detail: self.detail,
        };
        let mut resp = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = retry_after(self.kind) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // For the audit trail: the code of the failure.
        resp.extensions_mut().insert(self.kind);
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
        // Relative paths, paths after `=`, inside quotes.
        for leaky in [
            "Generic error: data/lake/hot/policy/_delta_log is damaged",
            "reading hot/policy/part-00001.parquet failed",
            "location=lake/hot/customer: no such table",
            "path 'relative/part-0.parquet' (os error 2)",
            "table at ./lake/x",
        ] {
            let r = redact(leaky);
            assert!(
                !r.contains("lake/") && !r.contains(".parquet") && !r.contains("relative/"),
                "{leaky} -> {r}"
            );
        }
        // A cast's quoted value is data; the rest stays.
        let r = redact("Cast error: Cannot cast string '张三' to value of Int32 type");
        assert_eq!(
            r,
            "Cast error: Cannot cast string '<value>' to value of Int32 type"
        );
        // Division and dates are not paths.
        assert_eq!(redact("a / b by 2"), "a / b by 2");
    }

    #[test]
    fn delta_lake_internals_are_not_shown() {
        let e = crate::lake::LakeError::Delta {
            table: "merge_event".into(),
            source: Box::new(deltalake::DeltaTableError::VersionAlreadyExists(7)),
        };
        let a = ApiError::from_error("the merge", &e);
        assert_eq!(a.kind, ErrorKind::Conflict);
        assert!(a.detail.contains("another writer"), "{}", a.detail);
        assert!(!a.detail.contains('7') && !a.detail.to_lowercase().contains("delta"));
    }

    #[test]
    fn storage_kinds_are_server_errors_and_sql_kinds_client_errors() {
        for k in ErrorKind::ALL {
            let s = status_of(k);
            match k {
                ErrorKind::StorageUnavailable | ErrorKind::StorageDamaged | ErrorKind::Internal => {
                    assert!(s.is_server_error(), "{k:?}")
                }
                ErrorKind::InvalidSql | ErrorKind::NotReadOnly | ErrorKind::InvalidParameter => {
                    assert_eq!(s, StatusCode::BAD_REQUEST)
                }
                _ => {}
            }
        }
    }
}

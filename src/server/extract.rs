//! Extractors whose rejections are problem+json like every other error:
//! a query string, path or body that does not parse gets the stable code
//! of its kind, never axum's plain-text message.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::SharedState;
use super::error::ApiError;
use crate::error::ErrorKind;

/// The query string, as `T`.
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|r| ApiError::new(ErrorKind::InvalidParameter, r.body_text()))
    }
}

/// The path's parameters, as `T`.
pub(crate) struct PathParams<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // A path that does not name a resource of this route: not found.
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|r| ApiError::new(ErrorKind::NotFound, r.body_text()))
    }
}

/// A request body's JSON shape, named in the error when it does not parse.
pub(crate) trait Shape: DeserializeOwned {
    /// The shape as the client should send it.
    const SHAPE: &'static str;
    /// The value of an empty body, where one is allowed.
    fn empty() -> Option<Self> {
        None
    }
}

/// A JSON body of shape `T`, within `server.body_limit_bytes`.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: Shape> FromRequest<SharedState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, ApiError> {
        let wait = state.warehouse.config.server.body_read_timeout_ms;
        let read = tokio::time::timeout(
            std::time::Duration::from_millis(wait.max(1)),
            Bytes::from_request(req, state),
        );
        let bytes = read.await.map_err(|_| {
            ApiError::new(
                ErrorKind::Timeout,
                format!(
                    "the request body did not arrive within {wait} ms (server.body_read_timeout_ms)"
                ),
            )
        })?;
        let bytes = bytes.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorKind::BodyTooLarge,
                    format!(
                        "the body may have at most {} bytes",
                        state.warehouse.config.server.body_limit_bytes
                    ),
                )
            } else {
                ApiError::new(ErrorKind::MalformedBody, r.body_text())
            }
        })?;
        if bytes.is_empty()
            && let Some(v) = T::empty()
        {
            return Ok(Self(v));
        }
        let malformed = |e: &dyn std::fmt::Display| {
            ApiError::new(
                ErrorKind::MalformedBody,
                format!("expected {}: {e}", T::SHAPE),
            )
        };
        // An object, and only an object: serde would also take a struct
        // from an array of its fields.
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| malformed(&e))?;
        if !value.is_object() {
            return Err(malformed(&"the body is not a JSON object"));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|e| malformed(&e))
    }
}

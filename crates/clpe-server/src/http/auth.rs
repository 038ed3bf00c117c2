//! Writes need `Authorization: Bearer <token>`: 401 without one, 403 with a wrong one.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::daemon::Daemon;

/// Proof that the request carries the operator token; take it as a handler argument
/// before the body, so an unauthorised request is refused before its body is read.
#[derive(Debug)]
pub struct Authorized;

impl FromRequestParts<Arc<Daemon>> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        daemon: &Arc<Daemon>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this request needs `Authorization: Bearer <token>`",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        if daemon.token().verify(presented) {
            Ok(Authorized)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the token is not the operator token of this daemon",
            ))
        }
    }
}

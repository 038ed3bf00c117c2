//! Error answers of the HTTP API (SPEC §4): a status and the JSON body
//! `{error, document, field, message}`, the same shape for every failure.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clpe_core::{ApplyError, DocError, EventError};
use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A short code: `malformed`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `invalid`, `too_large`, `timeout`, `method_not_allowed`, `internal`, `unavailable`.
    pub error: String,
    /// The document at fault (`AccessPolicy default/x`), or empty.
    pub document: String,
    /// The field path at fault (`spec.from[0]`), or empty.
    pub field: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

/// The code of the body for a status.
fn code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "malformed",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        413 => "too_large",
        415 => "unsupported_media_type",
        422 => "invalid",
        503 => "unavailable",
        _ => "internal",
    }
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError::at(status, "", "", message)
    }

    pub fn at(
        status: StatusCode,
        document: &str,
        field: &str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: code(status).to_owned(),
                document: document.to_owned(),
                field: field.to_owned(),
                message: message.into(),
            },
        }
    }

    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(document: &str, message: impl Into<String>) -> ApiError {
        ApiError::at(StatusCode::NOT_FOUND, document, "", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A refused apply or delete. The body names the first problem; the message lists
    /// every other one after it, so none is lost.
    pub fn from_apply(e: &ApplyError) -> ApiError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match (e, e.first()) {
            (ApplyError::Invalid(all), Some(first)) if all.len() > 1 => {
                let rest: Vec<String> = all.iter().skip(1).map(DocError::to_string).collect();
                let message = format!(
                    "{} (and {} more: {})",
                    first.message,
                    rest.len(),
                    rest.join("; ")
                );
                ApiError::at(status, &first.document, &first.field, message)
            }
            (_, Some(first)) => {
                ApiError::at(status, &first.document, &first.field, first.message.clone())
            }
            (ApplyError::Malformed(m), None) => ApiError::new(status, m.clone()),
            (ApplyError::Store(m), None) => {
                ApiError::new(status, format!("the store refused the change: {m}"))
            }
            (_, None) => ApiError::new(status, e.to_string()),
        }
    }

    /// An event the engine does not accept (well-formed JSON, but it breaks a rule).
    pub fn from_event(e: &EventError) -> ApiError {
        ApiError::at(
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
            &e.field,
            e.message.clone(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A body the extractor refused (too large, not readable) as an API error.
impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> ApiError {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than this endpoint accepts".to_owned()
        } else {
            r.body_text()
        };
        ApiError::new(status, message)
    }
}

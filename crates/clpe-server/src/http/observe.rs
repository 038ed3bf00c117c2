//! What the daemon shows of itself: the decision log, Prometheus metrics, liveness
//! and readiness.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use clpe_core::monitor::LogEntry;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::off_workers;
use crate::daemon::Daemon;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// The most recent entries to return (default 100).
    limit: Option<usize>,
}

/// `GET /v1/decisions`: the most recent decisions, oldest first.
pub async fn decisions(
    State(daemon): State<Arc<Daemon>>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<Vec<LogEntry>>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::malformed(format!("query: {}", e.body_text())))?;
    let limit = query.limit.unwrap_or(100);
    let log = off_workers(move || Ok(daemon.engine().monitor().decisions(limit))).await?;
    Ok(Json(log))
}

/// `GET /metrics`: the monitor's Prometheus text.
pub async fn metrics(State(daemon): State<Arc<Daemon>>) -> Result<Response, ApiError> {
    let text = off_workers(move || Ok(daemon.engine().metrics())).await?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the engine was rebuilt from the store and the daemon is not draining.
pub async fn readyz(State(daemon): State<Arc<Daemon>>) -> Response {
    let revision = daemon.engine().snapshot().revision;
    if daemon.is_ready() {
        Json(json!({"status": "ready", "revision": revision})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "revision": revision})),
        )
            .into_response()
    }
}

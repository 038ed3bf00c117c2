//! `POST /v1/decide`: a JSON event in, a JSON response out. Decided inline on the
//! executor: a decision reads the current snapshot and never waits for an apply.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use clpe_core::{DecideOptions, Event, Response};
use serde::Deserialize;

use super::error::ApiError;
use crate::daemon::Daemon;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideQuery {
    #[serde(default)]
    explain: bool,
    #[serde(default, rename = "dryRun")]
    dry_run: bool,
}

pub async fn decide(
    State(daemon): State<Arc<Daemon>>,
    query: Result<Query<DecideQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Response>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::malformed(format!("query: {}", e.body_text())))?;
    let body = body?;
    // Shape errors (not JSON, unknown or missing fields) are malformed; rule errors
    // (an empty name, ingress without `src_peer`) are invalid and name their field.
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| ApiError::malformed(format!("not an event: {e}")))?;
    let opts = DecideOptions {
        explain: query.explain,
        dry_run: query.dry_run,
    };
    let response = daemon
        .decide(&event, opts)
        .map_err(|e| ApiError::from_event(&e))?;
    Ok(Json(response))
}

//! The HTTP surface (SPEC §4): the decision API and the operator API on one router.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/decide?explain=true&dryRun=true` | decide one JSON event |
//! | `POST /v1/apply` | apply one batch (YAML or JSON), all or nothing; token |
//! | `POST /v1/delete` | delete a JSON list of `{kind, name, namespace}`, all or nothing; token |
//! | `DELETE /v1/{kind}/{name}`, `DELETE /v1/{kind}/{namespace}/{name}` | delete one; token |
//! | `GET /v1/{kind}?namespace=NS` | list a kind (a JSON array) |
//! | `GET /v1/{kind}/{name}`, `GET /v1/{kind}/{namespace}/{name}` | one document |
//! | `GET /v1/decisions?limit=N` | the decision log, oldest first |
//! | `GET /metrics`, `GET /healthz`, `GET /readyz` | Prometheus text, liveness, readiness |
//!
//! `{kind}` is spelled as documents spell it, without regard to case; for a namespaced
//! kind `/v1/{kind}/{name}` means the namespace `default`. Every error answer is a status
//! and the JSON body `{error, document, field, message}`.

mod auth;
mod decide;
pub mod error;
mod observe;
pub mod operator;
mod read;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::daemon::Daemon;
use error::ApiError;

/// The largest apply body: big policy sets are applied in one batch.
pub const MAX_APPLY_BYTES: usize = 64 << 20;
/// The largest decide body: an event is small.
pub const MAX_DECIDE_BYTES: usize = 1 << 20;
/// The largest delete-batch body.
pub const MAX_DELETE_BYTES: usize = 4 << 20;

/// The router of the HTTP API; every request is bounded by `timeout`.
pub fn router(daemon: Arc<Daemon>, timeout: Duration) -> Router {
    Router::new()
        .route(
            "/v1/decide",
            post(decide::decide).layer(DefaultBodyLimit::max(MAX_DECIDE_BYTES)),
        )
        .route(
            "/v1/apply",
            post(operator::apply).layer(DefaultBodyLimit::max(MAX_APPLY_BYTES)),
        )
        .route(
            "/v1/delete",
            post(operator::delete_batch).layer(DefaultBodyLimit::max(MAX_DELETE_BYTES)),
        )
        .route("/v1/decisions", get(observe::decisions))
        .route("/v1/{kind}", get(read::list))
        .route(
            "/v1/{kind}/{name}",
            get(read::get_cluster).delete(operator::delete_cluster),
        )
        .route(
            "/v1/{kind}/{namespace}/{name}",
            get(read::get_namespaced).delete(operator::delete_namespaced),
        )
        .route("/metrics", get(observe::metrics))
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn(move |req, next| {
            bounded(timeout, req, next)
        }))
        .with_state(daemon)
}

/// Runs `f` on the blocking pool. The runtime has a worker per core, and they serve the
/// decisions: work that grows with the engine (a write, a listing, a metrics render, which
/// takes 13 ms for chain-10000's 50,000 series) would hold one of them for as long, and
/// the decisions queued behind it would wait.
pub(crate) async fn off_workers<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the task failed: {e}")))?
}

async fn no_route(req: Request) -> ApiError {
    ApiError::not_found(
        "",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

async fn wrong_method(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Bounds a request (reading its body included) in time, and logs it.
async fn bounded(timeout: Duration, req: Request, next: Next) -> Response {
    use axum::response::IntoResponse as _;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {} s", timeout.as_secs()),
        )
        .into_response(),
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{ApiError, off_workers};

    /// The work is done on another thread than the runtime's (here its only one), and
    /// its result or error comes back as it was.
    #[tokio::test(flavor = "current_thread")]
    async fn work_off_the_workers_runs_on_another_thread() {
        let worker = std::thread::current().id();
        let ran_on = off_workers(|| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(ran_on, worker);
        let err = off_workers(|| Err::<(), _>(ApiError::malformed("bad")))
            .await
            .unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
    }
}

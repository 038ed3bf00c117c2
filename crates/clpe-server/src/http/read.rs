//! The operator's reads: `GET /v1/{kind}` (a JSON list, `?namespace=` to narrow it) and
//! `GET /v1/{kind}/[{namespace}/]{name}` (one document), as the canonical JSON the store
//! holds. Reads take the current snapshot: no lock, no wait for writers.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use clpe_core::snapshot::list as list_kind;
use serde::Deserialize;

use super::error::ApiError;
use super::off_workers;
use super::operator::{parse_kind, path_key};
use crate::daemon::Daemon;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    namespace: Option<String>,
}

fn json(text: String) -> Response {
    ([(CONTENT_TYPE, "application/json")], text).into_response()
}

pub async fn list(
    State(daemon): State<Arc<Daemon>>,
    Path(kind): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::malformed(format!("query: {}", e.body_text())))?;
    let kind = parse_kind(&kind)?;
    let snapshot = daemon.engine().snapshot();
    // A listing grows with the policies (100,000 of them are megabytes of JSON).
    let out = off_workers(move || {
        let mut out = String::from("[");
        let docs = list_kind(&snapshot.docs, kind).filter(|d| {
            query
                .namespace
                .as_deref()
                .is_none_or(|ns| !kind.is_namespaced() || *d.key.namespace == *ns)
        });
        for (i, doc) in docs.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&doc.raw.text());
        }
        out.push(']');
        Ok(out)
    })
    .await?;
    Ok(json(out))
}

fn get_key(daemon: &Daemon, key: clpe_core::DocKey) -> Result<Response, ApiError> {
    let snapshot = daemon.engine().snapshot();
    match snapshot.docs.get(&key) {
        Some(doc) => Ok(json(doc.raw.text())),
        None => Err(ApiError::not_found(&key.to_string(), "no such document")),
    }
}

pub async fn get_cluster(
    State(daemon): State<Arc<Daemon>>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get_key(&daemon, path_key(&kind, None, &name)?)
}

pub async fn get_namespaced(
    State(daemon): State<Arc<Daemon>>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    get_key(&daemon, path_key(&kind, Some(&namespace), &name)?)
}

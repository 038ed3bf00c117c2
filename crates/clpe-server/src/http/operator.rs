//! The operator's writes: `POST /v1/apply` (one batch, all or nothing), `DELETE
//! /v1/{kind}/[{namespace}/]{name}`, and `POST /v1/delete` (several documents, all or
//! nothing). Parsing, validation and the durable commit run on the blocking pool, so the
//! executor keeps deciding while a batch is written.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use clpe_core::{Applied, DocKey, Kind};
use serde::{Deserialize, Serialize};

use super::auth::Authorized;
use super::error::ApiError;
use super::off_workers;
use crate::daemon::Daemon;

/// What a write did, document by document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    pub revision: u64,
    pub results: Vec<DocResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocResult {
    /// `Kind namespace/name` or `Kind name`.
    pub document: String,
    /// `created`, `configured`, `unchanged` or `deleted`.
    pub result: String,
}

impl From<Applied> for WriteResult {
    fn from(a: Applied) -> WriteResult {
        let results = a
            .results
            .into_iter()
            .map(|(document, r)| DocResult {
                document,
                result: r.to_owned(),
            })
            .collect();
        WriteResult {
            revision: a.revision,
            results,
        }
    }
}

/// A document named in a delete batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocRef {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

pub async fn apply(
    State(daemon): State<Arc<Daemon>>,
    _auth: Authorized,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WriteResult>, ApiError> {
    let body = body?;
    off_workers(move || {
        let text = std::str::from_utf8(&body)
            .map_err(|e| ApiError::malformed(format!("the body is not UTF-8: {e}")))?;
        let docs = clpe_core::parse_documents(text).map_err(|e| ApiError::from_apply(&e))?;
        if docs.is_empty() {
            return Err(ApiError::malformed("the body holds no documents"));
        }
        let applied = daemon.apply(docs).map_err(|e| ApiError::from_apply(&e))?;
        Ok(Json(applied.into()))
    })
    .await
}

/// The key a path names; a namespace given for a cluster-wide kind is an error.
pub fn path_key(kind: &str, namespace: Option<&str>, name: &str) -> Result<DocKey, ApiError> {
    let kind = parse_kind(kind)?;
    if namespace.is_some() && !kind.is_namespaced() {
        return Err(ApiError::not_found(
            &format!("{kind} {name}"),
            format!("a {kind} is cluster-wide and has no namespace: use /v1/{kind}/{name}"),
        ));
    }
    Ok(DocKey::new(kind, namespace, name))
}

pub fn parse_kind(text: &str) -> Result<Kind, ApiError> {
    Kind::parse(text).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::not_found(
            "",
            format!("unknown kind `{text}` (known: {})", known.join(", ")),
        )
    })
}

async fn delete_keys(
    daemon: Arc<Daemon>,
    keys: Vec<DocKey>,
) -> Result<Json<WriteResult>, ApiError> {
    off_workers(move || {
        let applied = daemon.delete(&keys).map_err(|e| ApiError::from_apply(&e))?;
        Ok(Json(applied.into()))
    })
    .await
}

pub async fn delete_cluster(
    State(daemon): State<Arc<Daemon>>,
    _auth: Authorized,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<WriteResult>, ApiError> {
    let key = path_key(&kind, None, &name)?;
    delete_keys(daemon, vec![key]).await
}

pub async fn delete_namespaced(
    State(daemon): State<Arc<Daemon>>,
    _auth: Authorized,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Result<Json<WriteResult>, ApiError> {
    let key = path_key(&kind, Some(&namespace), &name)?;
    delete_keys(daemon, vec![key]).await
}

pub async fn delete_batch(
    State(daemon): State<Arc<Daemon>>,
    _auth: Authorized,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WriteResult>, ApiError> {
    let body = body?;
    let refs: Vec<DocRef> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::malformed(format!(
            "expected a JSON list of {{kind, name, namespace}}: {e}"
        ))
    })?;
    if refs.is_empty() {
        return Err(ApiError::malformed("the body names no documents"));
    }
    let keys = refs
        .iter()
        .map(|r| {
            let kind = parse_kind(&r.kind)?;
            if r.namespace.is_some() && !kind.is_namespaced() {
                return Err(ApiError::at(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("{kind} {}", r.name),
                    "namespace",
                    format!("a {kind} is cluster-wide and has no namespace"),
                ));
            }
            Ok(DocKey::new(kind, r.namespace.as_deref(), &r.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    delete_keys(daemon, keys).await
}

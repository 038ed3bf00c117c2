//! Documents: what operators program, Kubernetes style (SPEC §3).
//!
//! A document is parsed from YAML 1.2 or JSON into a generic tree, checked at the
//! envelope (`apiVersion`, `kind`, `metadata`), then its `spec` is converted into the
//! kind's domain type, which is where every validation error gets its field path.

mod parse;
mod spec;
mod text;

pub use parse::{
    MAX_INPUT_BYTES, parse_documents, parse_documents_with, parse_value, parse_values, yaml_options,
};
pub use spec::*;
pub use text::Canonical;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use smol_str::SmolStr;

use crate::error::DocError;

pub const API_VERSION: &str = "clusterlink.net/v1alpha1";

/// Every kind of document the engine knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    AccessPolicy,
    PrivilegedAccessPolicy,
    WorkloadSet,
    Peer,
    Export,
    Import,
    LoadBalancingPolicy,
    Subscription,
    ConnectionLimitPolicy,
    RateLimitPolicy,
    WasmAgent,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::AccessPolicy,
        Kind::PrivilegedAccessPolicy,
        Kind::WorkloadSet,
        Kind::Peer,
        Kind::Export,
        Kind::Import,
        Kind::LoadBalancingPolicy,
        Kind::Subscription,
        Kind::ConnectionLimitPolicy,
        Kind::RateLimitPolicy,
        Kind::WasmAgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AccessPolicy => "AccessPolicy",
            Kind::PrivilegedAccessPolicy => "PrivilegedAccessPolicy",
            Kind::WorkloadSet => "WorkloadSet",
            Kind::Peer => "Peer",
            Kind::Export => "Export",
            Kind::Import => "Import",
            Kind::LoadBalancingPolicy => "LoadBalancingPolicy",
            Kind::Subscription => "Subscription",
            Kind::ConnectionLimitPolicy => "ConnectionLimitPolicy",
            Kind::RateLimitPolicy => "RateLimitPolicy",
            Kind::WasmAgent => "WasmAgent",
        }
    }

    /// Looks a kind up as documents spell it, without regard to case (the API's paths).
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(text))
    }

    /// Namespaced kinds live in a namespace (default `default`); the others are cluster-wide.
    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            Kind::AccessPolicy | Kind::Export | Kind::Import | Kind::LoadBalancingPolicy
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies a document: its kind, namespace (empty for cluster-wide kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DocKey {
    pub kind: Kind,
    /// Inline when short (most names): a key costs no allocation.
    pub namespace: SmolStr,
    pub name: SmolStr,
}

impl DocKey {
    pub fn new(kind: Kind, namespace: Option<&str>, name: &str) -> DocKey {
        let namespace = if kind.is_namespaced() {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        DocKey {
            kind,
            namespace: SmolStr::new(namespace),
            name: SmolStr::new(name),
        }
    }

    /// `namespace/name`, or `/name` for cluster-wide documents: how `matched_by` names them.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.is_namespaced() {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        } else {
            write!(f, "{} {}", self.kind, self.name)
        }
    }
}

/// A validated document.
#[derive(Clone, Debug)]
pub struct Document {
    pub key: DocKey,
    pub labels: BTreeMap<String, String>,
    pub spec: Spec,
    /// The document as canonical JSON (envelope normalised): what `get` and the store
    /// return. Kept compact: [`Canonical::text`] gives the JSON.
    pub raw: Canonical,
}

impl Document {
    pub fn error(&self, field: &str, message: impl Into<String>) -> DocError {
        DocError {
            document: self.key.to_string(),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

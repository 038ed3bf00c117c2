//! Errors are values with context: the document, the field path and the rule broken.

use serde::Serialize;
use std::fmt;

/// A rule broken at a field path, before it is attached to a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// What is wrong with one document of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DocError {
    /// `Kind namespace/name`, `Kind name`, or `document #N` when it has no name yet.
    pub document: String,
    /// The field path, like `spec.from[0].workloadSelector.matchLabels`; empty for the whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.document.is_empty(), self.field.is_empty()) {
            (false, false) => write!(f, "{}: {}: {}", self.document, self.field, self.message),
            (false, true) => write!(f, "{}: {}", self.document, self.message),
            (true, false) => write!(f, "{}: {}", self.field, self.message),
            (true, true) => f.write_str(&self.message),
        }
    }
}

/// Why an apply or delete changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The input is not YAML or JSON, or not a document at all (HTTP 400).
    #[error("malformed input: {0}")]
    Malformed(String),
    /// One or more documents break a rule (HTTP 422). Every problem found is listed.
    #[error("{}", join(.0))]
    Invalid(Vec<DocError>),
    /// The batch contradicts the state it leads to (HTTP 409).
    #[error("{0}")]
    Conflict(DocError),
    /// A delete names a document that does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(DocError),
    /// The durable store refused the change (HTTP 500).
    #[error("store: {0}")]
    Store(String),
}

impl ApplyError {
    /// The first document error, for the one-object error bodies of the API.
    pub fn first(&self) -> Option<&DocError> {
        match self {
            ApplyError::Invalid(v) => v.first(),
            ApplyError::Conflict(e) | ApplyError::NotFound(e) => Some(e),
            ApplyError::Malformed(_) | ApplyError::Store(_) => None,
        }
    }

    /// The HTTP status the operator API answers with.
    pub fn status(&self) -> u16 {
        match self {
            ApplyError::Malformed(_) => 400,
            ApplyError::Invalid(_) => 422,
            ApplyError::Conflict(_) => 409,
            ApplyError::NotFound(_) => 404,
            ApplyError::Store(_) => 500,
        }
    }
}

fn join(errors: &[DocError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    lines.join("; ")
}

/// Why an event was not accepted: it is not a well-formed event (not a deny).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid event: {field}{}{message}", if field.is_empty() { "" } else { ": " })]
pub struct EventError {
    pub field: String,
    pub message: String,
}

/// An agent that could not decide (error, trap, time-out): its subscription's
/// `failureMode` says what happens next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AgentError(pub String);

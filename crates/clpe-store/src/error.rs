//! The store's errors.

use std::path::PathBuf;

/// A boxed error of the backend underneath, kept as the source of a [`StoreError`] so the
/// trait does not expose one backend's error types.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file-system operation on the store's directory or file failed.
    #[error("cannot {op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process (or another handle in this one) holds the store open.
    #[error("store `{}` is already open by another process or handle", path.display())]
    Locked { path: PathBuf },
    /// The store's file is damaged or is not a store at all.
    #[error("store `{}` is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// The backend failed during an operation.
    #[error("store `{}`: cannot {op}", path.display())]
    Backend {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: BackendError,
    },
}

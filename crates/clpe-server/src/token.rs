//! The operator token: made on first start, kept in the data directory with 0600
//! permissions (where the CLI finds it), compared in constant time.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq as _;

/// Why the token cannot be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot {op} the token file `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a random token: {0}")]
    Random(String),
    #[error("the token file `{}` is empty", path.display())]
    Empty { path: PathBuf },
}

/// A bearer token; `Debug` does not show it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token of `path`, made (32 random bytes, hex) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Token, TokenError> {
        let io = |op: &'static str| {
            move |source| TokenError::Io {
                op,
                path: path.to_owned(),
                source,
            }
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let token = text.trim().to_owned();
                if token.is_empty() {
                    return Err(TokenError::Empty {
                        path: path.to_owned(),
                    });
                }
                let mode = std::fs::metadata(path)
                    .map_err(io("inspect"))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the token file is readable by others");
                }
                Ok(Token(token))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
                let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io("create"))?;
                file.write_all(format!("{token}\n").as_bytes())
                    .map_err(io("write"))?;
                file.sync_all().map_err(io("sync"))?;
                Ok(Token(token))
            }
            Err(e) => Err(io("read")(e)),
        }
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    pub fn verify(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let a = Token::load_or_create(&path).unwrap();
        let b = Token::load_or_create(&path).unwrap();
        assert_eq!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), 64);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(a.verify(b.as_str()));
        assert!(!a.verify("nope"));
        assert!(!a.verify(""));
    }
}

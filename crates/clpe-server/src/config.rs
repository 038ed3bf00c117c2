//! The daemon's configuration: a TOML file with the same keys as `clpe serve`'s flags
//! (snake case), flags overriding the file, defaults for the rest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The HTTP address when none is configured: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7080";
/// The gRPC address when none is configured: loopback only.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:7081";
/// The name of the operator token's file in the data directory.
pub const TOKEN_FILE: &str = "token";

/// How log lines are written (to standard error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format `{other}` (use text or json)")),
        }
    }
}

/// What a configuration file may say; every key is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub grpc_listen: Option<SocketAddr>,
    pub local_peer: Option<String>,
    pub decision_log: Option<usize>,
    pub log_format: Option<LogFormat>,
    pub seed: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub demo: Option<bool>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file `{}`: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("no data directory: set `data_dir`, `--data-dir`, `XDG_DATA_HOME` or `HOME`")]
    NoDataDir,
}

impl FileConfig {
    /// Reads a TOML configuration file.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        FileConfig::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// The keys `other` sets replace this file's (flags over the file).
    pub fn overridden_by(self, other: FileConfig) -> FileConfig {
        FileConfig {
            data_dir: other.data_dir.or(self.data_dir),
            listen: other.listen.or(self.listen),
            grpc_listen: other.grpc_listen.or(self.grpc_listen),
            local_peer: other.local_peer.or(self.local_peer),
            decision_log: other.decision_log.or(self.decision_log),
            log_format: other.log_format.or(self.log_format),
            seed: other.seed.or(self.seed),
            request_timeout_secs: other.request_timeout_secs.or(self.request_timeout_secs),
            demo: other.demo.or(self.demo),
        }
    }
}

/// The daemon's settled configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    /// The engine's own peer.
    pub local_peer: String,
    /// Decision-log entries kept in memory.
    pub decision_log: usize,
    pub log_format: LogFormat,
    /// Seeds `random` and `weighted` balancing.
    pub seed: u64,
    /// The longest a request may take, body included.
    pub request_timeout: Duration,
    /// Apply the demo policy set on start when the store holds only the defaults.
    pub demo: bool,
}

impl ServerConfig {
    /// Fills what `file` leaves out with the defaults.
    pub fn settle(file: FileConfig) -> Result<ServerConfig, ConfigError> {
        let data_dir = match file.data_dir {
            Some(d) => d,
            None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
        };
        Ok(ServerConfig {
            data_dir,
            listen: file
                .listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7080))),
            grpc_listen: file
                .grpc_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7081))),
            local_peer: file.local_peer.unwrap_or_else(|| "local".to_owned()),
            decision_log: file.decision_log.unwrap_or(1024),
            log_format: file.log_format.unwrap_or_default(),
            seed: file.seed.unwrap_or(0),
            request_timeout: Duration::from_secs(file.request_timeout_secs.unwrap_or(30).max(1)),
            demo: file.demo.unwrap_or(false),
        })
    }

    pub fn token_path(&self) -> PathBuf {
        self.data_dir.join(TOKEN_FILE)
    }
}

/// The per-user data directory: `$CLPE_DATA_DIR`, else `$XDG_DATA_HOME/clpe`, else
/// `~/.local/share/clpe`. The CLI finds the operator token here.
pub fn default_data_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("CLPE_DATA_DIR") {
        return Some(dir);
    }
    if let Some(dir) = var("XDG_DATA_HOME") {
        return Some(dir.join("clpe"));
    }
    var("HOME").map(|home| home.join(".local").join("share").join("clpe"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn file_keys_parse_and_flags_win() {
        let file = FileConfig::parse(
            "data_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:9000\"\nlocal_peer = \"P1\"\nlog_format = \"json\"\ndecision_log = 5\n",
        )
        .unwrap();
        let flags = FileConfig {
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..FileConfig::default()
        };
        let config = ServerConfig::settle(file.overridden_by(flags)).unwrap();
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.grpc_listen.port(), 7081);
        assert_eq!(config.local_peer, "P1");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.decision_log, 5);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = FileConfig::parse("listne = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.contains("listne"), "{err}");
    }
}

//! Control-plane configuration: one TOML file (optional), overridden by
//! `CP__SECTION__KEY` environment variables and then by command-line flags,
//! with every default in [`Config::default`]. Layering and error lines are
//! [`vss_shared::config`]'s; this module owns the fields and their rules.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
pub use vss_shared::config::ConfigError;

/// Prefix of every control-plane environment override.
pub const ENV_PREFIX: &str = "CP__";

/// The whole control-plane configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listener and request limits.
    pub server: ServerSection,
    /// Where state lives.
    pub database: DatabaseSection,
    /// Tokens, secrets and login protection.
    pub auth: AuthSection,
    /// Logging.
    pub log: LogSection,
    /// The QUIC endpoint hubs enroll and sync through.
    pub sync: SyncSection,
}

/// `[sync]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSection {
    /// Whether to serve hubs at all.
    pub enabled: bool,
    /// UDP address of the QUIC endpoint (`0.0.0.0:8781` to serve hubs elsewhere).
    pub listen: SocketAddr,
    /// Names and addresses hubs use to reach the endpoint, comma-separated:
    /// they go into the server certificate (DNS names or IP addresses).
    pub server_names: String,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8781)),
            server_names: "localhost,127.0.0.1,::1".into(),
        }
    }
}

impl SyncSection {
    /// `server_names` split and trimmed.
    pub fn names(&self) -> Vec<String> {
        self.server_names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address of the HTTP API.
    pub http: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Base URL of the Guacamole web gateway, used in remote-access descriptors.
    pub guacamole_url: String,
    /// How long a serialised `GET /api/slots` page may be served again, in ms,
    /// while no write through this instance changed the slots; 0 disables it.
    /// Bounds how stale a page can be after a write through another instance.
    pub list_cache_ms: u64,
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// `sqlite://PATH` or `postgres://…`; empty means `sqlite://DATA_DIR/control-plane.db`.
    pub url: String,
    /// Directory for the embedded database and other local state.
    pub data_dir: PathBuf,
    /// Most pooled connections.
    pub max_connections: u32,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `development` or `production`: production refuses to start without a strong secret.
    pub mode: Mode,
    /// The JWT signing secret (prefer `jwt_secret_file` or `CP__AUTH__JWT_SECRET`).
    pub jwt_secret: String,
    /// A file holding the JWT signing secret.
    pub jwt_secret_file: Option<PathBuf>,
    /// Access token lifetime, seconds.
    pub access_ttl_s: u64,
    /// Refresh token lifetime, seconds.
    pub refresh_ttl_s: u64,
    /// Failed logins (per account, and per source address) before the first lockout.
    pub lockout_after_failures: u32,
    /// First lockout, seconds; it doubles with every further failure.
    pub lockout_base_s: u64,
    /// Longest lockout, seconds.
    pub lockout_max_s: u64,
}

/// How strict start-up is about secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A missing secret is generated for this run (tokens die with the process).
    Development,
    /// A missing or weak secret refuses start-up.
    Production,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter.
    pub level: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            http: SocketAddr::from(([127, 0, 0, 1], 8780)),
            body_limit_bytes: 256 * 1024,
            guacamole_url: "http://127.0.0.1:8080/guacamole".into(),
            list_cache_ms: 500,
        }
    }
}

impl Default for DatabaseSection {
    fn default() -> Self {
        DatabaseSection {
            url: String::new(),
            data_dir: PathBuf::from("/var/lib/control-plane"),
            max_connections: 16,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            mode: Mode::Development,
            jwt_secret: String::new(),
            jwt_secret_file: None,
            access_ttl_s: 15 * 60,
            refresh_ttl_s: 30 * 24 * 3600,
            lockout_after_failures: 5,
            lockout_base_s: 30,
            lockout_max_s: 3600,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

pub use crate::auth::secret::MIN_SECRET_BYTES;

impl Config {
    /// Loads `path` (or only defaults when `None`), applies `CP__…` overrides, validates.
    pub fn load(path: Option<&Path>, vars: Vec<(String, String)>) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                (text, path.to_owned())
            }
            None => (String::new(), PathBuf::from("(defaults)")),
        };
        vss_shared::config::load(&text, &origin, ENV_PREFIX, vars, validate)
    }

    /// The database URL: the configured one, or the embedded SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}",
                self.database.data_dir.join("control-plane.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }
}

/// The process's `CP__…` variables.
pub fn cp_env() -> Result<Vec<(String, String)>, ConfigError> {
    vss_shared::config::prefixed_env(ENV_PREFIX)
}

/// Rules that need more than a type.
pub fn validate(config: &Config, origin: &str) -> Result<(), ConfigError> {
    let invalid = |field: &str, value: String, why: &str| ConfigError::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        value,
        why: why.to_owned(),
    };
    let url = &config.database.url;
    if !(url.is_empty()
        || url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        return Err(invalid(
            "database.url",
            format!("{url:?}"),
            "must start with sqlite: or postgres:// (or be empty for the embedded database)",
        ));
    }
    if config.database.max_connections == 0 {
        return Err(invalid(
            "database.max_connections",
            "0".into(),
            "must be at least 1",
        ));
    }
    if !(1024..=64 * 1024 * 1024).contains(&config.server.body_limit_bytes) {
        return Err(invalid(
            "server.body_limit_bytes",
            config.server.body_limit_bytes.to_string(),
            "must be between 1024 and 67108864",
        ));
    }
    if config.sync.enabled && config.sync.names().is_empty() {
        return Err(invalid(
            "sync.server_names",
            config.sync.server_names.clone(),
            "name at least one DNS name or IP address hubs use to reach the control plane",
        ));
    }
    if config.server.list_cache_ms > 10_000 {
        return Err(invalid(
            "server.list_cache_ms",
            config.server.list_cache_ms.to_string(),
            "must be between 0 (off) and 10000",
        ));
    }
    let auth = &config.auth;
    if !(60..=24 * 3600).contains(&auth.access_ttl_s) {
        return Err(invalid(
            "auth.access_ttl_s",
            auth.access_ttl_s.to_string(),
            "must be between 60 and 86400",
        ));
    }
    if auth.refresh_ttl_s < auth.access_ttl_s {
        return Err(invalid(
            "auth.refresh_ttl_s",
            auth.refresh_ttl_s.to_string(),
            "must not be shorter than auth.access_ttl_s",
        ));
    }
    if auth.lockout_after_failures == 0
        || auth.lockout_base_s == 0
        || auth.lockout_base_s > auth.lockout_max_s
    {
        return Err(invalid(
            "auth.lockout_base_s",
            auth.lockout_base_s.to_string(),
            "lockout_after_failures and lockout_base_s must be at least 1, and lockout_base_s at most lockout_max_s",
        ));
    }
    if !matches!(config.log.format.as_str(), "text" | "json") {
        return Err(invalid(
            "log.format",
            format!("{:?}", config.log.format),
            "must be \"text\" or \"json\"",
        ));
    }
    Ok(())
}

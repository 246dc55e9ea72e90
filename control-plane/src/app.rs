//! Start-up: resolve the signing secret, connect and migrate the database,
//! create the first administrator on an empty database, bind and serve.
//!
//! Order: everything that can refuse (config, secret, database, port) is
//! checked before the server answers its first request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, Inner, router};
use crate::auth::jwt::JwtKeys;
use crate::auth::lockout::{LockoutPolicy, Lockouts};
use crate::auth::password::{hash_password, random_password};
use crate::auth::secret::{self, SecretSource};
use crate::config::{Config, Mode};
use crate::fleet::{self, ca::FleetCa};
use crate::metrics::ApiMetrics;
use crate::rbac::Role;
use crate::store::users::NewUser;
use crate::store::{Store, StoreError};

/// The first administrator's login, created on an empty database.
pub const FIRST_ADMIN_EMAIL: &str = "admin@vss.local";

/// Why the control plane could not start. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The signing secret is missing, unreadable or weak.
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    /// The database cannot be reached, migrated or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data directory cannot be created.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP address cannot be bound.
    #[error(
        "server.http {addr}: cannot listen: {source}; stop what listens there or set server.http"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something else failed while starting.
    #[error("{0}")]
    Other(String),
}

/// The first administrator, when this start created one.
#[derive(Debug, Clone)]
pub struct FirstAdmin {
    /// Login email.
    pub email: String,
    /// The random password (shown once, never stored in clear).
    pub password: String,
}

/// A running control plane.
pub struct Running {
    /// Where the HTTP API listens.
    pub addr: SocketAddr,
    /// Where the fleet endpoint listens (UDP), when `sync.enabled`.
    pub sync_addr: Option<SocketAddr>,
    /// SHA-256 of the fleet CA certificate, when `sync.enabled`.
    pub ca_fingerprint: Option<[u8; 32]>,
    /// Set when this start created the first administrator.
    pub first_admin: Option<FirstAdmin>,
    /// Finishes when the server stops.
    pub done: tokio::task::JoinHandle<()>,
}

/// Connects to the configured database (creating the data dir for SQLite) and migrates it.
pub async fn open_store(config: &Config) -> Result<Store, StartError> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        let dir = &config.database.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
    }
    let store = Store::connect(&url, config.database.max_connections).await?;
    store.migrate().await?;
    Ok(store)
}

/// Creates the first administrator if the database has no user at all.
pub async fn ensure_first_admin(store: &Store) -> Result<Option<FirstAdmin>, StartError> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let password = random_password().map_err(|e| StartError::Other(e.to_string()))?;
    let password_hash = hash_password(&password).map_err(|e| StartError::Other(e.to_string()))?;
    store
        .create_user(NewUser {
            centre_id: None,
            email: FIRST_ADMIN_EMAIL.into(),
            role: Role::Admin,
            password_hash,
        })
        .await?;
    Ok(Some(FirstAdmin {
        email: FIRST_ADMIN_EMAIL.into(),
        password,
    }))
}

/// Starts the control plane; cancelling `shutdown` stops it.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let production = config.auth.mode == Mode::Production;
    let (secret, source, warning) = secret::resolve(
        &config.auth.jwt_secret,
        config.auth.jwt_secret_file.as_deref(),
        production,
    )?;
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    if source == SecretSource::Generated {
        tracing::warn!(
            "no JWT secret configured: generated one for this run (tokens die with the process); set auth.jwt_secret_file in production"
        );
    }
    let listener = TcpListener::bind(config.server.http)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.server.http,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.server.http,
        source,
    })?;
    let store = open_store(&config).await?;
    let first_admin = ensure_first_admin(&store).await?;
    let auth = &config.auth;
    let lockouts = Lockouts::new(LockoutPolicy {
        after_failures: auth.lockout_after_failures,
        base: Duration::from_secs(auth.lockout_base_s),
        max: Duration::from_secs(auth.lockout_max_s),
    });
    let config_list_cache_ms = config.server.list_cache_ms;
    let fleet = if config.sync.enabled {
        let dir = &config.database.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let ca = FleetCa::load_or_create(dir, crate::store::now_ms())
            .map_err(|e| StartError::Other(e.to_string()))?;
        let endpoint = fleet::server::start(
            store.clone(),
            Arc::new(ca),
            config.sync.listen,
            &config.sync.names(),
            shutdown.clone(),
        )
        .map_err(|e| StartError::Other(e.to_string()))?;
        Some(endpoint)
    } else {
        None
    };
    let sync_addr = fleet.as_ref().map(|e| e.addr);
    let ca_fingerprint = fleet.as_ref().map(|e| e.fleet.ca_fingerprint());
    let state = AppState::new(Inner {
        fleet: fleet.as_ref().map(|e| e.fleet.clone()),
        store: store.clone(),
        keys: JwtKeys::new(&secret),
        lockouts: Mutex::new(lockouts),
        config,
        metrics: ApiMetrics::default(),
        started: Instant::now(),
        slot_pages: crate::api::page_cache::PageCache::new(Duration::from_millis(
            config_list_cache_ms,
        )),
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let done = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server stopped");
        }
        if let Some(endpoint) = fleet {
            let _ = endpoint.done.await;
        }
        store.close().await;
    });
    tracing::info!(api = %format!("http://{addr}"), "control plane started");
    Ok(Running {
        addr,
        sync_addr,
        ca_fingerprint,
        first_admin,
        done,
    })
}

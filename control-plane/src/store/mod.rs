//! The control plane's store: one interface over two backends, embedded
//! SQLite (the zero-setup default) and Postgres (production).
//!
//! Queries are written once where the dialects agree (`$1` placeholders,
//! standard SQL) and run on either pool through [`on_pool!`]; code that is
//! specific to a backend matches on [`Pool`] explicitly. Each backend has its
//! own migration tree (`control-plane/migrations/<backend>/`), applied in
//! order and recorded in `schema_migrations`.
//!
//! Invariants:
//! - Every row that belongs to a call centre carries its `centre_id`, and every
//!   query a user can reach filters on it ([`Scope`]).
//! - `security_audit_log` is append-only: the store has no update or delete for it.
//! - Times are `BIGINT` milliseconds since the Unix epoch, ids are text.

mod migrations;
pub mod page;

pub mod audit;
pub mod centres;
pub mod fleet;
pub mod hub_config;
pub mod hubs;
pub mod ingest;
pub mod slots;
pub mod tokens;
pub mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// Postgres server.
    Postgres,
}

/// A connection pool of either backend.
#[derive(Debug, Clone)]
pub enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// Postgres.
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool, whichever backend it is.
/// The body is compiled once per backend, so the same SQL text serves both.
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($p) => $body,
            $crate::store::Pool::Postgres($p) => $body,
        }
    };
}

/// Begins a transaction that writes. On SQLite that is `BEGIN IMMEDIATE`: the
/// write lock is taken up front, so a transaction that reads then writes
/// waits behind other writers (`busy_timeout`) instead of failing with
/// `SQLITE_BUSY` when its read lock cannot be upgraded. On Postgres, `BEGIN`.
/// Every store transaction that writes uses it.
pub(crate) trait BeginWrite {
    /// The backend.
    type Db: sqlx::Database;
    /// The transaction, begun for writing.
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
    + Send;
}

impl BeginWrite for sqlx::SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for sqlx::PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one this store understands.
    #[error("database url {url:?}: {why}")]
    Url {
        /// The URL (without password).
        url: String,
        /// Why.
        why: String,
    },
    /// The database cannot be reached or opened.
    #[error("cannot connect to the database {url}: {source}")]
    Connect {
        /// The URL (without password).
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A migration failed; its transaction was rolled back.
    #[error("migration {version} ({backend:?}) failed: {source}")]
    Migration {
        /// Which one.
        version: i64,
        /// Which tree.
        backend: Backend,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The database schema is newer than this binary.
    #[error(
        "database schema version {found} is newer than this control-plane knows ({known}); upgrade it"
    )]
    TooNew {
        /// Version found.
        found: i64,
        /// Latest known.
        known: i64,
    },
    /// A pagination cursor or limit the client sent is not valid.
    #[error(transparent)]
    Page(#[from] page::PageError),
    /// A row with the same unique key exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// A handle on the database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// Bumped after every committed write that changes what a slot listing
    /// shows (a slot report, a hub revoked). Readers that cache a listing
    /// compare it to tell whether their copy is still current.
    slots_generation: Arc<AtomicU64>,
}

/// Which call centre's rows a request may see: all (platform admins) or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every centre (platform administrators).
    All,
    /// Only this centre's rows.
    Centre(String),
}

impl Scope {
    /// The centre to filter on, or `None` for all centres.
    pub fn centre(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Centre(id) => Some(id),
        }
    }
}

/// Hides the password of a database URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`), creating an
    /// SQLite file if needed. Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let shown = redact(url);
        let connect = |source| StoreError::Connect {
            url: shown.clone(),
            source,
        };
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Url {
                    url: shown.clone(),
                    why: e.to_string(),
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await
                .map_err(connect)?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // One direct connection first: its error says why (refused, bad
            // password, no such database); a pool would only say it timed out.
            let probe =
                tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url))
                    .await
                    .map_err(|_| connect(sqlx::Error::PoolTimedOut))?
                    .map_err(connect)?;
            let _ = probe.close().await;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await
                .map_err(connect)?;
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::Url {
                url: shown,
                why: "expected sqlite://PATH or postgres://…".into(),
            });
        };
        Ok(Store {
            pool,
            slots_generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The slot listing's generation: changes whenever a write through this
    /// `Store` (or a clone of it) changes what a slot listing shows.
    pub fn slots_generation(&self) -> u64 {
        self.slots_generation.load(Ordering::Acquire)
    }

    /// Marks slot listings read before now as outdated. Called after commit.
    pub(crate) fn slots_changed(&self) {
        self.slots_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Applies every pending migration of this backend's tree.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        migrations::migrate(&self.pool).await
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The pool, for the domain modules.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `SELECT 1` within `timeout`: is the database answering?
    pub async fn ping(&self, timeout: Duration) -> bool {
        let ping = async {
            on_pool!(&self.pool, |p| sqlx::query("SELECT 1")
                .execute(p)
                .await
                .is_ok())
        };
        tokio::time::timeout(timeout, ping).await.unwrap_or(false)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        on_pool!(&self.pool, |p| p.close().await)
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`] naming `what`.
pub(crate) fn conflict(what: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_owned())
        }
        _ => StoreError::Db(e),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

//! Opening the store: data directory checks, the single-hubd lock, integrity
//! check, pragmas and migrations. Nothing here ever deletes or recreates a file.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::StoreError;
use super::migrations::migrate;
use super::reader::StoreReader;
use super::writer::{self, StoreHandle};
use crate::config::Synchronous;
use crate::metrics::Metrics;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "hub.db";
/// The lock file that keeps a second hubd off the same data directory.
pub const LOCK_FILE: &str = "hubd.lock";

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Directory holding `hub.db`; created if missing.
    pub data_dir: PathBuf,
    /// Most writes per group commit.
    pub batch_max: usize,
    /// SQLite `synchronous`.
    pub synchronous: Synchronous,
}

/// An open store: the lock on the data directory and the writer task.
#[derive(Debug)]
pub struct Store {
    db_path: PathBuf,
    handle: StoreHandle,
    writer: Option<std::thread::JoinHandle<()>>,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the store in `options.data_dir` and starts its writer.
    pub fn open(options: &StoreOptions, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let dir = &options.data_dir;
        let lock = lock_data_dir(dir)?;
        let db_path = dir.join(DB_FILE);
        let mut conn = open_checked(&db_path)?;
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        let classify = |e: rusqlite::Error| classify(&db_path, e);
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(classify)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::DataDir {
                path: dir.clone(),
                why: format!("SQLite refused WAL mode here (got {mode}); use a local filesystem"),
            });
        }
        conn.pragma_update(None, "synchronous", sync)
            .map_err(classify)?;
        migrate(&mut conn).map_err(|e| match e {
            StoreError::Sqlite(e) => classify(e),
            other => other,
        })?;
        let (handle, writer) = writer::spawn(conn, options.batch_max, metrics)?;
        Ok(Store {
            db_path,
            handle,
            writer: Some(writer),
            _lock: lock,
        })
    }

    /// A handle for writing; clone it freely.
    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// A new read-only connection; it never blocks the writer.
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        StoreReader::open(&self.db_path)
    }

    /// Path of the database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Commits everything queued so far, stops the writer and releases the lock.
    pub async fn close(mut self) {
        self.handle.stop();
        if let Some(writer) = self.writer.take() {
            let joined = tokio::task::spawn_blocking(move || writer.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("store writer panicked while closing");
            }
        }
    }
}

/// Creates the data dir if needed and takes its exclusive lock.
fn lock_data_dir(dir: &Path) -> Result<File, StoreError> {
    let data_dir_error = |why: String| StoreError::DataDir {
        path: dir.to_owned(),
        why,
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Err(data_dir_error(format!("cannot create it: {e}")));
    }
    if !dir.is_dir() {
        return Err(data_dir_error("is not a directory".into()));
    }
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| data_dir_error(format!("not writable ({e}); fix its owner or permissions")))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            return Err(StoreError::InUse {
                path: dir.to_owned(),
                lock: lock_path,
            });
        }
        return Err(data_dir_error(format!(
            "cannot lock {}: {err}",
            lock_path.display()
        )));
    }
    Ok(lock)
}

/// Opens the database read-write; an existing file must pass `quick_check`
/// before anything is written to it.
fn open_checked(path: &Path) -> Result<Connection, StoreError> {
    let existed = path.exists();
    if existed && !path.is_file() {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: "not a regular file".into(),
        });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| classify(path, e))?;
    if existed {
        let verdict: String = conn
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(|e| classify(path, e))?;
        if verdict != "ok" {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: verdict,
            });
        }
    }
    Ok(conn)
}

/// Turns SQLite's error codes into the errors a person can act on.
pub(super) fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    let code = e.sqlite_error_code();
    let detail = e.to_string();
    match code {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_owned(),
            detail,
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked {
            path: path.to_owned(),
            detail,
        },
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            StoreError::DataDir {
                path: path.to_owned(),
                why: format!("cannot write the store ({detail})"),
            }
        }
        Some(ErrorCode::DiskFull) => StoreError::DiskFull(detail),
        _ => StoreError::Sqlite(e),
    }
}

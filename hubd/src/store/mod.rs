//! The hub's local store: one SQLite file (`hub.db`) in the data directory.
//!
//! It owns the schema, the single writer and read-only connections. Every
//! write goes through the writer task ([`writer`]), which commits writes in
//! batches (group commit) and answers each caller only after its batch is
//! durable. Readers open their own connections and never block the writer
//! (WAL).
//!
//! Invariants:
//! - A write whose future returned `Ok` is committed (and, with
//!   `synchronous = full`, fsynced): it survives `kill -9` and power loss.
//! - A record and its outbox entry are written in the same transaction.
//! - Outbox `seq` is strictly increasing and never reused, even after rows are
//!   deleted: `PruneAcked` writes the high-water mark in `settings` in the
//!   same transaction as the delete.
//! - An existing database file is never recreated, truncated or overwritten:
//!   a corrupt, locked, too-new or unwritable store is an error at start.

mod answer;
pub mod desired;
mod migrations;
mod open;
mod queue;
mod reader;
mod writer;

use std::path::PathBuf;

pub use migrations::latest as schema_version;
pub use open::{DB_FILE, LOCK_FILE, Store, StoreOptions};
pub use reader::{CommandRow, OutboxRow, StoreReader, TransitionRow};
pub use writer::{Receipt, SlotRow, StoreHandle, Write};

/// What can go wrong opening or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created or used.
    #[error("data dir {path}: {why}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// Another hubd holds the data directory.
    #[error("data dir {path} is in use by another hubd (lock file {lock}); stop it first")]
    InUse {
        /// The directory.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The database file is damaged or not a SQLite database.
    #[error(
        "store {path} is corrupt ({detail}); hubd will not overwrite it: move it aside to start with an empty store, or restore it from a backup"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite reported.
        detail: String,
    },
    /// Another process holds a lock on the database file.
    #[error("store {path} is locked by another process ({detail})")]
    Locked {
        /// The file.
        path: PathBuf,
        /// What SQLite reported.
        detail: String,
    },
    /// The schema was written by a newer hubd.
    #[error("store schema version {found} is newer than this hubd knows ({known}); upgrade hubd")]
    TooNew {
        /// Version in the file.
        found: u32,
        /// Latest version this binary knows.
        known: u32,
    },
    /// A migration failed; its transaction was rolled back.
    #[error("store migration {version} failed: {source}")]
    Migration {
        /// The migration that failed.
        version: u32,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The disk is full: the write was not committed.
    #[error("store write failed: disk full ({0})")]
    DiskFull(String),
    /// The writer task is gone (hubd is shutting down).
    #[error("store writer has stopped")]
    WriterGone,
    /// A write was rejected by the database (constraint, I/O error, …).
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A payload could not be encoded.
    #[error("cannot encode outbox payload: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

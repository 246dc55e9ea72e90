//! Embedded, versioned schema migrations, tracked in `PRAGMA user_version`.
//!
//! Invariant: a migration, once released, is never edited; changes are new
//! migrations appended to [`MIGRATIONS`]. A store whose version is newer than
//! this binary knows is refused, never touched.

use rusqlite::Connection;

use super::StoreError;

/// `(version, sql)`, in order; version N is the N-th entry.
pub const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_commands.sql")),
    (3, include_str!("migrations/0003_desired_config.sql")),
    (4, include_str!("migrations/0004_cdr_outcome.sql")),
];

/// The schema version this binary writes.
pub fn latest() -> u32 {
    MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0)
}

/// Brings `conn` to the latest schema, each migration in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > latest() {
        return Err(StoreError::TooNew {
            found: current,
            known: latest(),
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration {
                version: *version,
                source,
            })?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "store migrated");
    }
    Ok(())
}

//! Embedded migration trees, one per backend, recorded in `schema_migrations`.
//!
//! Invariant: a released migration is never edited; changes are new files.
//! Both trees keep the same version numbers and the same logical schema.

use super::{Backend, Pool, StoreError, now_ms};

const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_fleet_sync.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/0003_hub_config.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/0004_hub_events_no_fk.sql"),
    ),
];
const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_fleet_sync.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_hub_config.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_hub_events_no_fk.sql"),
    ),
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)";

/// Applies pending migrations; returns the versions applied.
pub(super) async fn migrate(pool: &Pool) -> Result<Vec<i64>, StoreError> {
    let (tree, backend) = match pool {
        Pool::Sqlite(_) => (SQLITE, Backend::Sqlite),
        Pool::Postgres(_) => (POSTGRES, Backend::Postgres),
    };
    let known = tree.last().map(|(v, _)| *v).unwrap_or(0);
    crate::on_pool!(pool, |p| {
        sqlx::raw_sql(CREATE_TABLE).execute(p).await?;
        let current: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
            .fetch_one(p)
            .await?;
        let current = current.unwrap_or(0);
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        let mut applied = Vec::new();
        for (version, sql) in tree.iter().filter(|(v, _)| *v > current) {
            let failed = |source| StoreError::Migration {
                version: *version,
                backend,
                source,
            };
            let mut tx = p.begin().await?;
            // Embedded at build time from the migration tree: no outside input.
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)")
                .bind(version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            tracing::info!(version, ?backend, "database migrated");
            applied.push(*version);
        }
        Ok(applied)
    })
}

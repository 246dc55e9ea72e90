//! Test databases: a fresh SQLite file, or a fresh Postgres database created
//! on the server at `$CP_TEST_POSTGRES_URL` (default: the local server,
//! trust auth) and dropped afterwards. `.ci/run` makes sure one answers.

#![allow(dead_code)]

use control_plane::store::Store;
use sqlx::Connection;

/// Where the throwaway Postgres databases are created.
pub fn postgres_admin_url() -> String {
    std::env::var("CP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A migrated store on a throwaway database; dropped with it.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin: String, name: String },
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("cp.db").display());
        let store = Store::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        TestDb {
            store,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    pub async fn postgres() -> TestDb {
        let admin = postgres_admin_url();
        let name = format!("cp_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("Postgres at {admin} must answer (.ci/run starts one): {e}")
            });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("CP_TEST_POSTGRES_URL needs a database path: {admin}"),
        };
        let store = Store::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        TestDb {
            store,
            url,
            cleanup: Cleanup::Postgres { admin, name },
        }
    }

    /// Closes the pool and removes the database.
    pub async fn drop_db(self) {
        self.store.close().await;
        if let Cleanup::Postgres { admin, name } = self.cleanup
            && let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await
        {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
        }
    }
}

/// Defines `$name` twice, as `sqlite::$name` and `postgres::$name`, each
/// running `$body(store)` on a fresh database of that backend.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($db:ident) $body:block)*) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let $db = common::TestDb::sqlite().await;
                    let run = async { $body };
                    run.await;
                    $db.drop_db().await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let $db = common::TestDb::postgres().await;
                    let run = async { $body };
                    run.await;
                    $db.drop_db().await;
                }
            )*
        }
    };
}

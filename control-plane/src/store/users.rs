//! Accounts. Emails are stored lower-cased and unique across the platform.

use serde::Serialize;
use sqlx::Row;

use super::page::{Page, PageRequest};
use super::{Scope, Store, StoreError, conflict, now_ms};
use crate::on_pool;
use crate::rbac::Role;

/// An account as the API shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Id (UUID).
    pub id: String,
    /// The user's call centre; absent for platform administrators.
    pub centre_id: Option<String>,
    /// Login email, lower-case.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Whether the account is disabled.
    pub disabled: bool,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// An account with its password hash, for login.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The account.
    pub user: User,
    /// Argon2id PHC string.
    pub password_hash: String,
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Centre, or `None` for a platform administrator.
    pub centre_id: Option<String>,
    /// Login email (any case; stored lower-case).
    pub email: String,
    /// Role.
    pub role: Role,
    /// Argon2id PHC string.
    pub password_hash: String,
}

/// `SELECT` of every user column, followed by `$rest` (a literal).
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, centre_id, email, role, disabled_at_ms, created_at_ms, password_hash FROM users ",
            $rest
        )
    };
}

fn from_row<R>(row: &R) -> Result<Credentials, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let role: String = row.try_get("role")?;
    let role = Role::parse(&role)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown role {role:?}").into()))?;
    Ok(Credentials {
        user: User {
            id: row.try_get("id")?,
            centre_id: row.try_get("centre_id")?,
            email: row.try_get("email")?,
            role,
            disabled: row.try_get::<Option<i64>, _>("disabled_at_ms")?.is_some(),
            created_at_ms: row.try_get("created_at_ms")?,
        },
        password_hash: row.try_get("password_hash")?,
    })
}

impl Store {
    /// Creates an account; a taken email is [`StoreError::Conflict`].
    pub async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let email = new.email.trim().to_lowercase();
        on_pool!(self.pool(), |p| {
            sqlx::query(
                "INSERT INTO users (id, centre_id, email, password_hash, role, created_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(&id)
            .bind(&new.centre_id)
            .bind(&email)
            .bind(&new.password_hash)
            .bind(new.role.as_str())
            .bind(now)
            .execute(p)
            .await
            .map_err(conflict("a user with this email"))?;
        });
        Ok(User {
            id,
            centre_id: new.centre_id,
            email,
            role: new.role,
            disabled: false,
            created_at_ms: now,
        })
    }

    /// The account with this email (any case), with its hash.
    pub async fn credentials_by_email(
        &self,
        email: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        let email = email.trim().to_lowercase();
        on_pool!(self.pool(), |p| {
            let row = sqlx::query(select_users!("WHERE email = $1"))
                .bind(&email)
                .fetch_optional(p)
                .await?;
            Ok(row.as_ref().map(from_row).transpose()?)
        })
    }

    /// The account with this id, within `scope`.
    pub async fn user(&self, scope: &Scope, id: &str) -> Result<Option<User>, StoreError> {
        on_pool!(self.pool(), |p| {
            let row = sqlx::query(select_users!(
                "WHERE id = $1 AND ($2 IS NULL OR centre_id = $2)"
            ))
            .bind(id)
            .bind(scope.centre())
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(from_row).transpose()?.map(|c| c.user))
        })
    }

    /// A page of accounts within `scope`, by id.
    pub async fn users(&self, scope: &Scope, page: &PageRequest) -> Result<Page<User>, StoreError> {
        let after = page.after.clone().unwrap_or_default();
        let rows = on_pool!(self.pool(), |p| {
            let rows = sqlx::query(select_users!(
                "WHERE ($1 IS NULL OR centre_id = $1) AND id > $2 ORDER BY id LIMIT $3"
            ))
            .bind(scope.centre())
            .bind(&after)
            .bind(page.limit + 1)
            .fetch_all(p)
            .await?;
            rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?
        });
        Ok(page.page(rows.into_iter().map(|c| c.user).collect(), |u| u.id.clone()))
    }

    /// Disables (or re-enables) an account within `scope`; false when not found.
    pub async fn set_user_disabled(
        &self,
        scope: &Scope,
        id: &str,
        disabled: bool,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let at = disabled.then_some(now);
        on_pool!(self.pool(), |p| {
            let done = sqlx::query(
                "UPDATE users SET disabled_at_ms = $1, updated_at_ms = $2
                 WHERE id = $3 AND ($4 IS NULL OR centre_id = $4)",
            )
            .bind(at)
            .bind(now)
            .bind(id)
            .bind(scope.centre())
            .execute(p)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// How many accounts exist at all.
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        on_pool!(self.pool(), |p| Ok(sqlx::query_scalar(
            "SELECT count(*) FROM users"
        )
        .fetch_one(p)
        .await?))
    }
}

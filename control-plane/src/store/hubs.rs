//! Hubs in the field and their one-time enrollment tokens. Only a hash of a
//! token is stored; the token itself is shown once, to whoever created it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::page::{Page, PageRequest};
use super::{BeginWrite, Scope, Store, StoreError, conflict, now_ms};
use crate::on_pool;

/// A hub as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Hub {
    /// Hub id (a slug, unique in the fleet).
    pub id: String,
    /// Its call centre.
    pub centre_id: String,
    /// Human name.
    pub name: String,
    /// When it was created, ms.
    pub created_at_ms: i64,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
    /// When it was last heard from, if ever.
    pub last_seen_ms: Option<i64>,
}

/// A freshly issued enrollment token (shown once).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnrollmentToken {
    /// The hub it enrolls.
    pub hub_id: String,
    /// The token: give it to `hubd enroll`. Not stored; not shown again.
    pub token: String,
    /// When it stops working, ms.
    pub expires_at_ms: i64,
}

fn from_row<R>(row: &R) -> Result<Hub, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Hub {
        id: row.try_get("id")?,
        centre_id: row.try_get("centre_id")?,
        name: row.try_get("name")?,
        created_at_ms: row.try_get("created_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
    })
}

pub(crate) fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// Registers a hub of `centre_id`; a taken id is a conflict.
    pub async fn create_hub(
        &self,
        centre_id: &str,
        id: &str,
        name: &str,
    ) -> Result<Hub, StoreError> {
        let hub = Hub {
            id: id.to_owned(),
            centre_id: centre_id.to_owned(),
            name: name.trim().to_owned(),
            created_at_ms: now_ms(),
            revoked_at_ms: None,
            last_seen_ms: None,
        };
        on_pool!(self.pool(), |p| {
            sqlx::query(
                "INSERT INTO hubs (id, centre_id, name, created_at_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(&hub.id)
            .bind(&hub.centre_id)
            .bind(&hub.name)
            .bind(hub.created_at_ms)
            .execute(p)
            .await
            .map_err(conflict("a hub with this id"))?;
        });
        Ok(hub)
    }

    /// The hub with this id, within `scope`.
    pub async fn hub(&self, scope: &Scope, id: &str) -> Result<Option<Hub>, StoreError> {
        on_pool!(self.pool(), |p| {
            let row =
                sqlx::query("SELECT * FROM hubs WHERE id = $1 AND ($2 IS NULL OR centre_id = $2)")
                    .bind(id)
                    .bind(scope.centre())
                    .fetch_optional(p)
                    .await?;
            Ok(row.as_ref().map(from_row).transpose()?)
        })
    }

    /// A page of hubs within `scope`.
    pub async fn hubs(&self, scope: &Scope, page: &PageRequest) -> Result<Page<Hub>, StoreError> {
        let after = page.after.clone().unwrap_or_default();
        let rows = on_pool!(self.pool(), |p| {
            let rows = sqlx::query(
                "SELECT * FROM hubs WHERE ($1 IS NULL OR centre_id = $1) AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(scope.centre())
            .bind(&after)
            .bind(page.limit + 1)
            .fetch_all(p)
            .await?;
            rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?
        });
        Ok(page.page(rows, |h| h.id.clone()))
    }

    /// Issues a one-time enrollment token for a hub within `scope`, valid for
    /// `ttl_ms`; `None` when the hub is not found or is revoked.
    pub async fn create_enrollment_token(
        &self,
        scope: &Scope,
        hub_id: &str,
        ttl_ms: i64,
        created_by: Option<&str>,
    ) -> Result<Option<EnrollmentToken>, StoreError> {
        match self.hub(scope, hub_id).await? {
            Some(hub) if hub.revoked_at_ms.is_none() => {}
            _ => return Ok(None),
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| StoreError::Db(sqlx::Error::Protocol(format!("no randomness: {e}"))))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let now = now_ms();
        let expires_at_ms = now.saturating_add(ttl_ms);
        on_pool!(self.pool(), |p| {
            sqlx::query(
                "INSERT INTO enrollment_tokens (token_hash, hub_id, created_by, created_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash(&token))
            .bind(hub_id)
            .bind(created_by)
            .bind(now)
            .bind(expires_at_ms)
            .execute(p)
            .await?;
        });
        Ok(Some(EnrollmentToken {
            hub_id: hub_id.to_owned(),
            token,
            expires_at_ms,
        }))
    }

    /// Revokes a hub within `scope` and its unused enrollment tokens; false when not found.
    pub async fn revoke_hub(&self, scope: &Scope, id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        on_pool!(self.pool(), |p| {
            let mut tx = p.begin_write().await?;
            let done = sqlx::query(
                "UPDATE hubs SET revoked_at_ms = COALESCE(revoked_at_ms, $1) WHERE id = $2 AND ($3 IS NULL OR centre_id = $3)",
            )
            .bind(now)
            .bind(id)
            .bind(scope.centre())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query("UPDATE enrollment_tokens SET used_at_ms = $1 WHERE hub_id = $2 AND used_at_ms IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            self.slots_changed();
            Ok(true)
        })
    }
}

//! Rotating refresh tokens. Only a SHA-256 of each token is stored. A token
//! is single-use: refreshing marks it used and issues its successor in the
//! same family; presenting a used (or revoked) token again is theft or
//! replay, and revokes the whole family.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{BeginWrite, Store, StoreError, now_ms};
use crate::on_pool;

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Valid: here is its successor.
    Rotated {
        /// Owner.
        user_id: String,
        /// The new token (give it to the client; it is not stored).
        token: String,
        /// Family (one login session).
        family_id: String,
    },
    /// Already used or revoked: the family is now revoked.
    Reused {
        /// Owner.
        user_id: String,
        /// The family that was revoked.
        family_id: String,
    },
    /// Revoked (logout, disabled account) and never used: refused, no alarm.
    Revoked {
        /// Owner.
        user_id: String,
    },
    /// Past its expiry.
    Expired,
    /// Not a token this server issued.
    Unknown,
}

fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_token() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Db(sqlx::Error::Protocol(format!("no randomness: {e}"))))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl Store {
    /// Issues a refresh token for `user_id` in a new family (a login);
    /// returns `(token, family_id)`.
    pub async fn issue_refresh_token(
        &self,
        user_id: &str,
        ttl_ms: i64,
    ) -> Result<(String, String), StoreError> {
        let family_id = uuid::Uuid::new_v4().to_string();
        let token = new_token()?;
        let now = now_ms();
        on_pool!(self.pool(), |p| {
            sqlx::query(
                "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, issued_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(&family_id)
            .bind(user_id)
            .bind(hash(&token))
            .bind(now)
            .bind(now.saturating_add(ttl_ms))
            .execute(p)
            .await?;
        });
        Ok((token, family_id))
    }

    /// Presents `token`: rotates it, or detects its reuse (revoking its family).
    pub async fn rotate_refresh_token(
        &self,
        token: &str,
        ttl_ms: i64,
    ) -> Result<Rotation, StoreError> {
        let now = now_ms();
        let next = new_token()?;
        on_pool!(self.pool(), |p| {
            let mut tx = p.begin_write().await?;
            let row = sqlx::query(
                "SELECT id, family_id, user_id, expires_at_ms, used_at_ms, revoked_at_ms
                 FROM refresh_tokens WHERE token_hash = $1",
            )
            .bind(hash(token))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(Rotation::Unknown);
            };
            let id: String = row.try_get("id")?;
            let family_id: String = row.try_get("family_id")?;
            let user_id: String = row.try_get("user_id")?;
            let expires_at_ms: i64 = row.try_get("expires_at_ms")?;
            let used = row.try_get::<Option<i64>, _>("used_at_ms")?.is_some();
            let revoked = row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some();
            if revoked && !used {
                return Ok(Rotation::Revoked { user_id });
            }
            let spent = used || revoked;
            // Mark it used only if nobody did in the meantime.
            let claimed = !spent
                && sqlx::query("UPDATE refresh_tokens SET used_at_ms = $1 WHERE id = $2 AND used_at_ms IS NULL AND revoked_at_ms IS NULL")
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
            if !claimed {
                sqlx::query("UPDATE refresh_tokens SET revoked_at_ms = $1 WHERE family_id = $2 AND revoked_at_ms IS NULL")
                    .bind(now)
                    .bind(&family_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(Rotation::Reused { user_id, family_id });
            }
            if expires_at_ms <= now {
                tx.commit().await?;
                return Ok(Rotation::Expired);
            }
            sqlx::query(
                "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, issued_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(&family_id)
            .bind(&user_id)
            .bind(hash(&next))
            .bind(now)
            .bind(now.saturating_add(ttl_ms))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Rotation::Rotated {
                user_id,
                token: next,
                family_id,
            })
        })
    }

    /// Revokes the family of `token` (logout); false when the token is unknown.
    pub async fn revoke_refresh_family(&self, token: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        on_pool!(self.pool(), |p| {
            let done = sqlx::query(
                "UPDATE refresh_tokens SET revoked_at_ms = $1
                 WHERE revoked_at_ms IS NULL
                   AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $2)",
            )
            .bind(now)
            .bind(hash(token))
            .execute(p)
            .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Revokes every refresh token of `user_id` (account disabled).
    pub async fn revoke_user_refresh_tokens(&self, user_id: &str) -> Result<u64, StoreError> {
        let now = now_ms();
        on_pool!(self.pool(), |p| {
            let done = sqlx::query("UPDATE refresh_tokens SET revoked_at_ms = $1 WHERE user_id = $2 AND revoked_at_ms IS NULL")
                .bind(now)
                .bind(user_id)
                .execute(p)
                .await?;
            Ok(done.rows_affected())
        })
    }
}

//! The fleet's durable state: redeeming enrollment tokens, the certificates
//! issued to hubs, and each hub's sync record (committed outbox seq, applied
//! config revision, connection times). Outbox ingest lives in `ingest.rs`.

use sqlx::Row;

use super::hubs::{Hub, token_hash};
use super::{BeginWrite, Store, StoreError, now_ms};
use crate::on_pool;

/// What redeeming an enrollment token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// The token was good and is now used: enroll this hub.
    Hub(Hub),
    /// No such token.
    Unknown,
    /// Already used (or cancelled when its hub was revoked).
    Used,
    /// Past its expiry.
    Expired,
    /// Its hub is revoked.
    Revoked,
}

/// A hub's sync record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncRecord {
    /// Highest contiguous outbox seq committed here; `None` when no base was
    /// ever recorded for the hub (it never completed a handshake).
    pub committed_seq: Option<u64>,
    /// The config revision the hub last reported applied.
    pub applied_revision: Option<u64>,
}

fn seq(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn db_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Store {
    /// Uses the enrollment token `secret` once, at `now_ms`. Race-safe: of two
    /// concurrent redemptions, exactly one gets [`Redeemed::Hub`]. One
    /// conditional `UPDATE … RETURNING` spends the token (no read-then-write
    /// transaction, which SQLite would refuse under concurrent writers); only
    /// a refusal reads the row again to say why.
    pub async fn redeem_enrollment_token(
        &self,
        secret: &str,
        now_ms: i64,
    ) -> Result<Redeemed, StoreError> {
        let hash = token_hash(secret);
        let spent: Option<String> = on_pool!(self.pool(), |p| {
            sqlx::query_scalar(
                "UPDATE enrollment_tokens SET used_at_ms = $1
                 WHERE token_hash = $2 AND used_at_ms IS NULL AND expires_at_ms > $1
                   AND hub_id IN (SELECT id FROM hubs WHERE revoked_at_ms IS NULL)
                 RETURNING hub_id",
            )
            .bind(now_ms)
            .bind(&hash)
            .fetch_optional(p)
            .await?
        });
        if let Some(hub_id) = spent {
            let hub = self
                .hub(&super::Scope::All, &hub_id)
                .await?
                .ok_or(StoreError::Db(sqlx::Error::RowNotFound))?;
            return Ok(Redeemed::Hub(hub));
        }
        on_pool!(self.pool(), |p| {
            let row = sqlx::query(
                "SELECT t.expires_at_ms, t.used_at_ms, h.revoked_at_ms
                 FROM enrollment_tokens t JOIN hubs h ON h.id = t.hub_id WHERE t.token_hash = $1",
            )
            .bind(&hash)
            .fetch_optional(p)
            .await?;
            let Some(row) = row else {
                return Ok(Redeemed::Unknown);
            };
            let expires_at_ms: i64 = row.try_get(0)?;
            let used_at_ms: Option<i64> = row.try_get(1)?;
            let revoked_at_ms: Option<i64> = row.try_get(2)?;
            Ok(if revoked_at_ms.is_some() {
                Redeemed::Revoked
            } else if used_at_ms.is_some() {
                Redeemed::Used
            } else if expires_at_ms <= now_ms {
                Redeemed::Expired
            } else {
                // Spent by a concurrent redemption between the two statements.
                Redeemed::Used
            })
        })
    }

    /// Records a certificate issued to `hub_id` (by its SHA-256 fingerprint, hex).
    pub async fn record_hub_certificate(
        &self,
        hub_id: &str,
        fingerprint: &str,
        issued_at_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self.pool(), |p| {
            sqlx::query(
                "INSERT INTO hub_certificates (fingerprint, hub_id, issued_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(fingerprint)
            .bind(hub_id)
            .bind(issued_at_ms)
            .bind(expires_at_ms)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// The hub a client certificate (SHA-256 fingerprint, hex) was issued to,
    /// whether or not it is revoked; `None` for a certificate never issued here.
    pub async fn hub_by_certificate(&self, fingerprint: &str) -> Result<Option<Hub>, StoreError> {
        let hub_id: Option<String> = on_pool!(self.pool(), |p| {
            sqlx::query_scalar("SELECT hub_id FROM hub_certificates WHERE fingerprint = $1")
                .bind(fingerprint)
                .fetch_optional(p)
                .await?
        });
        match hub_id {
            Some(id) => self.hub(&super::Scope::All, &id).await,
            None => Ok(None),
        }
    }

    /// The hub's sync record (empty when it never connected).
    pub async fn sync_record(&self, hub_id: &str) -> Result<SyncRecord, StoreError> {
        on_pool!(self.pool(), |p| {
            let row = sqlx::query(
                "SELECT committed_seq, applied_revision FROM hub_sync WHERE hub_id = $1",
            )
            .bind(hub_id)
            .fetch_optional(p)
            .await?;
            let Some(row) = row else {
                return Ok(SyncRecord::default());
            };
            let committed: Option<i64> = row.try_get(0)?;
            let applied: Option<i64> = row.try_get(1)?;
            Ok(SyncRecord {
                committed_seq: committed.map(seq),
                applied_revision: applied.map(seq),
            })
        })
    }

    /// Records that the hub connected (protocol version, software version).
    pub async fn hub_connected(
        &self,
        hub_id: &str,
        protocol_version: u32,
        software_version: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        on_pool!(self.pool(), |p| {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO hub_sync (hub_id, protocol_version, software_version, connected_at_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (hub_id) DO UPDATE SET protocol_version = excluded.protocol_version,
                   software_version = excluded.software_version, connected_at_ms = excluded.connected_at_ms",
            )
            .bind(hub_id)
            .bind(i64::from(protocol_version))
            .bind(software_version)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE hubs SET last_seen_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(hub_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        self.slots_changed();
        Ok(())
    }

    /// Records that the hub's connection ended.
    pub async fn hub_disconnected(&self, hub_id: &str) -> Result<(), StoreError> {
        let now = now_ms();
        on_pool!(self.pool(), |p| {
            sqlx::query("UPDATE hub_sync SET disconnected_at_ms = $1 WHERE hub_id = $2")
                .bind(now)
                .bind(hub_id)
                .execute(p)
                .await?;
            sqlx::query("UPDATE hubs SET last_seen_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(hub_id)
                .execute(p)
                .await?;
        });
        self.slots_changed();
        Ok(())
    }

    /// Hubs that are revoked, and hubs with queued commands.
    pub async fn fleet_flags(
        &self,
    ) -> Result<
        (
            std::collections::HashSet<String>,
            std::collections::HashSet<String>,
        ),
        StoreError,
    > {
        on_pool!(self.pool(), |p| {
            let revoked: Vec<String> =
                sqlx::query_scalar("SELECT id FROM hubs WHERE revoked_at_ms IS NOT NULL")
                    .fetch_all(p)
                    .await?;
            let queued: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT hub_id FROM hub_commands WHERE status = 'queued'",
            )
            .fetch_all(p)
            .await?;
            Ok((revoked.into_iter().collect(), queued.into_iter().collect()))
        })
    }

    /// Records when each hub was last heard from (heartbeats), all in one
    /// transaction: a fleet's heartbeats cost one commit per flush, not one
    /// per heartbeat. A time never moves backwards.
    pub async fn hubs_seen(&self, seen: &[(String, i64)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        on_pool!(self.pool(), |p| {
            let mut tx = p.begin_write().await?;
            for (hub_id, at_ms) in seen {
                sqlx::query(
                    "UPDATE hubs SET last_seen_ms = $1 WHERE id = $2 AND (last_seen_ms IS NULL OR last_seen_ms < $1)",
                )
                .bind(at_ms)
                .bind(hub_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records the config revision the hub applied.
    pub async fn hub_applied_revision(
        &self,
        hub_id: &str,
        revision: u64,
    ) -> Result<(), StoreError> {
        on_pool!(self.pool(), |p| {
            sqlx::query("UPDATE hub_sync SET applied_revision = $1 WHERE hub_id = $2")
                .bind(db_i64(revision))
                .bind(hub_id)
                .execute(p)
                .await?;
        });
        Ok(())
    }
}

/// A command to deliver to a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommand {
    /// Its id.
    pub id: String,
    /// Its kind, e.g. `restart_slot`.
    pub kind: String,
    /// Its arguments (JSON text).
    pub payload: String,
    /// When it expires, ms.
    pub expires_at_ms: i64,
}

impl Store {
    /// Marks every queued command whose TTL passed as `expired`; returns how many.
    pub async fn expire_commands(&self, now_ms: i64) -> Result<u64, StoreError> {
        on_pool!(self.pool(), |p| {
            Ok(sqlx::query(
                "UPDATE hub_commands SET status = 'expired', finished_at_ms = $1,
                   result = 'not delivered before its expiry'
                 WHERE status = 'queued' AND expires_at_ms <= $1",
            )
            .bind(now_ms)
            .execute(p)
            .await?
            .rows_affected())
        })
    }

    /// The hub's commands to deliver (queued, or sent without a result), oldest first.
    pub async fn pending_commands(&self, hub_id: &str) -> Result<Vec<PendingCommand>, StoreError> {
        on_pool!(self.pool(), |p| {
            let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
                "SELECT id, kind, payload, expires_at_ms FROM hub_commands
                 WHERE hub_id = $1 AND status IN ('queued', 'sent') ORDER BY created_at_ms, id",
            )
            .bind(hub_id)
            .fetch_all(p)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(id, kind, payload, expires_at_ms)| PendingCommand {
                    id,
                    kind,
                    payload,
                    expires_at_ms,
                })
                .collect())
        })
    }

    /// Records that the command was handed to the hub's session.
    pub async fn command_sent(&self, hub_id: &str, id: &str) -> Result<(), StoreError> {
        on_pool!(self.pool(), |p| {
            sqlx::query(
                "UPDATE hub_commands SET status = 'sent', sent_at_ms = $3
                 WHERE id = $1 AND hub_id = $2 AND status = 'queued'",
            )
            .bind(id)
            .bind(hub_id)
            .bind(now_ms())
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Records the hub's result. Only the hub the command is for can finish it.
    pub async fn command_finished(
        &self,
        hub_id: &str,
        id: &str,
        status: &str,
        result: Option<&str>,
    ) -> Result<bool, StoreError> {
        on_pool!(self.pool(), |p| {
            Ok(sqlx::query(
                "UPDATE hub_commands SET status = $3, result = $4, finished_at_ms = $5
                 WHERE id = $1 AND hub_id = $2 AND status IN ('queued', 'sent')",
            )
            .bind(id)
            .bind(hub_id)
            .bind(status)
            .bind(result)
            .bind(now_ms())
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// A command's status and result (`status`, `result`).
    pub async fn command_status(
        &self,
        id: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        on_pool!(self.pool(), |p| {
            Ok(
                sqlx::query_as("SELECT status, result FROM hub_commands WHERE id = $1")
                    .bind(id)
                    .fetch_optional(p)
                    .await?,
            )
        })
    }
}

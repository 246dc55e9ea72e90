//! Slots as their hubs report them, and what users ask of them: commands for
//! the hub (restart, place a call) and remote-access sessions.

use serde::Serialize;
use sqlx::Row;
use vss_shared::{SlotState, SlotStatus};

use super::page::{Page, PageRequest};
use super::{BeginWrite, Scope, Store, StoreError, now_ms};
use crate::on_pool;

/// A slot in the seeds' shape, plus where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Slot {
    /// The control plane's id for the slot.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// `free`, `busy`, `offline` or `fault` (from `fsm_state`; `offline` when the hub is revoked).
    pub status: String,
    /// `auto`, `mf` or `ls`.
    pub device_type: String,
    /// Internal SIP extension.
    pub internal_sip_number: String,
    /// State machine state as the hub last reported it.
    pub fsm_state: String,
    /// Why it is in FAULT.
    pub fault_reason: Option<String>,
    /// The hub that owns it.
    pub hub_id: String,
    /// Its id on that hub.
    pub hub_slot_id: i64,
    /// Its call centre.
    pub centre_id: String,
    /// When the hub last reported it, ms.
    pub updated_at_ms: i64,
    /// When the hub was last heard from, ms.
    pub hub_last_seen_ms: Option<i64>,
    /// Whether the hub is online: heard from within the last
    /// [`HUB_ONLINE_WINDOW_MS`] (hubs heartbeat every 10 s) and not revoked.
    pub hub_online: bool,
}

/// A hub heard from within this window counts as online.
pub const HUB_ONLINE_WINDOW_MS: i64 = 30_000;

/// A slot's state as a hub reports it.
#[derive(Debug, Clone)]
pub struct SlotReport {
    /// The hub's own slot id.
    pub hub_slot_id: i64,
    /// Display name.
    pub name: String,
    /// `auto`, `mf` or `ls`.
    pub kind: String,
    /// SIP extension.
    pub sip_number: String,
    /// FSM state.
    pub fsm_state: SlotState,
    /// Fault reason.
    pub fault_reason: Option<String>,
    /// Remote-access host (LS slots: the PC).
    pub remote_host: Option<String>,
}

/// A command queued for a hub.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Command {
    /// Id; the hub reports its result under it.
    pub id: String,
    /// The hub that will run it.
    pub hub_id: String,
    /// The slot it concerns.
    pub slot_id: i64,
    /// `restart_slot`, `start_call`, …
    pub kind: String,
    /// `queued` until the hub takes it.
    pub status: String,
    /// When it expires unless delivered, ms.
    pub expires_at_ms: i64,
}

/// `SELECT` of a slot joined with its hub, followed by `$rest` (a literal).
/// [`from_row`] reads the columns by position: keep the two in step.
macro_rules! select_slots {
    ($rest:literal) => {
        concat!(
            "SELECT s.id, s.name, s.kind, s.sip_number, s.fsm_state, s.fault_reason, s.hub_id,
                    s.hub_slot_id, s.centre_id, s.updated_at_ms, s.remote_host, h.last_seen_ms, h.revoked_at_ms
             FROM slots s JOIN hubs h ON h.id = s.hub_id ",
            $rest
        )
    };
}

/// Reads a row of [`select_slots!`] by column position (in its `SELECT`
/// order): a page decodes 13 columns × 100 rows, and looking each column up by
/// name costs a hash and a type check per value.
fn from_row<R>(row: &R) -> Result<(Slot, Option<String>), sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let fsm_state: String = row.try_get(4)?;
    let revoked = row.try_get::<Option<i64>, _>(12)?.is_some();
    let status = match fsm_state.parse::<SlotState>() {
        _ if revoked => SlotStatus::Offline,
        Ok(state) => state.status(),
        Err(_) => SlotStatus::Offline,
    };
    Ok((
        Slot {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            status: status.as_str().to_owned(),
            device_type: row.try_get(2)?,
            internal_sip_number: row.try_get(3)?,
            fsm_state,
            fault_reason: row.try_get(5)?,
            hub_id: row.try_get(6)?,
            hub_slot_id: row.try_get(7)?,
            centre_id: row.try_get(8)?,
            updated_at_ms: row.try_get(9)?,
            hub_last_seen_ms: row.try_get(11)?,
            hub_online: !revoked
                && row
                    .try_get::<Option<i64>, _>(11)?
                    .is_some_and(|seen| now_ms() - seen < HUB_ONLINE_WINDOW_MS),
        },
        row.try_get(10)?,
    ))
}

impl Store {
    /// Records what a hub reports about one of its slots (insert or update),
    /// and that the hub was seen.
    pub async fn upsert_slot_report(
        &self,
        hub_id: &str,
        report: &SlotReport,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        on_pool!(self.pool(), |p| {
            let mut tx = p.begin_write().await?;
            let centre: Option<String> =
                sqlx::query_scalar("SELECT centre_id FROM hubs WHERE id = $1")
                    .bind(hub_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(centre) = centre else {
                return Err(StoreError::Db(sqlx::Error::RowNotFound));
            };
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO slots (centre_id, hub_id, hub_slot_id, name, kind, sip_number, fsm_state, fault_reason, remote_host, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (hub_id, hub_slot_id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
                   sip_number = excluded.sip_number, fsm_state = excluded.fsm_state,
                   fault_reason = excluded.fault_reason, remote_host = excluded.remote_host,
                   updated_at_ms = excluded.updated_at_ms
                 RETURNING id",
            )
            .bind(&centre)
            .bind(hub_id)
            .bind(report.hub_slot_id)
            .bind(&report.name)
            .bind(&report.kind)
            .bind(&report.sip_number)
            .bind(report.fsm_state.as_str())
            .bind(&report.fault_reason)
            .bind(&report.remote_host)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("UPDATE hubs SET last_seen_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(hub_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            self.slots_changed();
            Ok(id)
        })
    }

    /// A page of slots within `scope`, by id.
    pub async fn slots(&self, scope: &Scope, page: &PageRequest) -> Result<Page<Slot>, StoreError> {
        let after = page.after_i64()?;
        let rows = on_pool!(self.pool(), |p| {
            let rows = sqlx::query(select_slots!(
                "WHERE ($1 IS NULL OR s.centre_id = $1) AND s.id > $2 ORDER BY s.id LIMIT $3"
            ))
            .bind(scope.centre())
            .bind(after)
            .bind(page.limit + 1)
            .fetch_all(p)
            .await?;
            rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?
        });
        Ok(page.page(rows.into_iter().map(|(s, _)| s).collect(), |s| {
            s.id.to_string()
        }))
    }

    /// The slot with this id within `scope`, and its remote-access host.
    pub async fn slot(
        &self,
        scope: &Scope,
        id: i64,
    ) -> Result<Option<(Slot, Option<String>)>, StoreError> {
        on_pool!(self.pool(), |p| {
            let row = sqlx::query(select_slots!(
                "WHERE s.id = $1 AND ($2 IS NULL OR s.centre_id = $2)"
            ))
            .bind(id)
            .bind(scope.centre())
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(from_row).transpose()?)
        })
    }

    /// Queues a command for the hub of `slot`; it expires after `ttl_ms` unless delivered.
    pub async fn queue_command(
        &self,
        slot: &Slot,
        kind: &str,
        payload: &serde_json::Value,
        ttl_ms: i64,
        created_by: Option<&str>,
    ) -> Result<Command, StoreError> {
        let now = now_ms();
        let command = Command {
            id: uuid::Uuid::new_v4().to_string(),
            hub_id: slot.hub_id.clone(),
            slot_id: slot.id,
            kind: kind.to_owned(),
            status: "queued".into(),
            expires_at_ms: now.saturating_add(ttl_ms),
        };
        on_pool!(self.pool(), |p| {
            sqlx::query(
                "INSERT INTO hub_commands (id, centre_id, hub_id, slot_id, kind, payload, status, created_by, created_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&command.id)
            .bind(&slot.centre_id)
            .bind(&command.hub_id)
            .bind(command.slot_id)
            .bind(&command.kind)
            .bind(payload.to_string())
            .bind(&command.status)
            .bind(created_by)
            .bind(now)
            .bind(command.expires_at_ms)
            .execute(p)
            .await?;
        });
        Ok(command)
    }

    /// Records a remote-access session granted to `user_id` on `slot`; returns its id.
    pub async fn record_remote_session(
        &self,
        slot: &Slot,
        user_id: &str,
        protocol: &str,
    ) -> Result<String, StoreError> {
        let now = now_ms();
        let id = format!(
            "guac_{}_{}_{}",
            slot.id,
            now,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        on_pool!(self.pool(), |p| {
            sqlx::query(
                "INSERT INTO remote_sessions (id, centre_id, slot_id, user_id, protocol, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&id)
            .bind(&slot.centre_id)
            .bind(slot.id)
            .bind(user_id)
            .bind(protocol)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(id)
    }
}

/// A command and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CommandStatus {
    /// Id.
    pub id: String,
    /// The hub that runs it.
    pub hub_id: String,
    /// The slot it concerns (the control plane's id), if any.
    pub slot_id: Option<i64>,
    /// `restart_slot`, `start_call`, …
    pub kind: String,
    /// `queued` (waiting for its hub), `sent` (handed to the hub's session),
    /// `done`, `failed`, `expired` (its TTL passed before the hub ran it) or
    /// `unknown` (interrupted by a hub restart; never run again).
    pub status: String,
    /// The hub's failure reason, or why it expired or is unknown.
    pub result: Option<String>,
    /// When it was queued, ms.
    pub created_at_ms: i64,
    /// When it was handed to the hub's session, ms.
    pub sent_at_ms: Option<i64>,
    /// When its outcome was recorded, ms.
    pub finished_at_ms: Option<i64>,
    /// After this instant it is not started, ms.
    pub expires_at_ms: i64,
}

impl Store {
    /// The command with this id within `scope`.
    pub async fn command(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<Option<CommandStatus>, StoreError> {
        on_pool!(self.pool(), |p| {
            let row = sqlx::query(
                "SELECT id, hub_id, slot_id, kind, status, result, created_at_ms, sent_at_ms,
                        finished_at_ms, expires_at_ms
                 FROM hub_commands WHERE id = $1 AND ($2 IS NULL OR centre_id = $2)",
            )
            .bind(id)
            .bind(scope.centre())
            .fetch_optional(p)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            Ok(Some(CommandStatus {
                id: row.try_get(0)?,
                hub_id: row.try_get(1)?,
                slot_id: row.try_get(2)?,
                kind: row.try_get(3)?,
                status: row.try_get(4)?,
                result: row.try_get(5)?,
                created_at_ms: row.try_get(6)?,
                sent_at_ms: row.try_get(7)?,
                finished_at_ms: row.try_get(8)?,
                expires_at_ms: row.try_get(9)?,
            }))
        })
    }
}

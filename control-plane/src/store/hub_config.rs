//! The desired slot configuration of each hub (F-14) and what the hub
//! reported about it. A revision only grows; replacing the slot list is one
//! transaction that bumps it, optionally only if it still is the revision the
//! caller read (optimistic concurrency). Validation is the API's business;
//! this module stores what it is given and never returns a SIP password
//! except to the sync session that delivers it ([`Store::desired_config`]).

use serde::Serialize;
use sqlx::Row;

use super::{BeginWrite, Scope, Store, StoreError, now_ms};
use crate::on_pool;

/// One slot of a desired configuration, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSlot {
    /// The slot's id on its hub (1–9999).
    pub hub_slot_id: i64,
    /// `auto`, `mf` or `ls`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Whether the hub runs it.
    pub enabled: bool,
    /// SIP extension (explicit: the API allocates missing ones).
    pub sip_number: String,
    /// SIP password; `None` when none is set.
    pub sip_password: Option<String>,
    /// The device binding, hubd's `DriverConfig` as JSON.
    pub driver: serde_json::Value,
}

/// A hub's desired configuration and its applied state.
#[derive(Debug, Clone, PartialEq)]
pub struct HubConfig {
    /// The hub.
    pub hub_id: String,
    /// The desired revision; 0 when none was ever set.
    pub revision: i64,
    /// Who set it (user id).
    pub updated_by: Option<String>,
    /// When it was set, ms.
    pub updated_at_ms: Option<i64>,
    /// The applied state the hub reported.
    pub applied: AppliedState,
    /// The slots, by hub slot id.
    pub slots: Vec<ConfigSlot>,
}

/// What a hub reported about its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AppliedState {
    /// The highest revision the hub reported applied.
    pub applied_revision: Option<i64>,
    /// When it reported that, ms.
    pub applied_at_ms: Option<i64>,
    /// A revision newer than the applied one that the hub refused.
    pub rejected_revision: Option<i64>,
    /// Why the hub refused it.
    pub rejected_reason: Option<String>,
    /// When it refused it, ms.
    pub rejected_at_ms: Option<i64>,
}

/// What replacing a configuration did.
#[derive(Debug, Clone, PartialEq)]
pub enum Replaced {
    /// Stored as a new revision.
    Stored(HubConfig),
    /// No such hub in the scope.
    NotFound,
    /// The desired revision is no longer the expected one.
    Conflict {
        /// The revision it is now.
        current: i64,
    },
}

/// How a hub answered a pushed revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubAnswer<'a> {
    /// Applied.
    Applied,
    /// Refused, with the reason.
    Rejected(&'a str),
}

fn db_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn slot_from_row<R>(row: &R) -> Result<ConfigSlot, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let driver: String = row.try_get(6)?;
    Ok(ConfigSlot {
        hub_slot_id: row.try_get(0)?,
        kind: row.try_get(1)?,
        name: row.try_get(2)?,
        enabled: row.try_get(3)?,
        sip_number: row.try_get(4)?,
        sip_password: row.try_get(5)?,
        // Written by this module from a `serde_json::Value`.
        driver: serde_json::from_str(&driver).unwrap_or(serde_json::Value::Null),
    })
}

const SELECT_SLOTS: &str =
    "SELECT hub_slot_id, kind, name, enabled, sip_number, sip_password, driver
     FROM hub_config_slots WHERE hub_id = $1 ORDER BY hub_slot_id";

const SELECT_CONFIG: &str =
    "SELECT revision, updated_by, updated_at_ms, applied_revision, applied_at_ms,
            rejected_revision, rejected_reason, rejected_at_ms
     FROM hub_config WHERE hub_id = $1";

fn config_from_row<R>(hub_id: &str, row: Option<&R>) -> Result<HubConfig, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let Some(row) = row else {
        return Ok(HubConfig {
            hub_id: hub_id.to_owned(),
            revision: 0,
            updated_by: None,
            updated_at_ms: None,
            applied: AppliedState::default(),
            slots: Vec::new(),
        });
    };
    Ok(HubConfig {
        hub_id: hub_id.to_owned(),
        revision: row.try_get(0)?,
        updated_by: row.try_get(1)?,
        updated_at_ms: Some(row.try_get(2)?),
        applied: AppliedState {
            applied_revision: row.try_get(3)?,
            applied_at_ms: row.try_get(4)?,
            rejected_revision: row.try_get(5)?,
            rejected_reason: row.try_get(6)?,
            rejected_at_ms: row.try_get(7)?,
        },
        slots: Vec::new(),
    })
}

impl Store {
    /// The hub's desired configuration within `scope`; `None` when the hub
    /// does not exist there. A hub never configured has revision 0.
    pub async fn hub_config(
        &self,
        scope: &Scope,
        hub_id: &str,
    ) -> Result<Option<HubConfig>, StoreError> {
        if self.hub(scope, hub_id).await?.is_none() {
            return Ok(None);
        }
        on_pool!(self.pool(), |p| {
            let row = sqlx::query(SELECT_CONFIG)
                .bind(hub_id)
                .fetch_optional(p)
                .await?;
            let mut config = config_from_row(hub_id, row.as_ref())?;
            let rows = sqlx::query(SELECT_SLOTS).bind(hub_id).fetch_all(p).await?;
            config.slots = rows
                .iter()
                .map(slot_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(config))
        })
    }

    /// Replaces the hub's slot list as a new revision (current + 1), if the
    /// hub is in `scope` and, when `expected` is given, the desired revision
    /// still is `expected`. A slot whose `sip_password` is `None` keeps the
    /// one the slot of the same id had. One transaction.
    pub async fn replace_hub_config(
        &self,
        scope: &Scope,
        hub_id: &str,
        expected: Option<i64>,
        slots: Vec<ConfigSlot>,
        updated_by: Option<&str>,
    ) -> Result<Replaced, StoreError> {
        if self.hub(scope, hub_id).await?.is_none() {
            return Ok(Replaced::NotFound);
        }
        let now = now_ms();
        on_pool!(self.pool(), |p| {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO hub_config (hub_id, revision, updated_at_ms) VALUES ($1, 0, $2)
                 ON CONFLICT (hub_id) DO NOTHING",
            )
            .bind(hub_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // The row lock (Postgres) / write lock (SQLite) taken here
            // serialises concurrent replacements of the same hub.
            let revision: Option<i64> = sqlx::query_scalar(
                "UPDATE hub_config SET revision = revision + 1, updated_by = $2, updated_at_ms = $3
                 WHERE hub_id = $1 AND ($4 IS NULL OR revision = $4)
                 RETURNING revision",
            )
            .bind(hub_id)
            .bind(updated_by)
            .bind(now)
            .bind(expected)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(_revision) = revision else {
                let current: i64 =
                    sqlx::query_scalar("SELECT revision FROM hub_config WHERE hub_id = $1")
                        .bind(hub_id)
                        .fetch_one(&mut *tx)
                        .await?;
                tx.rollback().await?;
                return Ok(Replaced::Conflict { current });
            };
            let previous: Vec<(i64, Option<String>)> = sqlx::query_as(
                "SELECT hub_slot_id, sip_password FROM hub_config_slots WHERE hub_id = $1",
            )
            .bind(hub_id)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM hub_config_slots WHERE hub_id = $1")
                .bind(hub_id)
                .execute(&mut *tx)
                .await?;
            for slot in &slots {
                let password = slot.sip_password.clone().or_else(|| {
                    previous
                        .iter()
                        .find(|(id, _)| *id == slot.hub_slot_id)
                        .and_then(|(_, password)| password.clone())
                });
                sqlx::query(
                    "INSERT INTO hub_config_slots (hub_id, hub_slot_id, kind, name, enabled, sip_number, sip_password, driver)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(hub_id)
                .bind(slot.hub_slot_id)
                .bind(&slot.kind)
                .bind(&slot.name)
                .bind(slot.enabled)
                .bind(&slot.sip_number)
                .bind(password)
                .bind(slot.driver.to_string())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        match self.hub_config(&Scope::All, hub_id).await? {
            Some(config) => Ok(Replaced::Stored(config)),
            None => Ok(Replaced::NotFound),
        }
    }

    /// The hub's desired revision and slots (with passwords) for delivery;
    /// `None` when it never had one.
    pub async fn desired_config(
        &self,
        hub_id: &str,
    ) -> Result<Option<(u64, Vec<ConfigSlot>)>, StoreError> {
        let config = on_pool!(self.pool(), |p| {
            let row = sqlx::query(SELECT_CONFIG)
                .bind(hub_id)
                .fetch_optional(p)
                .await?;
            let mut config = config_from_row(hub_id, row.as_ref())?;
            if config.revision > 0 {
                let rows = sqlx::query(SELECT_SLOTS).bind(hub_id).fetch_all(p).await?;
                config.slots = rows
                    .iter()
                    .map(slot_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
            }
            config
        });
        Ok((config.revision > 0)
            .then(|| (u64::try_from(config.revision).unwrap_or(0), config.slots)))
    }

    /// Hubs whose desired revision is newer than the one they applied.
    pub async fn hubs_config_pending(
        &self,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        on_pool!(self.pool(), |p| {
            let hubs: Vec<String> = sqlx::query_scalar(
                "SELECT hub_id FROM hub_config
                 WHERE revision > 0 AND (applied_revision IS NULL OR applied_revision < revision)",
            )
            .fetch_all(p)
            .await?;
            Ok(hubs.into_iter().collect())
        })
    }

    /// Records the hub's answer to `revision`. Stale answers change nothing:
    /// a revision above the desired one, or not above the applied one.
    /// Returns whether it was recorded.
    pub async fn hub_config_answer(
        &self,
        hub_id: &str,
        revision: u64,
        answer: HubAnswer<'_>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let revision = db_i64(revision);
        on_pool!(self.pool(), |p| {
            let mut tx = p.begin_write().await?;
            let recorded = match answer {
                HubAnswer::Applied => {
                    let n = sqlx::query(
                        "UPDATE hub_config SET applied_revision = $2, applied_at_ms = $3,
                           rejected_revision = CASE WHEN rejected_revision <= $2 THEN NULL ELSE rejected_revision END,
                           rejected_reason = CASE WHEN rejected_revision <= $2 THEN NULL ELSE rejected_reason END,
                           rejected_at_ms = CASE WHEN rejected_revision <= $2 THEN NULL ELSE rejected_at_ms END
                         WHERE hub_id = $1 AND $2 <= revision
                           AND (applied_revision IS NULL OR applied_revision < $2)",
                    )
                    .bind(hub_id)
                    .bind(revision)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n == 1 {
                        sqlx::query("UPDATE hub_sync SET applied_revision = $2 WHERE hub_id = $1")
                            .bind(hub_id)
                            .bind(revision)
                            .execute(&mut *tx)
                            .await?;
                    }
                    n == 1
                }
                HubAnswer::Rejected(reason) => {
                    sqlx::query(
                        "UPDATE hub_config SET rejected_revision = $2, rejected_reason = $3, rejected_at_ms = $4
                         WHERE hub_id = $1 AND $2 <= revision
                           AND (applied_revision IS NULL OR applied_revision < $2)",
                    )
                    .bind(hub_id)
                    .bind(revision)
                    .bind(reason)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1
                }
            };
            tx.commit().await?;
            Ok(recorded)
        })
    }
}

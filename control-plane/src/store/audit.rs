//! The security audit log (`security_audit_log`): append-only. The store
//! offers insert and read, nothing else.

use serde::Serialize;
use sqlx::Row;

use super::page::{Page, PageRequest};
use super::{Scope, Store, StoreError, now_ms};
use crate::on_pool;

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused: not authenticated, not permitted, locked out.
    Denied,
    /// Attempted and failed (bad input, conflict, server error).
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// One audit record to append.
#[derive(Debug, Clone, Default)]
pub struct NewAudit {
    /// The centre the action concerns, if any.
    pub centre_id: Option<String>,
    /// Who acted (user id), if known.
    pub actor_id: Option<String>,
    /// Who acted (email), if known: a failed login records the email tried.
    pub actor_email: Option<String>,
    /// What, e.g. `auth.login`, `POST /api/users`.
    pub action: String,
    /// On what, e.g. a user id or `slot 12`.
    pub target: Option<String>,
    /// The client's address.
    pub source_addr: Option<String>,
    /// How it ended (`ok`, `denied`, `failed`).
    pub outcome: Option<Outcome>,
    /// Anything else worth keeping (a reason, a status code).
    pub detail: Option<String>,
}

/// One audit record as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Increasing id.
    pub id: i64,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Centre concerned.
    pub centre_id: Option<String>,
    /// Actor's user id.
    pub actor_id: Option<String>,
    /// Actor's email.
    pub actor_email: Option<String>,
    /// Action.
    pub action: String,
    /// Target.
    pub target: Option<String>,
    /// Client address.
    pub source_addr: Option<String>,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    /// Details.
    pub detail: Option<String>,
}

/// Filters for reading the log; every field optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact action, e.g. `auth.login`.
    pub action: Option<String>,
    /// Actor's user id.
    pub actor_id: Option<String>,
    /// `ok`, `denied` or `failed`.
    pub outcome: Option<String>,
    /// At or after, ms.
    pub since_ms: Option<i64>,
    /// Before, ms.
    pub until_ms: Option<i64>,
}

impl Store {
    /// Appends one record.
    pub async fn audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        let outcome = entry.outcome.unwrap_or(Outcome::Ok).as_str();
        on_pool!(self.pool(), |p| {
            sqlx::query(
                "INSERT INTO security_audit_log
                   (at_ms, centre_id, actor_id, actor_email, action, target, source_addr, outcome, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(now_ms())
            .bind(&entry.centre_id)
            .bind(&entry.actor_id)
            .bind(&entry.actor_email)
            .bind(&entry.action)
            .bind(&entry.target)
            .bind(&entry.source_addr)
            .bind(outcome)
            .bind(&entry.detail)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// A page of records within `scope`, newest first.
    pub async fn audit_entries(
        &self,
        scope: &Scope,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        let before = match page.after_i64()? {
            0 => i64::MAX,
            id => id,
        };
        let rows = on_pool!(self.pool(), |p| {
            let rows = sqlx::query(
                "SELECT id, at_ms, centre_id, actor_id, actor_email, action, target, source_addr, outcome, detail
                 FROM security_audit_log
                 WHERE ($1 IS NULL OR centre_id = $1)
                   AND ($2 IS NULL OR action = $2)
                   AND ($3 IS NULL OR actor_id = $3)
                   AND ($4 IS NULL OR outcome = $4)
                   AND at_ms >= $5 AND at_ms < $6
                   AND id < $7
                 ORDER BY id DESC LIMIT $8",
            )
            .bind(scope.centre())
            .bind(&filter.action)
            .bind(&filter.actor_id)
            .bind(&filter.outcome)
            .bind(filter.since_ms.unwrap_or(0))
            .bind(filter.until_ms.unwrap_or(i64::MAX))
            .bind(before)
            .bind(page.limit + 1)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok::<_, sqlx::Error>(AuditEntry {
                        id: row.try_get("id")?,
                        at_ms: row.try_get("at_ms")?,
                        centre_id: row.try_get("centre_id")?,
                        actor_id: row.try_get("actor_id")?,
                        actor_email: row.try_get("actor_email")?,
                        action: row.try_get("action")?,
                        target: row.try_get("target")?,
                        source_addr: row.try_get("source_addr")?,
                        outcome: row.try_get("outcome")?,
                        detail: row.try_get("detail")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(page.page(rows, |e| e.id.to_string()))
    }
}

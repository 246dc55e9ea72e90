//! `GET /api/audit`: the security audit log, for administrators.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{Actor, ApiError, ApiQuery, AppState};
use crate::rbac::Permission;
use crate::store::audit::{AuditEntry, AuditFilter};
use crate::store::page::PageRequest;

/// Filters and paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Exact action, e.g. `auth.login`.
    pub action: Option<String>,
    /// Actor's user id.
    pub actor_id: Option<String>,
    /// `ok`, `denied` or `failed`.
    pub outcome: Option<String>,
    /// At or after (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Before (ms since the Unix epoch).
    pub until_ms: Option<i64>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Rows per page, 1–500 (default 100).
    pub limit: Option<i64>,
}

/// A page of audit records, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Records.
    pub items: Vec<AuditEntry>,
    /// Next page's cursor.
    pub next_cursor: Option<String>,
}

/// Reads the audit log, newest first.
#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = AuditPage), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    actor
        .require(&state, Permission::AuditRead, "GET /api/audit")
        .await?;
    if q.outcome
        .as_deref()
        .is_some_and(|o| !matches!(o, "ok" | "denied" | "failed"))
    {
        return Err(ApiError::bad_request(
            "bad_query",
            "outcome must be ok, denied or failed",
        ));
    }
    let page = PageRequest::parse(q.cursor.as_deref(), q.limit)
        .map_err(|e| ApiError::bad_request("bad_page", e.to_string()))?;
    let filter = AuditFilter {
        action: q.action,
        actor_id: q.actor_id,
        outcome: q.outcome,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
    };
    let page = state
        .store
        .audit_entries(&actor.scope(), &filter, &page)
        .await?;
    Ok(Json(AuditPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

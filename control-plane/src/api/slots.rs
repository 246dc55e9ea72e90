//! Slots as hubs report them, and what users ask of them: restarts and calls
//! (queued as hub commands; the sync delivers them) and remote access.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::page_cache::PageKey;
use super::{Actor, ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::rbac::Permission;
use crate::store::page::{Page, PageRequest};
use crate::store::slots::{Command, CommandStatus, Slot};

/// How long a queued command waits for its hub before it expires.
const COMMAND_TTL_MS: i64 = 10 * 60 * 1000;

/// `?ttl_s=` of `POST /api/slots/{id}/restart`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RestartQuery {
    /// Seconds the command may wait for its hub before it expires, 1–86400
    /// (default 600).
    pub ttl_s: Option<i64>,
}

/// `?cursor=&limit=`
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Rows per page, 1–500 (default 100).
    pub limit: Option<i64>,
}

impl PageQuery {
    /// The decoded request.
    pub fn request(&self) -> Result<PageRequest, ApiError> {
        PageRequest::parse(self.cursor.as_deref(), self.limit)
            .map_err(|e| ApiError::bad_request("bad_page", e.to_string()))
    }
}

/// A page of slots.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlotPage {
    /// Slots.
    pub items: Vec<Slot>,
    /// Next page's cursor.
    pub next_cursor: Option<String>,
}

impl From<Page<Slot>> for SlotPage {
    fn from(p: Page<Slot>) -> SlotPage {
        SlotPage {
            items: p.items,
            next_cursor: p.next_cursor,
        }
    }
}

async fn find(
    state: &AppState,
    actor: &Actor,
    id: i64,
) -> Result<(Slot, Option<String>), ApiError> {
    state
        .store
        .slot(&actor.scope(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("slot"))
}

/// Lists the slots of the caller's centre (all centres for admins).
#[utoipa::path(get, path = "/api/slots", tag = "slots", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = SlotPage), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    actor
        .require(&state, Permission::SlotsRead, "GET /api/slots")
        .await?;
    let page = query.request()?;
    let scope = actor.scope();
    let key = PageKey {
        centre: scope.centre().map(str::to_owned),
        after: page.after.clone(),
        limit: page.limit,
    };
    // The generation is read before the rows: a write that races the read
    // outdates the page at once.
    let generation = state.store.slots_generation();
    let body = match state.slot_pages.get(&key, generation, Instant::now()) {
        Some(body) => body,
        None => {
            let fresh = SlotPage::from(state.store.slots(&scope, &page).await?);
            let body = Bytes::from(serde_json::to_vec(&fresh).map_err(|e| {
                ApiError::internal(&format_args!("slot page could not be serialised: {e}"))
            })?);
            state
                .slot_pages
                .put(key, generation, Instant::now(), body.clone());
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// One slot.
#[utoipa::path(get, path = "/api/slots/{id}", tag = "slots", params(("id" = i64, Path, description = "slot id")),
    security(("bearer" = [])),
    responses((status = 200, body = Slot), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Slot>, ApiError> {
    actor
        .require(&state, Permission::SlotsRead, "GET /api/slots/{id}")
        .await?;
    Ok(Json(find(&state, &actor, id).await?.0))
}

/// Queues a restart of the slot on its hub.
#[utoipa::path(post, path = "/api/slots/{id}/restart", tag = "slots", params(("id" = i64, Path, description = "slot id"), RestartQuery),
    security(("bearer" = [])),
    responses((status = 202, body = Command), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn restart(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<RestartQuery>,
) -> Result<(StatusCode, Json<Command>), ApiError> {
    actor
        .require(
            &state,
            Permission::SlotsRestart,
            "POST /api/slots/{id}/restart",
        )
        .await?;
    let ttl_ms = match query.ttl_s {
        None => COMMAND_TTL_MS,
        Some(s @ 1..=86_400) => s * 1000,
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_ttl",
                "ttl_s must be between 1 and 86400 seconds",
            ));
        }
    };
    let (slot, _) = find(&state, &actor, id).await?;
    let command = state
        .store
        .queue_command(
            &slot,
            "restart_slot",
            &serde_json::json!({ "hub_slot_id": slot.hub_slot_id }),
            ttl_ms,
            Some(&actor.id),
        )
        .await?;
    if let Some(fleet) = &state.fleet {
        fleet.commands_queued(&command.hub_id);
    }
    Ok((StatusCode::ACCEPTED, Json(command)))
}

/// A command queued for a hub, and what became of it.
#[utoipa::path(get, path = "/api/commands/{id}", tag = "slots", params(("id" = String, Path, description = "command id")),
    security(("bearer" = [])),
    responses((status = 200, body = CommandStatus), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn command(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CommandStatus>, ApiError> {
    actor
        .require(&state, Permission::SlotsRead, "GET /api/commands/{id}")
        .await?;
    let command = state.store.command(&actor.scope(), &id).await?;
    command
        .map(Json)
        .ok_or_else(|| ApiError::not_found("command"))
}

/// `POST /api/call/start` body (the seeds' shape).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartCall {
    /// The slot to call through.
    pub slot_id: i64,
    /// Number to dial: digits, optionally a leading `+`, 3–20 digits.
    pub phone_number: String,
}

fn valid_number(number: &str) -> bool {
    let digits = number.strip_prefix('+').unwrap_or(number);
    (3..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Queues a call through a slot.
#[utoipa::path(post, path = "/api/call/start", tag = "slots", request_body = StartCall, security(("bearer" = [])),
    responses((status = 202, body = Command), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn start_call(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<StartCall>,
) -> Result<(StatusCode, Json<Command>), ApiError> {
    actor
        .require(&state, Permission::CallsStart, "POST /api/call/start")
        .await?;
    if !valid_number(&body.phone_number) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_phone_number",
            "phone_number must be 3 to 20 digits, optionally after a leading +",
        ));
    }
    let (slot, _) = find(&state, &actor, body.slot_id).await?;
    if slot.status != "free" {
        return Err(ApiError::conflict(format!(
            "slot {} is {} ({}); it can place a call only when free",
            slot.id, slot.status, slot.fsm_state
        )));
    }
    let payload =
        serde_json::json!({ "hub_slot_id": slot.hub_slot_id, "phone_number": body.phone_number });
    let command = state
        .store
        .queue_command(
            &slot,
            "start_call",
            &payload,
            COMMAND_TTL_MS,
            Some(&actor.id),
        )
        .await?;
    if let Some(fleet) = &state.fleet {
        fleet.commands_queued(&command.hub_id);
    }
    Ok((StatusCode::ACCEPTED, Json(command)))
}

/// `POST /api/guacamole/connect` body (the seeds' shape).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuacamoleConnect {
    /// The slot to reach.
    pub slot_id: i64,
    /// Must be the caller's own id when given.
    pub user_id: Option<String>,
}

/// How to reach the slot's machine.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionParams {
    /// `rdp` (LS slots) or `vnc` (MF slots).
    pub protocol: &'static str,
    /// Host.
    pub hostname: String,
    /// Port.
    pub port: u16,
}

/// A remote-access connection descriptor (the seeds' shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GuacamoleConnection {
    /// Recorded session id.
    pub connection_id: String,
    /// Where the browser opens it.
    pub guacamole_url: String,
    /// Target.
    pub connection_params: ConnectionParams,
}

/// Validates and records a remote-access request for a slot.
#[utoipa::path(post, path = "/api/guacamole/connect", tag = "slots", request_body = GuacamoleConnect, security(("bearer" = [])),
    responses((status = 200, body = GuacamoleConnection), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn guacamole_connect(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<GuacamoleConnect>,
) -> Result<Json<GuacamoleConnection>, ApiError> {
    actor
        .require(
            &state,
            Permission::RemoteAccess,
            "POST /api/guacamole/connect",
        )
        .await?;
    if body.user_id.as_deref().is_some_and(|u| u != actor.id) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
            "user_id must be your own id (or left out)",
        ));
    }
    let (slot, host) = find(&state, &actor, body.slot_id).await?;
    let (protocol, port) = match slot.device_type.as_str() {
        "ls" => ("rdp", 3389),
        "mf" => ("vnc", 5900),
        _ => {
            return Err(ApiError::conflict(
                "AUTO slots (GSM modems) have no remote desktop",
            ));
        }
    };
    let Some(hostname) = host else {
        return Err(ApiError::conflict(format!(
            "slot {} has not reported a remote-access host yet",
            slot.id
        )));
    };
    let connection_id = state
        .store
        .record_remote_session(&slot, &actor.id, protocol)
        .await?;
    let base = state.config.server.guacamole_url.trim_end_matches('/');
    Ok(Json(GuacamoleConnection {
        guacamole_url: format!("{base}/#/client/{connection_id}"),
        connection_id,
        connection_params: ConnectionParams {
            protocol,
            hostname,
            port,
        },
    }))
}

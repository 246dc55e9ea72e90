//! Hubs of the fleet: list, register, issue one-time enrollment tokens, revoke.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use vss_shared::HubId;

use super::slots::PageQuery;
use super::{Actor, ApiError, ApiJson, ApiPath, ApiQuery, AppState, valid_name};
use crate::rbac::Permission;
use crate::store::hubs::{EnrollmentToken, Hub};

/// Enrollment tokens expire after this long.
const ENROLLMENT_TTL_MS: i64 = 24 * 3600 * 1000;

/// `POST /api/hubs` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHub {
    /// Hub id: a slug of lowercase letters, digits and `-`, unique in the fleet.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Centre; required for administrators, implied for everyone else.
    pub centre_id: Option<String>,
}

/// A page of hubs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HubPage {
    /// Hubs.
    pub items: Vec<Hub>,
    /// Next page's cursor.
    pub next_cursor: Option<String>,
}

/// Lists hubs.
#[utoipa::path(get, path = "/api/hubs", tag = "hubs", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = HubPage), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<HubPage>, ApiError> {
    actor
        .require(&state, Permission::HubsRead, "GET /api/hubs")
        .await?;
    let page = state.store.hubs(&actor.scope(), &query.request()?).await?;
    Ok(Json(HubPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// One hub.
#[utoipa::path(get, path = "/api/hubs/{id}", tag = "hubs", params(("id" = String, Path, description = "hub id")),
    security(("bearer" = [])),
    responses((status = 200, body = Hub), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Hub>, ApiError> {
    actor
        .require(&state, Permission::HubsRead, "GET /api/hubs/{id}")
        .await?;
    let hub = state.store.hub(&actor.scope(), &id).await?;
    hub.map(Json).ok_or_else(|| ApiError::not_found("hub"))
}

/// Registers a hub (then issue it an enrollment token).
#[utoipa::path(post, path = "/api/hubs", tag = "hubs", request_body = CreateHub, security(("bearer" = [])),
    responses((status = 201, body = Hub), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateHub>,
) -> Result<(StatusCode, Json<Hub>), ApiError> {
    actor
        .require(&state, Permission::HubsWrite, "POST /api/hubs")
        .await?;
    let invalid =
        |code, message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
    let id = HubId::new(body.id.clone()).map_err(|e| invalid("invalid_hub_id", e.to_string()))?;
    let name = valid_name(&body.name)?;
    let centre = actor.centre_for_new_row(&state, body.centre_id).await?;
    let hub = state.store.create_hub(&centre, id.as_str(), name).await?;
    Ok((StatusCode::CREATED, Json(hub)))
}

/// Issues a one-time enrollment token for the hub (shown once).
#[utoipa::path(post, path = "/api/hubs/{id}/enrollment-tokens", tag = "hubs", params(("id" = String, Path, description = "hub id")),
    security(("bearer" = [])),
    responses((status = 201, body = EnrollmentToken), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn enrollment_token(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<EnrollmentToken>), ApiError> {
    actor
        .require(
            &state,
            Permission::HubsWrite,
            "POST /api/hubs/{id}/enrollment-tokens",
        )
        .await?;
    let token = state
        .store
        .create_enrollment_token(&actor.scope(), &id, ENROLLMENT_TTL_MS, Some(&actor.id))
        .await?;
    let mut token = token.ok_or_else(|| ApiError::not_found("hub (or it is revoked)"))?;
    let Some(fleet) = &state.fleet else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sync_disabled",
            "hubs cannot enroll: this control plane runs with sync.enabled = false",
        ));
    };
    // The token carries the fleet CA's fingerprint: the hub trusts exactly this CA.
    token.token = vss_shared::enroll::EnrollmentToken {
        secret: token.token,
        ca_fingerprint: fleet.ca_fingerprint(),
    }
    .to_text();
    Ok((StatusCode::CREATED, Json(token)))
}

/// Revokes a hub: its tokens stop working and its next connection is refused.
#[utoipa::path(post, path = "/api/hubs/{id}/revoke", tag = "hubs", params(("id" = String, Path, description = "hub id")),
    security(("bearer" = [])),
    responses((status = 200, body = Hub), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Hub>, ApiError> {
    actor
        .require(&state, Permission::HubsWrite, "POST /api/hubs/{id}/revoke")
        .await?;
    let scope = actor.scope();
    if !state.store.revoke_hub(&scope, &id).await? {
        return Err(ApiError::not_found("hub"));
    }
    if let Some(fleet) = &state.fleet {
        fleet.disconnect(
            &id,
            vss_shared::sync::Close::new(vss_shared::sync::CloseCode::Unauthorized, "hub revoked"),
        );
    }
    let hub = state.store.hub(&scope, &id).await?;
    hub.map(Json).ok_or_else(|| ApiError::not_found("hub"))
}

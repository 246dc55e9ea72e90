//! Users and roles. Supervisors manage their own centre's users and may not
//! create administrators; administrators manage everyone.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::slots::PageQuery;
use super::{Actor, ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::auth::password::{check_strength, hash_password};
use crate::rbac::{Permission, Role, allows, may_assign};
use crate::store::users::{NewUser, User};

/// `POST /api/users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Login email.
    pub email: String,
    /// Initial password (at least 12 characters).
    pub password: String,
    /// Role.
    pub role: Role,
    /// Centre; admins must give it for a centre role, supervisors' users join their centre.
    pub centre_id: Option<String>,
}

/// A page of users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPage {
    /// Users.
    pub items: Vec<User>,
    /// Next page's cursor.
    pub next_cursor: Option<String>,
}

/// A role and what it may do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleInfo {
    /// Role.
    pub role: Role,
    /// Whether it spans every centre.
    pub platform: bool,
    /// Its permissions.
    pub permissions: Vec<Permission>,
}

fn valid_email(email: &str) -> bool {
    let email = email.trim();
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

/// Lists users.
#[utoipa::path(get, path = "/api/users", tag = "users", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = UserPage), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<UserPage>, ApiError> {
    actor
        .require(&state, Permission::UsersRead, "GET /api/users")
        .await?;
    let page = state.store.users(&actor.scope(), &query.request()?).await?;
    Ok(Json(UserPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// One user.
#[utoipa::path(get, path = "/api/users/{id}", tag = "users", params(("id" = String, Path, description = "user id")),
    security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<User>, ApiError> {
    actor
        .require(&state, Permission::UsersRead, "GET /api/users/{id}")
        .await?;
    let user = state.store.user(&actor.scope(), &id).await?;
    user.map(Json).ok_or_else(|| ApiError::not_found("user"))
}

/// Creates a user.
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUser, security(("bearer" = [])),
    responses((status = 201, body = User), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    actor
        .require(&state, Permission::UsersWrite, "POST /api/users")
        .await?;
    let invalid =
        |code, message: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
    if !may_assign(actor.role, body.role) {
        let detail = format!(
            "role {} may not create a {} account",
            actor.role.as_str(),
            body.role.as_str()
        );
        return Err(actor.deny(&state, "POST /api/users", &detail).await);
    }
    if !valid_email(&body.email) {
        return Err(invalid(
            "invalid_email",
            "email must look like name@example.com",
        ));
    }
    check_strength(&body.password).map_err(|why| invalid("weak_password", &why))?;
    let centre_id = match (body.role.is_platform(), body.centre_id) {
        (true, None) => None,
        (true, Some(_)) => {
            return Err(invalid(
                "invalid_centre",
                "administrators belong to no centre",
            ));
        }
        (false, given) => Some(actor.centre_for_new_row(&state, given).await?),
    };
    let password_hash = hash_password(&body.password).map_err(|e| ApiError::internal(&e))?;
    let user = state
        .store
        .create_user(NewUser {
            centre_id,
            email: body.email,
            role: body.role,
            password_hash,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn set_disabled(
    state: &AppState,
    actor: &Actor,
    id: &str,
    disabled: bool,
    action: &str,
) -> Result<Json<User>, ApiError> {
    actor.require(state, Permission::UsersWrite, action).await?;
    let scope = actor.scope();
    let Some(target) = state.store.user(&scope, id).await? else {
        return Err(ApiError::not_found("user"));
    };
    if !may_assign(actor.role, target.role) {
        let detail = format!(
            "role {} may not manage a {} account",
            actor.role.as_str(),
            target.role.as_str()
        );
        return Err(actor.deny(state, action, &detail).await);
    }
    if target.id == actor.id {
        return Err(ApiError::conflict(
            "you cannot disable or enable your own account",
        ));
    }
    state.store.set_user_disabled(&scope, id, disabled).await?;
    if disabled {
        state.store.revoke_user_refresh_tokens(id).await?;
    }
    let user = state.store.user(&scope, id).await?;
    user.map(Json).ok_or_else(|| ApiError::not_found("user"))
}

/// Disables a user and revokes their sessions.
#[utoipa::path(post, path = "/api/users/{id}/disable", tag = "users", params(("id" = String, Path, description = "user id")),
    security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
pub async fn disable(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<User>, ApiError> {
    set_disabled(&state, &actor, &id, true, "POST /api/users/{id}/disable").await
}

/// Enables a disabled user.
#[utoipa::path(post, path = "/api/users/{id}/enable", tag = "users", params(("id" = String, Path, description = "user id")),
    security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
pub async fn enable(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<User>, ApiError> {
    set_disabled(&state, &actor, &id, false, "POST /api/users/{id}/enable").await
}

/// The roles and their permissions.
#[utoipa::path(get, path = "/api/roles", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = [RoleInfo]), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody)))]
pub async fn roles(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<Json<Vec<RoleInfo>>, ApiError> {
    actor
        .require(&state, Permission::RolesRead, "GET /api/roles")
        .await?;
    Ok(Json(
        Role::ALL
            .into_iter()
            .map(|role| RoleInfo {
                role,
                platform: role.is_platform(),
                permissions: Permission::ALL
                    .into_iter()
                    .filter(|p| allows(role, *p))
                    .collect(),
            })
            .collect(),
    ))
}

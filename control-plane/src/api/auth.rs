//! Authentication (POINT): login, refresh-token rotation, logout, `me`.
//! Every outcome is audited; failed logins feed the lockouts (per account and
//! per source address); an unknown email costs the same time as a wrong
//! password, and both get the same answer.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Actor, ApiError, ApiJson, AppState, now_s};
use crate::auth::jwt::Claims;
use crate::auth::password::{dummy_verify, verify_password};
use crate::rbac::Role;
use crate::store::Scope;
use crate::store::audit::{NewAudit, Outcome};
use crate::store::tokens::Rotation;
use crate::store::users::User;

/// `POST /api/auth/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// `POST /api/auth/refresh` and `/logout` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

/// The user part of a session answer (the seeds' shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionUser {
    /// User id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Roles (one today).
    pub roles: Vec<Role>,
    /// The user's centre; absent for platform administrators.
    pub centre_id: Option<String>,
}

/// A session: the seeds' `{token, user}` plus a refresh token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Session {
    /// Access token (JWT, HS256); send as `Authorization: Bearer`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until `token` expires.
    pub expires_in: u64,
    /// Single-use refresh token; `POST /api/auth/refresh` trades it for a new session.
    pub refresh_token: String,
    /// Who is logged in.
    pub user: SessionUser,
}

fn session_user(user: &User) -> SessionUser {
    SessionUser {
        id: user.id.clone(),
        email: user.email.clone(),
        roles: vec![user.role],
        centre_id: user.centre_id.clone(),
    }
}

fn access_token(state: &AppState, user: &User) -> Result<String, ApiError> {
    let now = now_s();
    let ttl = i64::try_from(state.config.auth.access_ttl_s).unwrap_or(900);
    let claims = Claims {
        sub: user.id.clone(),
        centre: user.centre_id.clone(),
        role: user.role.as_str().to_owned(),
        iat: now,
        exp: now + ttl,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    Ok(state.keys.sign(&claims))
}

fn refresh_ttl_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.auth.refresh_ttl_s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

fn too_many(retry_after: std::time::Duration) -> ApiError {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    ApiError {
        retry_after: Some(seconds.max(1)),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked_out",
            format!("too many failed logins; try again in {} s", seconds.max(1)),
        )
    }
}

/// The lockout key of a client address: the address itself for IPv4, its /64
/// for IPv6 (one client commonly holds a whole /64).
fn network_of(addr: &str) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_default(),
        _ => addr.to_owned(),
    }
}

fn source_addr(parts_source: &str) -> Option<String> {
    Some(parts_source.to_owned())
}

/// Logs in with email and password.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = Session), (status = 401, body = super::error::ErrorBody),
              (status = 429, body = super::error::ErrorBody), (status = 400, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    source: Source,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<Session>, ApiError> {
    let email = body.email.trim().to_lowercase();
    if email.is_empty()
        || email.len() > 254
        || body.password.is_empty()
        || body.password.len() > 1024
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "email (at most 254 bytes) and password (1 to 1024 bytes) are required",
        ));
    }
    let keys = [
        format!("account:{email}"),
        format!("ip:{}", network_of(&source.0)),
    ];
    let audit = |outcome, detail: &str, actor_id: Option<String>| NewAudit {
        actor_id,
        actor_email: Some(email.clone()),
        action: "auth.login".into(),
        source_addr: source_addr(&source.0),
        outcome: Some(outcome),
        detail: Some(detail.to_owned()),
        ..NewAudit::default()
    };
    let now = Instant::now();
    let locked = {
        let lockouts = state.lockouts.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| lockouts.check(k, now).err())
            .max()
    };
    if let Some(wait) = locked {
        state
            .audit(audit(Outcome::Denied, "locked out", None))
            .await;
        return Err(too_many(wait));
    }
    let credentials = state.store.credentials_by_email(&email).await?;
    let verified = match &credentials {
        Some(c) => {
            verify_password(&body.password, &c.password_hash).unwrap_or(false) && !c.user.disabled
        }
        None => {
            dummy_verify(&body.password);
            false
        }
    };
    let Some(user) = credentials.filter(|_| verified).map(|c| c.user) else {
        let lockout = {
            let mut lockouts = state.lockouts.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter()
                .filter_map(|k| lockouts.record_failure(k, now))
                .max()
        };
        state
            .audit(audit(Outcome::Failed, "wrong email or password", None))
            .await;
        return Err(match lockout {
            Some(wait) => too_many(wait),
            None => ApiError::unauthorized("wrong email or password"),
        });
    };
    state
        .lockouts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record_success(&keys[0]);
    let token = access_token(&state, &user)?;
    let (refresh_token, _) = state
        .store
        .issue_refresh_token(&user.id, refresh_ttl_ms(&state))
        .await?;
    let mut entry = audit(Outcome::Ok, "logged in", Some(user.id.clone()));
    entry.centre_id = user.centre_id.clone();
    state.audit(entry).await;
    Ok(Json(Session {
        token,
        token_type: "Bearer",
        expires_in: state.config.auth.access_ttl_s,
        refresh_token,
        user: session_user(&user),
    }))
}

/// Trades a refresh token for a new session; a reused token revokes its whole family.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = Session), (status = 401, body = super::error::ErrorBody),
              (status = 400, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    source: Source,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<Session>, ApiError> {
    let audit = |action: &str, outcome, actor_id: Option<String>, detail: &str| NewAudit {
        actor_id,
        action: action.to_owned(),
        source_addr: source_addr(&source.0),
        outcome: Some(outcome),
        detail: Some(detail.to_owned()),
        ..NewAudit::default()
    };
    if body.refresh_token.len() > 512 {
        state
            .audit(audit(
                "auth.refresh",
                Outcome::Failed,
                None,
                "unknown token",
            ))
            .await;
        return Err(ApiError::unauthorized("refresh token refused"));
    }
    match state
        .store
        .rotate_refresh_token(&body.refresh_token, refresh_ttl_ms(&state))
        .await?
    {
        Rotation::Rotated {
            user_id,
            token,
            family_id,
        } => {
            let user = state.store.user(&Scope::All, &user_id).await?;
            let Some(user) = user.filter(|u| !u.disabled) else {
                state.store.revoke_user_refresh_tokens(&user_id).await?;
                state
                    .audit(audit(
                        "auth.refresh",
                        Outcome::Denied,
                        Some(user_id),
                        "account disabled",
                    ))
                    .await;
                return Err(ApiError::unauthorized("refresh token refused"));
            };
            let mut entry = audit(
                "auth.refresh",
                Outcome::Ok,
                Some(user.id.clone()),
                &format!("family {family_id}"),
            );
            entry.centre_id = user.centre_id.clone();
            state.audit(entry).await;
            Ok(Json(Session {
                token: access_token(&state, &user)?,
                token_type: "Bearer",
                expires_in: state.config.auth.access_ttl_s,
                refresh_token: token,
                user: session_user(&user),
            }))
        }
        Rotation::Reused { user_id, family_id } => {
            let detail =
                format!("a used refresh token was presented again; family {family_id} revoked");
            state
                .audit(audit(
                    "auth.refresh_reuse_detected",
                    Outcome::Denied,
                    Some(user_id),
                    &detail,
                ))
                .await;
            Err(ApiError::unauthorized("refresh token refused"))
        }
        Rotation::Revoked { user_id } => {
            state
                .audit(audit(
                    "auth.refresh",
                    Outcome::Denied,
                    Some(user_id),
                    "revoked token",
                ))
                .await;
            Err(ApiError::unauthorized(
                "refresh token revoked; log in again",
            ))
        }
        Rotation::Expired => {
            state
                .audit(audit(
                    "auth.refresh",
                    Outcome::Failed,
                    None,
                    "expired token",
                ))
                .await;
            Err(ApiError::unauthorized(
                "refresh token expired; log in again",
            ))
        }
        Rotation::Unknown => {
            state
                .audit(audit(
                    "auth.refresh",
                    Outcome::Failed,
                    None,
                    "unknown token",
                ))
                .await;
            Err(ApiError::unauthorized("refresh token refused"))
        }
    }
}

/// Ends a session: revokes the refresh token's family.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "logged out"), (status = 400, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    source: Source,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let revoked = body.refresh_token.len() <= 512
        && state
            .store
            .revoke_refresh_family(&body.refresh_token)
            .await?;
    state
        .audit(NewAudit {
            action: "auth.logout".into(),
            source_addr: source_addr(&source.0),
            outcome: Some(if revoked {
                Outcome::Ok
            } else {
                Outcome::Failed
            }),
            detail: Some(
                if revoked {
                    "session revoked"
                } else {
                    "unknown token"
                }
                .into(),
            ),
            ..NewAudit::default()
        })
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The logged-in user.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SessionUser), (status = 401, body = super::error::ErrorBody)))]
pub async fn me(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<Json<SessionUser>, ApiError> {
    match state.store.user(&Scope::All, &actor.id).await? {
        Some(user) if !user.disabled => Ok(Json(session_user(&user))),
        _ => Err(ApiError::unauthorized(
            "this account no longer exists or is disabled",
        )),
    }
}

/// The client's address (for lockouts and the audit log).
#[derive(Debug, Clone)]
pub struct Source(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Source, Self::Rejection> {
        Ok(Source(super::source_of(parts)))
    }
}

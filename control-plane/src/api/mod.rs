//! The REST API. Every handler follows the same steps: authenticate
//! ([`Actor`]), check the permission ([`Actor::require`], audited when
//! refused), scope every query to the actor's centre ([`Actor::scope`]), and
//! answer with JSON or an [`ApiError`].
//!
//! Invariants:
//! - A row of another centre answers 404, exactly like a row that does not
//!   exist; never 403 and never its content.
//! - Every mutating request is audited (by [`audit_mutations`]), and every
//!   auth event by the auth handlers and the [`Actor`] extractor.
//! - Client mistakes are 4xx with `{"error":{"code","message"}}`.

pub mod audit;
pub mod auth;
pub mod centres;
pub mod error;
pub mod health;
pub mod hub_config;
pub mod hubs;
pub mod openapi;
pub mod page_cache;
pub mod slots;
pub mod users;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

pub use error::{ApiError, ApiJson, ApiPath, ApiQuery};

use crate::auth::jwt::{Claims, JwtKeys};
use crate::auth::lockout::Lockouts;
use crate::config::Config;
use crate::metrics::ApiMetrics;
use crate::rbac::{Permission, Role, allows};
use crate::store::audit::{NewAudit, Outcome};
use crate::store::{Scope, Store};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The shared parts of [`AppState`].
pub struct Inner {
    /// The database.
    pub store: Store,
    /// Access-token keys.
    pub keys: JwtKeys,
    /// Login lockouts by account and by source address.
    pub lockouts: Mutex<Lockouts>,
    /// The configuration.
    pub config: Config,
    /// Request counters and latencies.
    pub metrics: ApiMetrics,
    /// When the process started.
    pub started: Instant,
    /// The fleet endpoint, when `sync.enabled`.
    pub fleet: Option<std::sync::Arc<crate::fleet::server::Fleet>>,
    /// Serialised `GET /api/slots` pages (`server.list_cache_ms`).
    pub slot_pages: page_cache::PageCache,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Wraps the shared parts.
    pub fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }

    /// Appends an audit record; a failure to write it is logged, never hidden.
    pub async fn audit(&self, entry: NewAudit) {
        if let Err(e) = self.store.audit(entry).await {
            tracing::error!(error = %e, "could not write the audit log");
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Actor {
    /// User id.
    pub id: String,
    /// Role.
    pub role: Role,
    /// Centre, or `None` for platform administrators.
    pub centre: Option<String>,
    /// Client address.
    pub source: String,
}

impl Actor {
    /// The rows this actor may see.
    pub fn scope(&self) -> Scope {
        match (&self.centre, self.role.is_platform()) {
            (_, true) => Scope::All,
            (Some(centre), false) => Scope::Centre(centre.clone()),
            // A centre role without a centre sees nothing: an empty centre id matches no row.
            (None, false) => Scope::Centre(String::new()),
        }
    }

    /// Ok when the role holds `permission`; otherwise 403, audited as `action`.
    pub async fn require(
        &self,
        state: &AppState,
        permission: Permission,
        action: &str,
    ) -> Result<(), ApiError> {
        if allows(self.role, permission) {
            return Ok(());
        }
        let detail = format!("role {} lacks {permission:?}", self.role.as_str());
        Err(self.deny(state, action, &detail).await)
    }

    /// A 403 for `action`, audited as `auth.permission_denied` with `detail`.
    pub async fn deny(&self, state: &AppState, action: &str, detail: &str) -> ApiError {
        state
            .audit(NewAudit {
                centre_id: self.centre.clone(),
                actor_id: Some(self.id.clone()),
                action: "auth.permission_denied".into(),
                target: Some(action.to_owned()),
                source_addr: Some(self.source.clone()),
                outcome: Some(Outcome::Denied),
                detail: Some(detail.to_owned()),
                ..NewAudit::default()
            })
            .await;
        ApiError::forbidden()
    }

    /// The centre a row this actor creates belongs to: their own (a `given`
    /// other centre reads as not found), or for administrators the `given`
    /// one, which must exist.
    pub async fn centre_for_new_row(
        &self,
        state: &AppState,
        given: Option<String>,
    ) -> Result<String, ApiError> {
        let centre = match (self.scope(), given) {
            (Scope::Centre(own), None) => return Ok(own),
            (Scope::Centre(own), Some(given)) if given == own => return Ok(own),
            (Scope::Centre(_), Some(_)) => return Err(ApiError::not_found("centre")),
            (Scope::All, Some(given)) => given,
            (Scope::All, None) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_centre",
                    "centre_id is required",
                ));
            }
        };
        match state.store.centre(&Scope::All, &centre).await? {
            Some(_) => Ok(centre),
            None => Err(ApiError::not_found("centre")),
        }
    }

    /// The audit record of an action by this actor.
    pub fn audit(&self, action: &str, target: Option<String>, outcome: Outcome) -> NewAudit {
        NewAudit {
            centre_id: self.centre.clone(),
            actor_id: Some(self.id.clone()),
            action: action.to_owned(),
            target,
            source_addr: Some(self.source.clone()),
            outcome: Some(outcome),
            ..NewAudit::default()
        }
    }
}

/// `name` trimmed, when it is 1–100 characters without control characters.
pub fn valid_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "name must be 1 to 100 characters, without control characters",
        ));
    }
    Ok(name)
}

/// The client's address as the socket saw it.
pub fn source_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Seconds since the Unix epoch.
pub fn now_s() -> i64 {
    crate::store::now_ms() / 1000
}

fn actor_of(claims: Claims, source: String) -> Option<Actor> {
    Some(Actor {
        role: Role::parse(&claims.role)?,
        id: claims.sub,
        centre: claims.centre,
        source,
    })
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Actor, ApiError> {
        let source = source_of(parts);
        let Some(token) = bearer(parts) else {
            return Err(ApiError::unauthorized(
                "send an access token: Authorization: Bearer <token> (POST /api/auth/login)",
            ));
        };
        let claims = state.keys.verify(token, now_s());
        match claims.map(|c| actor_of(c, source.clone())) {
            Ok(Some(actor)) => Ok(actor),
            Ok(None) => Err(ApiError::unauthorized("access token names an unknown role")),
            Err(e) => {
                state
                    .audit(NewAudit {
                        action: "auth.token_rejected".into(),
                        target: Some(format!("{} {}", parts.method, parts.uri.path())),
                        source_addr: Some(source),
                        outcome: Some(Outcome::Denied),
                        detail: Some(e.to_string()),
                        ..NewAudit::default()
                    })
                    .await;
                Err(ApiError::unauthorized(format!("access token refused: {e}")))
            }
        }
    }
}

/// Audits every mutating request outside `/api/auth/` (whose handlers audit
/// themselves) after it is answered: who, what, from where, and the status.
pub async fn audit_mutations(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let (parts, body) = request.into_parts();
    let source = source_of(&parts);
    let actor = bearer(&parts)
        .and_then(|t| state.keys.verify(t, now_s()).ok())
        .and_then(|c| actor_of(c, source.clone()));
    let started = Instant::now();
    let response = next.run(Request::from_parts(parts, body)).await;
    state
        .metrics
        .observe(response.status().as_u16(), started.elapsed());
    if mutating && path.starts_with("/api/") && !path.starts_with("/api/auth/") {
        let status = response.status();
        let outcome = if status.is_success() {
            Outcome::Ok
        } else if matches!(status.as_u16(), 401 | 403 | 404 | 429) {
            Outcome::Denied
        } else {
            Outcome::Failed
        };
        state
            .audit(NewAudit {
                centre_id: actor.as_ref().and_then(|a| a.centre.clone()),
                actor_id: actor.as_ref().map(|a| a.id.clone()),
                action: format!("{method} {path}"),
                target: Some(path),
                source_addr: Some(source),
                outcome: Some(outcome),
                detail: Some(format!("status {}", status.as_u16())),
                ..NewAudit::default()
            })
            .await;
    }
    response
}

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.server.body_limit_bytes;
    Router::new()
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/me", get(auth::me))
        .route("/api/slots", get(slots::list))
        .route("/api/slots/{id}", get(slots::get_one))
        .route("/api/slots/{id}/restart", post(slots::restart))
        .route("/api/commands/{id}", get(slots::command))
        .route("/api/call/start", post(slots::start_call))
        .route("/api/guacamole/connect", post(slots::guacamole_connect))
        .route(
            "/api/archonts/centers",
            get(centres::list).post(centres::create),
        )
        .route("/api/archonts/templates", get(centres::templates))
        .route("/api/users", get(users::list).post(users::create))
        .route("/api/users/{id}", get(users::get_one))
        .route("/api/users/{id}/disable", post(users::disable))
        .route("/api/users/{id}/enable", post(users::enable))
        .route("/api/roles", get(users::roles))
        .route("/api/hubs", get(hubs::list).post(hubs::create))
        .route("/api/hubs/{id}", get(hubs::get_one))
        .route(
            "/api/hubs/{id}/enrollment-tokens",
            post(hubs::enrollment_token),
        )
        .route("/api/hubs/{id}/revoke", post(hubs::revoke))
        .route(
            "/api/hubs/{id}/config",
            get(hub_config::get_config).put(hub_config::put_config),
        )
        .route("/api/audit", get(audit::list))
        .fallback(|| async { ApiError::not_found("endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not accept that method",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            audit_mutations,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

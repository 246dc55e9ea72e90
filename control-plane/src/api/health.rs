//! `/health`, `/health/live`, `/health/ready` (the database answers within
//! 1 s) and `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

const DB_TIMEOUT: Duration = Duration::from_secs(1);

/// Overall status.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "healthy"), (status = 503, description = "database unreachable")))]
pub async fn health(State(state): State<AppState>) -> Response {
    let db = state.store.ping(DB_TIMEOUT).await;
    let status = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if db { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "database": { "backend": format!("{:?}", state.store.backend()).to_lowercase(), "up": db },
        "uptime_s": state.started.elapsed().as_secs(),
    });
    (status, Json(body)).into_response()
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "alive")))]
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// Readiness: the database answers within 1 s.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses((status = 200, description = "ready"), (status = 503, description = "database unreachable")))]
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.store.ping(DB_TIMEOUT).await {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        let body = json!({ "status": "not_ready", "reason": "database did not answer within 1 s" });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::with_capacity(2048);
    let db = state.store.ping(DB_TIMEOUT).await;
    state.metrics.render(&mut out, db);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

//! The hub's local HTTP API: health, metrics and slots. It only reads slot
//! state and queues commands; it never drives a device or writes the store.
//! Bound to loopback unless configured otherwise.
//!
//! Invariant: bad input (unknown id, malformed id, unknown path) gets a 4xx
//! with the JSON error body `{"error":{"code","message"}}`; never a 500.

mod calls;
pub mod client;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use vss_shared::{HubId, SlotId};

use crate::health::Readiness;
use crate::metrics::{Metrics, gauge};
use crate::supervisor::{Registry, SlotCell};

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The hub's id.
    pub hub_id: HubId,
    /// The slots.
    pub registry: Arc<Registry>,
    /// Process-wide metrics.
    pub metrics: Arc<Metrics>,
    /// The readiness latch.
    pub readiness: Arc<Readiness>,
    /// The sync session's state, when the hub is enrolled.
    pub sync: Option<Arc<crate::sync::client::SyncStatus>>,
    /// The configuration revision the hub runs.
    pub config: Arc<crate::sync::config::ConfigStatus>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/config", get(config))
        .route("/api/slots", get(list_slots))
        .route("/api/slots/{id}", get(get_slot))
        .route("/api/slots/{id}/restart", post(restart_slot))
        .route("/api/slots/{id}/dial", post(calls::dial))
        .route("/api/slots/{id}/hangup", post(calls::hang_up))
        .route("/api/slots/{id}/answer", post(calls::answer))
        .route("/api/slots/{id}/dtmf", post(calls::dtmf))
        .route("/api/slots/{id}/sms", post(calls::send_sms))
        .route("/api/slots/{id}/ussd", post(calls::ussd))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state)
}

/// A 4xx answer with the JSON error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

async fn health(State(state): State<ApiState>) -> Response {
    let pending = state.readiness.pending();
    let slots: serde_json::Map<String, serde_json::Value> = state
        .registry
        .count_by_state()
        .iter()
        .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
        .collect();
    let status = if pending.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if pending.is_empty() { "ok" } else { "starting" },
        "hub_id": state.hub_id,
        "version": env!("CARGO_PKG_VERSION"),
        "pending": pending,
        "slots": slots,
        "outbox_depth": state.metrics.outbox_depth.load(std::sync::atomic::Ordering::Relaxed),
        "config": {
            "revision": state.config.revision(),
            "last_rejected": state.config.last_rejected().map(|(revision, reason)| json!({
                "revision": revision,
                "reason": reason,
            })),
        },
        "sync": state.sync.as_ref().map_or_else(
            || json!({ "enrolled": false }),
            |sync| json!({
                "enrolled": true,
                "connected": sync.connected.load(std::sync::atomic::Ordering::Relaxed),
                "acked_seq": sync.acked_seq.load(std::sync::atomic::Ordering::Relaxed),
                "connections": sync.connections.load(std::sync::atomic::Ordering::Relaxed),
                "last_error": sync.last_error(),
            }),
        ),
    });
    (status, Json(body)).into_response()
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

async fn ready(State(state): State<ApiState>) -> Response {
    let pending = state.readiness.pending();
    if pending.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        let body = json!({ "status": "starting", "pending": pending });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP hubd_slots Slots by state machine state.\n# TYPE hubd_slots gauge\n");
    for (s, n) in state.registry.count_by_state() {
        out.push_str(&format!("hubd_slots{{state=\"{}\"}} {n}\n", s.as_str()));
    }
    out.push_str(
        "# HELP hubd_slot_restarts_total Slot restarts, by slot and reason (fault or operator).\n# TYPE hubd_slot_restarts_total counter\n",
    );
    for cell in state.registry.iter() {
        let (fault, operator) = cell.restart_counts();
        let id = cell.id();
        out.push_str(&format!(
            "hubd_slot_restarts_total{{slot=\"{id}\",reason=\"fault\"}} {fault}\n"
        ));
        out.push_str(&format!(
            "hubd_slot_restarts_total{{slot=\"{id}\",reason=\"operator\"}} {operator}\n"
        ));
    }
    gauge(
        &mut out,
        "hubd_config_revision",
        "The configuration revision the control plane pushed that the hub runs; 0 while it runs its file's slots.",
        state.config.revision().unwrap_or(0),
    );
    let ready = u64::from(state.readiness.is_ready());
    gauge(
        &mut out,
        "hubd_ready",
        "1 once every component has started.",
        ready,
    );
    if let Some(sync) = &state.sync {
        use std::sync::atomic::Ordering::Relaxed;
        gauge(
            &mut out,
            "hubd_sync_connected",
            "1 while a session with the control plane is up.",
            u64::from(sync.connected.load(Relaxed)),
        );
        gauge(
            &mut out,
            "hubd_sync_acked_seq",
            "Highest outbox seq the control plane acknowledged.",
            sync.acked_seq.load(Relaxed),
        );
        out.push_str(&format!(
            "# HELP hubd_sync_connections_total Sessions established with the control plane.\n# TYPE hubd_sync_connections_total counter\nhubd_sync_connections_total {}\n",
            sync.connections.load(Relaxed)
        ));
    }
    state.metrics.render(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The configuration the hub runs: its revision (or the file's slots) and
/// its slots; SIP passwords are never shown, only whether one is set.
async fn config(State(state): State<ApiState>) -> Response {
    let slots: Vec<serde_json::Value> = state
        .registry
        .iter()
        .map(|cell| {
            let config = &cell.config;
            json!({
                "id": config.id,
                "name": config.display_name(),
                "kind": config.kind,
                "sip_number": cell.sip_number,
                "sip_password_set": state.registry.sip_password(config.id).is_some(),
                "enabled": config.enabled,
                "driver": config.driver,
            })
        })
        .collect();
    let revision = state.config.revision();
    Json(json!({
        "revision": revision,
        "source": if revision.is_some() { "control_plane" } else { "file" },
        "last_rejected": state.config.last_rejected().map(|(revision, reason)| json!({
            "revision": revision,
            "reason": reason,
        })),
        "slots": slots,
    }))
    .into_response()
}

async fn list_slots(State(state): State<ApiState>) -> Response {
    let slots: Vec<_> = state.registry.iter().map(|c| c.view()).collect();
    Json(slots).into_response()
}

fn find(state: &ApiState, raw: &str) -> Result<Arc<SlotCell>, ApiError> {
    let id: SlotId = raw.parse().map_err(|e: vss_shared::IdError| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_slot_id", e.to_string())
    })?;
    state.registry.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "slot_not_found",
            format!("no slot {id} on this hub"),
        )
    })
}

async fn get_slot(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match find(&state, &id) {
        Ok(cell) => Json(cell.view()).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn restart_slot(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let cell = match find(&state, &id) {
        Ok(cell) => cell,
        Err(e) => return e.into_response(),
    };
    if !cell.config.enabled {
        return ApiError::new(
            StatusCode::CONFLICT,
            "slot_disabled",
            format!(
                "slot {} is disabled in the config; enable it to run it",
                cell.id()
            ),
        )
        .into_response();
    }
    let queued = cell.request_restart();
    let body = json!({
        "slot_id": cell.id(),
        "restart": if queued { "queued" } else { "already_queued" },
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

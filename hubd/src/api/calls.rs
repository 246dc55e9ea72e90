//! The slot actions an operator (or a test) drives through the local API:
//! dial, hang up, send an SMS, run a USSD request. Each is queued to the
//! slot's session as a [`SlotCommand`] and answered once the device did it;
//! the handlers never touch a device themselves.
//!
//! Errors: 400 for a body that is not the expected JSON, 404 for an unknown
//! slot, 409 when the slot cannot do it now (not READY, no call, busy
//! queue), 422 for a request the device refused as invalid, 501 for a device
//! that does not do it (SMS on a simulated slot), 502 when the device
//! failed, 504 when the slot did not answer in time.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::oneshot;

use super::{ApiError, ApiState, find};
use crate::supervisor::{SlotCommand, SlotRefusal};

/// The longest a handler waits for the slot's answer (a USSD reply or a
/// long SMS can take tens of seconds on a real network).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DialBody {
    number: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsBody {
    to: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UssdBody {
    request: String,
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

/// Queues a command built around a reply channel and waits for the answer.
async fn ask<T>(
    state: &ApiState,
    id: &str,
    make: impl FnOnce(oneshot::Sender<Result<T, SlotRefusal>>) -> SlotCommand,
) -> Result<T, ApiError> {
    let cell = find(state, id)?;
    let (tx, rx) = oneshot::channel();
    if !cell.submit(make(tx)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "slot_busy",
            format!(
                "slot {} has too many queued commands or is not running",
                cell.id()
            ),
        ));
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(refusal))) => Err(refused(refusal)),
        // The session ended (restart, fault) before it got to the command.
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "slot_restarted",
            format!("slot {} restarted before it could answer", cell.id()),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "slot_timeout",
            format!(
                "slot {} did not answer within {} s",
                cell.id(),
                ANSWER_TIMEOUT.as_secs()
            ),
        )),
    }
}

fn refused(refusal: SlotRefusal) -> ApiError {
    let message = refusal.to_string();
    match refusal {
        SlotRefusal::NotNow(_) => ApiError::new(StatusCode::CONFLICT, "slot_not_ready", message),
        SlotRefusal::Invalid(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
        }
        SlotRefusal::Unsupported(_) => {
            ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_supported", message)
        }
        SlotRefusal::Device(_) => ApiError::new(StatusCode::BAD_GATEWAY, "device_error", message),
    }
}

/// `POST /api/slots/{id}/dial` `{"number": "+7…"}` → `{"call_id"}`.
pub async fn dial(State(state): State<ApiState>, Path(id): Path<String>, body: Bytes) -> Response {
    let result = async {
        let DialBody { number } = parse(&body)?;
        if number.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "number must not be empty",
            ));
        }
        ask(&state, &id, |reply| SlotCommand::Dial { number, reply }).await
    }
    .await;
    match result {
        Ok(call_id) => (StatusCode::OK, Json(json!({ "call_id": call_id }))).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DtmfBody {
    digits: String,
}

/// `POST /api/slots/{id}/answer` → 200 once the device answered the ringing call.
pub async fn answer(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match ask(&state, &id, |reply| SlotCommand::Answer { reply }).await {
        Ok(()) => (StatusCode::OK, Json(json!({ "answer": "done" }))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/slots/{id}/dtmf` `{"digits": "12#"}` → 200 once sent.
pub async fn dtmf(State(state): State<ApiState>, Path(id): Path<String>, body: Bytes) -> Response {
    let result = async {
        let DtmfBody { digits } = parse(&body)?;
        if digits.is_empty() || digits.len() > 64 {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "digits must be 1 to 64 of 0-9, *, #, A-D",
            ));
        }
        ask(&state, &id, |reply| SlotCommand::Dtmf { digits, reply }).await
    }
    .await;
    match result {
        Ok(()) => (StatusCode::OK, Json(json!({ "dtmf": "sent" }))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/slots/{id}/hangup` → 202 once the device hung up.
pub async fn hang_up(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match ask(&state, &id, |reply| SlotCommand::HangUp { reply }).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "hangup": "done" }))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/slots/{id}/sms` `{"to", "text"}` → `{"parts"}`.
pub async fn send_sms(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let result = async {
        let SmsBody { to, text } = parse(&body)?;
        if to.trim().is_empty() || text.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "to and text must not be empty",
            ));
        }
        ask(&state, &id, |reply| SlotCommand::SendSms {
            to,
            text,
            reply,
        })
        .await
    }
    .await;
    match result {
        Ok(parts) => (StatusCode::OK, Json(json!({ "parts": parts }))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/slots/{id}/ussd` `{"request": "*100#"}` → `{"reply"}`.
pub async fn ussd(State(state): State<ApiState>, Path(id): Path<String>, body: Bytes) -> Response {
    let result = async {
        let UssdBody { request } = parse(&body)?;
        if request.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "request must not be empty",
            ));
        }
        ask(&state, &id, |reply| SlotCommand::Ussd { request, reply }).await
    }
    .await;
    match result {
        Ok(reply) => (StatusCode::OK, Json(json!({ "reply": reply }))).into_response(),
        Err(e) => e.into_response(),
    }
}

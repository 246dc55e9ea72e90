//! A hub's desired slot configuration (F-14): read it with its applied state,
//! replace the slot list as a new revision. The sync session pushes each new
//! revision to the hub, which validates it again by its own rules, applies it
//! atomically and reports the outcome.
//!
//! Validation here is what the control plane can judge: slot ids, kinds,
//! names, the numbering plan (6xxx AUTO, 7xxx MF, 8xxx LS; missing numbers are
//! allocated here so the control plane knows them), the device binding's type
//! against the kind, IMEI uniqueness. The binding's other fields are hubd's
//! business: a hub that refuses them reports `rejected` with its reason. SIP
//! passwords are never returned, only whether one is set.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use vss_shared::{NumberClass, NumberingPlan, SipNumber, SlotId, SlotKind};

use super::{Actor, ApiError, ApiJson, ApiPath, AppState};
use crate::rbac::Permission;
use crate::store::hub_config::{AppliedState, ConfigSlot, HubConfig, Replaced};

/// Most slots one hub may be given.
pub const MAX_SLOTS: usize = 256;

/// One slot of a hub's desired configuration, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigSlotView {
    /// The slot's id on its hub (1–9999).
    pub id: i64,
    /// `auto`, `mf` or `ls`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Whether the hub runs it.
    pub enabled: bool,
    /// SIP extension.
    pub sip_number: String,
    /// Whether a SIP password is set (the password itself is never shown).
    pub sip_password_set: bool,
    /// The device binding, in hubd's `driver` shape (`{"type":"sim",…}`,
    /// `{"type":"at_modem","imei":"…",…}`).
    #[schema(value_type = Object)]
    pub driver: serde_json::Value,
}

/// A hub's desired configuration and what the hub reported about it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HubConfigView {
    /// The hub.
    pub hub_id: String,
    /// The desired revision (0: never set; the hub runs its own file's slots).
    pub revision: i64,
    /// Who set it (user id).
    pub updated_by: Option<String>,
    /// When it was set, ms.
    pub updated_at_ms: Option<i64>,
    /// Whether the hub reported the desired revision applied (true at revision 0).
    pub in_sync: bool,
    /// The hub's reports.
    pub applied: AppliedState,
    /// The slots, by id.
    pub slots: Vec<ConfigSlotView>,
}

impl From<HubConfig> for HubConfigView {
    fn from(config: HubConfig) -> HubConfigView {
        HubConfigView {
            in_sync: config.revision == 0
                || config.applied.applied_revision == Some(config.revision),
            hub_id: config.hub_id,
            revision: config.revision,
            updated_by: config.updated_by,
            updated_at_ms: config.updated_at_ms,
            applied: config.applied,
            slots: config
                .slots
                .into_iter()
                .map(|s| ConfigSlotView {
                    id: s.hub_slot_id,
                    kind: s.kind,
                    name: s.name,
                    enabled: s.enabled,
                    sip_number: s.sip_number,
                    sip_password_set: s.sip_password.is_some(),
                    driver: s.driver,
                })
                .collect(),
        }
    }
}

/// `PUT /api/hubs/{id}/config` body: the whole slot list.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutHubConfig {
    /// Replace only if the desired revision still is this one (like
    /// `If-Match: "N"`); 409 otherwise. Absent: replace whatever it is.
    pub expected_revision: Option<i64>,
    /// Every slot the hub should run; slots left out are removed from it.
    pub slots: Vec<PutSlot>,
}

/// One slot of a `PUT /api/hubs/{id}/config` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSlot {
    /// The slot's id on its hub, 1–9999, unique in the list.
    pub id: i64,
    /// `auto` (GSM modem, 6xxx), `mf` (Android phone, 7xxx) or `ls` (PC, 8xxx).
    pub kind: String,
    /// Display name, 1–100 characters; default `Slot NN`.
    pub name: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Four digits in the kind's range; the lowest free one when absent.
    pub sip_number: Option<String>,
    /// 1–128 printable characters; absent keeps the slot's current password.
    pub sip_password: Option<String>,
    /// The device binding: `{"type":"sim",…}` (any kind) or
    /// `{"type":"at_modem","imei":"<15 digits>",…}` (AUTO only).
    #[schema(value_type = Object)]
    pub driver: serde_json::Value,
}

fn invalid(field: String, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_config",
        format!("{field}: {why}"),
    )
}

/// Checks a slot list and fills in names and SIP numbers.
pub fn validate_slots(slots: Vec<PutSlot>) -> Result<Vec<ConfigSlot>, ApiError> {
    if slots.len() > MAX_SLOTS {
        return Err(invalid(
            "slots".into(),
            format!("{} slots; a hub takes at most {MAX_SLOTS}", slots.len()),
        ));
    }
    let mut ids: BTreeMap<i64, usize> = BTreeMap::new();
    let mut imeis: BTreeMap<String, usize> = BTreeMap::new();
    let mut kinds = Vec::with_capacity(slots.len());
    let mut plan = NumberingPlan::new();
    for (i, slot) in slots.iter().enumerate() {
        let id = u32::try_from(slot.id)
            .map_err(|_| invalid(format!("slots[{i}].id"), "must be between 1 and 9999"))
            .and_then(|n| SlotId::new(n).map_err(|e| invalid(format!("slots[{i}].id"), e)))?;
        if let Some(first) = ids.insert(slot.id, i) {
            return Err(invalid(
                format!("slots[{i}].id"),
                format!("duplicate slot id {id}, already used by slots[{first}]"),
            ));
        }
        let kind: SlotKind = slot
            .kind
            .parse()
            .map_err(|e| invalid(format!("slots[{i}].kind"), e))?;
        kinds.push(kind);
        if let Some(name) = &slot.name {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
                return Err(invalid(
                    format!("slots[{i}].name"),
                    "must be 1 to 100 characters, without control characters",
                ));
            }
        }
        if let Some(password) = &slot.sip_password
            && (password.is_empty()
                || password.chars().count() > 128
                || password.chars().any(char::is_control))
        {
            return Err(invalid(
                format!("slots[{i}].sip_password"),
                "must be 1 to 128 characters, without control characters",
            ));
        }
        let Some(driver) = slot.driver.as_object() else {
            return Err(invalid(
                format!("slots[{i}].driver"),
                "must be an object with a \"type\" (\"sim\" or \"at_modem\")",
            ));
        };
        match driver.get("type").and_then(|t| t.as_str()) {
            Some("sim") => {}
            Some("at_modem") => {
                if kind != SlotKind::Auto {
                    return Err(invalid(
                        format!("slots[{i}].driver.type"),
                        format!(
                            "an at_modem binding needs kind \"auto\", not \"{}\"",
                            kind.as_str()
                        ),
                    ));
                }
                let imei = driver.get("imei").and_then(|v| v.as_str()).unwrap_or("");
                if imei.len() != 15 || !imei.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(
                        format!("slots[{i}].driver.imei"),
                        "an IMEI is 15 digits, as a string",
                    ));
                }
                if let Some(first) = imeis.insert(imei.to_owned(), i) {
                    return Err(invalid(
                        format!("slots[{i}].driver.imei"),
                        format!("IMEI {imei} is already bound to slots[{first}]"),
                    ));
                }
            }
            Some(other) => {
                return Err(invalid(
                    format!("slots[{i}].driver.type"),
                    format!("unknown binding type {other:?}; expected \"sim\" or \"at_modem\""),
                ));
            }
            None => {
                return Err(invalid(
                    format!("slots[{i}].driver.type"),
                    "missing: \"sim\" or \"at_modem\"",
                ));
            }
        }
        if let Some(number) = &slot.sip_number {
            let number = SipNumber::parse(number)
                .map_err(|e| invalid(format!("slots[{i}].sip_number"), e))?;
            plan.assign(number, NumberClass::of(kind), format!("slots[{i}]"))
                .map_err(|e| invalid(format!("slots[{i}].sip_number"), e))?;
        }
    }
    slots
        .into_iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (slot, kind))| {
            let number = match &slot.sip_number {
                Some(number) => number.clone(),
                None => plan
                    .allocate(NumberClass::of(kind), format!("slots[{i}]"))
                    .map_err(|e| invalid(format!("slots[{i}].sip_number"), e))?
                    .to_string(),
            };
            Ok(ConfigSlot {
                hub_slot_id: slot.id,
                kind: kind.as_str().to_owned(),
                name: slot
                    .name
                    .as_deref()
                    .map(|n| n.trim().to_owned())
                    .unwrap_or_else(|| format!("Slot {:02}", slot.id)),
                enabled: slot.enabled.unwrap_or(true),
                sip_number: number,
                sip_password: slot.sip_password,
                driver: slot.driver,
            })
        })
        .collect()
}

/// The revision an `If-Match` header names: `"N"`, `W/"N"` or `N`; `*` and
/// no header name none.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "bad_if_match",
            "If-Match must name one revision, e.g. If-Match: \"3\"",
        )
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(bad)
}

fn with_etag(view: HubConfigView) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", view.revision)).ok();
    let mut response = Json(view).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// A hub's desired slot configuration and its applied state (no SIP passwords).
#[utoipa::path(get, path = "/api/hubs/{id}/config", tag = "hubs", params(("id" = String, Path, description = "hub id")),
    security(("bearer" = [])),
    responses((status = 200, body = HubConfigView, description = "the configuration; `ETag` is the revision"),
              (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_config(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    actor
        .require(&state, Permission::HubsRead, "GET /api/hubs/{id}/config")
        .await?;
    let config = state.store.hub_config(&actor.scope(), &id).await?;
    let config = config.ok_or_else(|| ApiError::not_found("hub"))?;
    Ok(with_etag(config.into()))
}

/// Replaces a hub's slot list: a new revision, pushed to the hub.
///
/// Optimistic concurrency: send `If-Match: "N"` (or `expected_revision`)
/// with the revision you read; 409 when it changed since.
#[utoipa::path(put, path = "/api/hubs/{id}/config", tag = "hubs", params(("id" = String, Path, description = "hub id"),
        ("If-Match" = Option<String>, Header, description = "the revision read, e.g. \"3\"")),
    request_body = PutHubConfig, security(("bearer" = [])),
    responses((status = 200, body = HubConfigView, description = "stored as a new revision; `ETag` is the revision"),
              (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn put_config(
    State(state): State<AppState>,
    actor: Actor,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PutHubConfig>,
) -> Result<Response, ApiError> {
    actor
        .require(
            &state,
            Permission::HubsConfigure,
            "PUT /api/hubs/{id}/config",
        )
        .await?;
    let expected = match (if_match(&headers)?, body.expected_revision) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(
                "bad_if_match",
                format!("If-Match names revision {a} but expected_revision is {b}"),
            ));
        }
        (Some(n), _) | (None, Some(n)) => Some(n),
        (None, None) => None,
    };
    if expected.is_some_and(|n| n < 0) {
        return Err(invalid("expected_revision".into(), "must be 0 or more"));
    }
    let slots = validate_slots(body.slots)?;
    let replaced = state
        .store
        .replace_hub_config(&actor.scope(), &id, expected, slots, Some(&actor.id))
        .await?;
    match replaced {
        Replaced::Stored(config) => {
            tracing::info!(hub_id = %id, revision = config.revision, slots = config.slots.len(), "hub configuration replaced");
            if let Some(fleet) = &state.fleet {
                fleet.config_changed(&id);
            }
            Ok(with_etag(config.into()))
        }
        Replaced::NotFound => Err(ApiError::not_found("hub")),
        Replaced::Conflict { current } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "revision_conflict",
            format!(
                "the desired configuration is at revision {current}, not {}; read it again and retry",
                expected.unwrap_or_default()
            ),
        )),
    }
}

//! Call centres (the seeds' ARCHONTs): list, create from a template.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::slots::PageQuery;
use super::{Actor, ApiError, ApiJson, ApiQuery, AppState, valid_name};
use crate::rbac::Permission;
use crate::store::centres::{Centre, Template, templates as builtin_templates};

/// `POST /api/archonts/centers` body (the seeds' shape).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCentre {
    /// Unique name, 1–100 characters.
    pub name: String,
    /// Template (`GET /api/archonts/templates`).
    pub template_id: i64,
    /// Ignored if given: the creator is the caller.
    pub created_by: Option<String>,
}

/// A page of centres.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CentrePage {
    /// Centres.
    pub items: Vec<Centre>,
    /// Next page's cursor.
    pub next_cursor: Option<String>,
}

/// Lists call centres (a centre's users see only their own).
#[utoipa::path(get, path = "/api/archonts/centers", tag = "centres", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = CentrePage), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<CentrePage>, ApiError> {
    actor
        .require(&state, Permission::CentresRead, "GET /api/archonts/centers")
        .await?;
    let page = state
        .store
        .centres(&actor.scope(), &query.request()?)
        .await?;
    Ok(Json(CentrePage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Creates a call centre from a template.
#[utoipa::path(post, path = "/api/archonts/centers", tag = "centres", request_body = NewCentre, security(("bearer" = [])),
    responses((status = 201, body = Centre), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<NewCentre>,
) -> Result<(StatusCode, Json<Centre>), ApiError> {
    actor
        .require(
            &state,
            Permission::CentresCreate,
            "POST /api/archonts/centers",
        )
        .await?;
    let name = valid_name(&body.name)?;
    let Some(template) = builtin_templates()
        .into_iter()
        .find(|t| t.id == body.template_id)
    else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_template",
            format!(
                "no template {}; see GET /api/archonts/templates",
                body.template_id
            ),
        ));
    };
    let centre = state
        .store
        .create_centre(name, &template, Some(&actor.id))
        .await?;
    Ok((StatusCode::CREATED, Json(centre)))
}

/// The templates a centre can be created from.
#[utoipa::path(get, path = "/api/archonts/templates", tag = "centres", security(("bearer" = [])),
    responses((status = 200, body = [Template]), (status = 401, body = super::error::ErrorBody),
              (status = 403, body = super::error::ErrorBody)))]
pub async fn templates(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<Json<Vec<Template>>, ApiError> {
    actor
        .require(
            &state,
            Permission::CentresRead,
            "GET /api/archonts/templates",
        )
        .await?;
    Ok(Json(builtin_templates()))
}

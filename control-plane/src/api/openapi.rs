//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! served at `/api/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, auth, centres, error, health, hubs, slots, users};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "VSS Demiurge control plane", description = "Accounts and RBAC, call centres, hubs and slots, audit."),
    modifiers(&BearerAuth),
    paths(
        health::health, health::live, health::ready, health::metrics,
        auth::login, auth::refresh, auth::logout, auth::me,
        slots::list, slots::get_one, slots::restart, slots::start_call, slots::guacamole_connect,
        centres::list, centres::create, centres::templates,
        users::list, users::get_one, users::create, users::disable, users::enable, users::roles,
        hubs::list, hubs::get_one, hubs::create, hubs::enrollment_token, hubs::revoke,
        audit::list,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail))
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

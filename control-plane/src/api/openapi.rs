//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! served at `/api/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, auth, centres, error, health, hub_config, hubs, slots, users};

struct BearerAuth;

/// Documents the answers every operation can give whatever its handler says:
/// 401 on secured operations; 400, 413, 415 and 422 on those with a body;
/// 405 everywhere.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                let mut add = |code: &str, description: &str| {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error(description).into());
                };
                add("405", "method not allowed");
                if operation.security.is_some() {
                    add("401", "missing, expired or invalid access token");
                }
                if operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    add("400", "a path or query parameter is not valid");
                }
                if operation.request_body.is_some() {
                    add("400", "malformed JSON");
                    add("413", "body larger than server.body_limit_bytes");
                    add("415", "body not sent as application/json");
                    add("422", "JSON of the wrong shape or values");
                }
            }
        }
    }
}

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
    modifiers(&BearerAuth, &CommonErrors),
    paths(
        health::health, health::live, health::ready, health::metrics,
        auth::login, auth::refresh, auth::logout, auth::me,
        slots::list, slots::get_one, slots::restart, slots::command, slots::start_call, slots::guacamole_connect,
        centres::list, centres::create, centres::templates,
        users::list, users::get_one, users::create, users::disable, users::enable, users::roles,
        hubs::list, hubs::get_one, hubs::create, hubs::enrollment_token, hubs::revoke,
        hub_config::get_config, hub_config::put_config,
        audit::list,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail))
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

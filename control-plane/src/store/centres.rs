//! Call centres (the seeds' ARCHONTs) and the templates they are created from.

use serde::Serialize;
use sqlx::Row;

use super::page::{Page, PageRequest};
use super::{Scope, Store, StoreError, conflict, now_ms};
use crate::on_pool;
use crate::rbac::Role;

/// A template a centre is created from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Template {
    /// The seeds' `template_id`.
    pub id: i64,
    /// Name.
    pub name: &'static str,
    /// Roles a new centre's users are expected to hold.
    pub default_roles: Vec<Role>,
    /// First internal service number of the centre's block (1xxx).
    pub numbering_from: i64,
    /// Last internal service number of the centre's block.
    pub numbering_to: i64,
    /// Campaign defaults: attempts, retry delay, calling hours, recording.
    pub campaign_defaults: CampaignDefaults,
}

/// Defaults every new campaign of a centre starts with.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignDefaults {
    /// Most dial attempts per lead.
    pub max_attempts: u32,
    /// Minutes between attempts on one lead.
    pub retry_delay_min: u32,
    /// Local hour calling may start.
    pub calling_hours_from: u8,
    /// Local hour calling must stop.
    pub calling_hours_to: u8,
    /// `never`, `on_demand` or `all`.
    pub recording: &'static str,
}

/// The built-in templates.
pub fn templates() -> Vec<Template> {
    let staff = vec![
        Role::Supervisor,
        Role::Operator,
        Role::Technician,
        Role::Viewer,
    ];
    vec![
        Template {
            id: 1,
            name: "standard",
            default_roles: staff.clone(),
            numbering_from: 1001,
            numbering_to: 1099,
            campaign_defaults: CampaignDefaults {
                max_attempts: 3,
                retry_delay_min: 60,
                calling_hours_from: 9,
                calling_hours_to: 21,
                recording: "all",
            },
        },
        Template {
            id: 2,
            name: "outbound-sales",
            default_roles: staff.clone(),
            numbering_from: 1100,
            numbering_to: 1199,
            campaign_defaults: CampaignDefaults {
                max_attempts: 5,
                retry_delay_min: 30,
                calling_hours_from: 9,
                calling_hours_to: 21,
                recording: "all",
            },
        },
        Template {
            id: 3,
            name: "inbound-support",
            default_roles: staff,
            numbering_from: 1200,
            numbering_to: 1299,
            campaign_defaults: CampaignDefaults {
                max_attempts: 1,
                retry_delay_min: 0,
                calling_hours_from: 0,
                calling_hours_to: 24,
                recording: "on_demand",
            },
        },
    ]
}

/// A call centre.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Centre {
    /// Id (UUID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Template it was created from.
    pub template: String,
    /// First internal service number of its block.
    pub numbering_from: i64,
    /// Last internal service number of its block.
    pub numbering_to: i64,
    /// Settings taken from the template (JSON).
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// Who created it (user id).
    pub created_by: Option<String>,
    /// When, ms since the Unix epoch.
    pub created_at_ms: i64,
}

fn from_row<R>(row: &R) -> Result<Centre, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let settings: String = row.try_get("settings")?;
    Ok(Centre {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        template: row.try_get("template")?,
        numbering_from: row.try_get("numbering_from")?,
        numbering_to: row.try_get("numbering_to")?,
        settings: serde_json::from_str(&settings).unwrap_or(serde_json::Value::Null),
        created_by: row.try_get("created_by")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl Store {
    /// Creates a centre from `template`; a taken name is a conflict.
    pub async fn create_centre(
        &self,
        name: &str,
        template: &Template,
        created_by: Option<&str>,
    ) -> Result<Centre, StoreError> {
        let settings = serde_json::json!({
            "default_roles": template.default_roles,
            "campaign_defaults": template.campaign_defaults,
        });
        let centre = Centre {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.trim().to_owned(),
            template: template.name.to_owned(),
            numbering_from: template.numbering_from,
            numbering_to: template.numbering_to,
            settings,
            created_by: created_by.map(str::to_owned),
            created_at_ms: now_ms(),
        };
        let settings = centre.settings.to_string();
        on_pool!(self.pool(), |p| {
            sqlx::query(
                "INSERT INTO centres (id, name, template, numbering_from, numbering_to, settings, created_by, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&centre.id)
            .bind(&centre.name)
            .bind(&centre.template)
            .bind(centre.numbering_from)
            .bind(centre.numbering_to)
            .bind(&settings)
            .bind(&centre.created_by)
            .bind(centre.created_at_ms)
            .execute(p)
            .await
            .map_err(conflict("a centre with this name"))?;
        });
        Ok(centre)
    }

    /// The centre named `name` (names are unique), in any scope.
    pub async fn centre_by_name(&self, name: &str) -> Result<Option<Centre>, StoreError> {
        on_pool!(self.pool(), |p| {
            let row = sqlx::query("SELECT * FROM centres WHERE name = $1")
                .bind(name.trim())
                .fetch_optional(p)
                .await?;
            Ok(row.as_ref().map(from_row).transpose()?)
        })
    }

    /// A page of centres within `scope` (a centre user sees only their own).
    pub async fn centres(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<Centre>, StoreError> {
        let after = page.after.clone().unwrap_or_default();
        let rows = on_pool!(self.pool(), |p| {
            let rows = sqlx::query(
                "SELECT * FROM centres WHERE ($1 IS NULL OR id = $1) AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(scope.centre())
            .bind(&after)
            .bind(page.limit + 1)
            .fetch_all(p)
            .await?;
            rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?
        });
        Ok(page.page(rows, |c| c.id.clone()))
    }

    /// The centre with this id, within `scope`.
    pub async fn centre(&self, scope: &Scope, id: &str) -> Result<Option<Centre>, StoreError> {
        on_pool!(self.pool(), |p| {
            let row =
                sqlx::query("SELECT * FROM centres WHERE id = $1 AND ($2 IS NULL OR id = $2)")
                    .bind(id)
                    .bind(scope.centre())
                    .fetch_optional(p)
                    .await?;
            Ok(row.as_ref().map(from_row).transpose()?)
        })
    }
}

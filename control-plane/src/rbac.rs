//! Roles and permissions (POINT). One table, [`allows`], decides what each
//! role may do; tenancy (which centre's rows) is decided by [`crate::store::Scope`].
//!
//! The table is documented in `docs/permissions.md`; the permission-matrix
//! test checks the API against its own, independently written, expectations.

use serde::{Deserialize, Serialize};

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Platform administrator: every centre, every action.
    Admin,
    /// Runs one call centre: its users, slots, hubs and calls.
    Supervisor,
    /// Places calls through the centre's slots.
    Operator,
    /// Field engineer: hubs, slots, remote access.
    Technician,
    /// Reads the centre's slots and hubs.
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Supervisor,
        Role::Operator,
        Role::Technician,
        Role::Viewer,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Supervisor => "supervisor",
            Role::Operator => "operator",
            Role::Technician => "technician",
            Role::Viewer => "viewer",
        }
    }

    /// The role with this stored name.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether this role spans every centre.
    pub fn is_platform(self) -> bool {
        self == Role::Admin
    }
}

/// Something a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// List and read slots.
    SlotsRead,
    /// Queue a slot restart.
    SlotsRestart,
    /// Start a call through a slot.
    CallsStart,
    /// List and read call centres.
    CentresRead,
    /// Create call centres.
    CentresCreate,
    /// Open a remote-access (Guacamole) session to a slot.
    RemoteAccess,
    /// List and read users.
    UsersRead,
    /// Create, change and disable users.
    UsersWrite,
    /// Read the role and permission table.
    RolesRead,
    /// List and read hubs.
    HubsRead,
    /// Create hubs, issue enrollment tokens, revoke hubs.
    HubsWrite,
    /// Set a hub's desired slot configuration (including SIP credentials).
    HubsConfigure,
    /// Read the security audit log.
    AuditRead,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 13] = [
        Permission::SlotsRead,
        Permission::SlotsRestart,
        Permission::CallsStart,
        Permission::CentresRead,
        Permission::CentresCreate,
        Permission::RemoteAccess,
        Permission::UsersRead,
        Permission::UsersWrite,
        Permission::RolesRead,
        Permission::HubsRead,
        Permission::HubsWrite,
        Permission::HubsConfigure,
        Permission::AuditRead,
    ];
}

/// Whether `role` holds `permission`.
pub fn allows(role: Role, permission: Permission) -> bool {
    use Permission::*;
    match role {
        Role::Admin => true,
        Role::Supervisor => !matches!(permission, CentresCreate | AuditRead),
        Role::Operator => matches!(permission, SlotsRead | CallsStart | CentresRead | RolesRead),
        Role::Technician => matches!(
            permission,
            SlotsRead
                | SlotsRestart
                | CentresRead
                | RemoteAccess
                | RolesRead
                | HubsRead
                | HubsWrite
                | HubsConfigure
        ),
        Role::Viewer => matches!(permission, SlotsRead | CentresRead | RolesRead | HubsRead),
    }
}

/// Whether a user of role `actor` may give a user the role `target`:
/// admins any; supervisors any but admin; nobody else.
pub fn may_assign(actor: Role, target: Role) -> bool {
    match actor {
        Role::Admin => true,
        Role::Supervisor => target != Role::Admin,
        _ => false,
    }
}
